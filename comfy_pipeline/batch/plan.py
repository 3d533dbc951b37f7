"""The batch jobs of a run's GPU step, built the same way wherever they are queued from. No Dagster here.

The image and video assets build their jobs here, and so does `comfy-pipeline check` when it queues a test's
prompts ahead of the test's run (under prompt ids the run then adopts): the same run id and prompt give the
same graph, output prefix and file names either way.
"""

from pathlib import Path

from comfy_pipeline.batch import outputs
from comfy_pipeline.batch.runner import Job
from comfy_pipeline.workflows.prompts import PromptSpec, image_values, video_values
from comfy_pipeline.workflows.workflow import Workflow

LABELS = {"images": "prompt", "videos": "video"}  # "prompt 3" and "video 3" in logs: the same prompt's outputs


def gpu_job(kind: str, index: int, spec: PromptSpec, image: Path | None, workflow: Workflow, run_id: str,
            dest_dir: Path, prompt_id: str | None = None, attempt: int = 1) -> Job:
    """The job of prompt `index` of a run: an image from `spec` (kind "images"), or a video of `image` ("videos").
    Its server-side prefix carries the run id, so no run ever gets another's (or a cached) output; a later
    `attempt` (content_retries) carries its number too, and its file name its new seed."""
    text = spec.text if image is None else spec.motion_prompt or spec.text
    values = image_values(spec) if image is None else video_values(spec)
    return Job(
        key=f"{LABELS[kind]} {index}",
        workflow=workflow,
        # smoke workflows take no text
        values={name: value for name, value in values.items() if name in workflow.params},
        filename_prefix=f"comfy_pipeline/{run_id[:8]}/{kind[:-1]}_{index:02d}{f'_a{attempt}' if attempt > 1 else ''}",
        dest_dir=dest_dir,
        dest_stem=f"{index:02d}_{outputs.slugify(text)}_seed{spec.seed}",
        upload=image,
        prompt_id=prompt_id,
    )
