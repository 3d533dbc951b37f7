"""Running a batch of prompts on ComfyUI and checking what comes back (no Dagster): the GPU step (step), the
batch runner, inspection, the records that cross layers (records), the report, the output folder."""
