"""Running a batch of prompts on ComfyUI and checking what comes back (no Dagster): the GPU step the assets call
(step), the records that cross layers and their JSON (records), the batch runner, inspection, the circuit
breaker's rule (breaker), the report, the output folder, the prompt ledger and the inbox."""
