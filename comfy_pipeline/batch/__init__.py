"""Running a batch of prompts on ComfyUI and checking what comes back (no Dagster): runner, inspection, report, output folder."""
