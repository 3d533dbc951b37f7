"""The batch jobs of a run's GPU step, built the same way wherever they are queued from. No Dagster here.

The image and video assets build their jobs here, and so does `comfy-pipeline check` when it queues a test's
prompts ahead of the test's run (under prompt ids the run then adopts): the same run id and prompt give the
same graph, output prefix and file names either way.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from comfy_pipeline.batch import outputs
from comfy_pipeline.batch.runner import Job
from comfy_pipeline.workflows.prompts import PromptSpec, edit_values, image_values, video_values
from comfy_pipeline.workflows.workflow import Workflow

LABELS = {"images": "prompt", "videos": "video"}  # "prompt 3" and "video 3" in logs: the same prompt's outputs


def gpu_job(kind: str, index: int, spec: PromptSpec, image: Path | None, workflow: Workflow, run_id: str,
            dest_dir: Path, prompt_id: str | None = None, attempt: int = 1,
            fixed: Mapping[str, Any] | None = None) -> Job:
    """The job of prompt `index` of a run: an image from `spec` (kind "images"), or a video or an image made from
    `image`. Its server-side prefix carries the run id, so no run ever gets another's (or a cached) output; a
    later `attempt` (content_retries) carries its number too, and its file name its new seed. `fixed`: values the
    asset gives every prompt (a component's `params`), over the prompt's own."""
    text = spec.text if image is None or workflow.kind == "image-to-image" else spec.motion_prompt or spec.text
    return Job(
        key=f"{LABELS[kind]} {index}",
        workflow=workflow,
        values={**prompt_values(workflow, spec, image), **(fixed or {})},
        filename_prefix=f"comfy_pipeline/{run_id[:8]}/{kind[:-1]}_{index:02d}{f'_a{attempt}' if attempt > 1 else ''}",
        dest_dir=dest_dir,
        dest_stem=f"{index:02d}_{outputs.slugify(text)}_seed{spec.seed}",
        upload=image,
        prompt_id=prompt_id,
    )


def prompt_values(workflow: Workflow, spec: PromptSpec, image: Path | None) -> dict[str, Any]:
    """What one prompt gives the workflow, by its kind: only the parameters it has (smoke workflows take no text)."""
    if workflow.kind == "image-to-image":
        values = edit_values(spec)
    else:
        values = image_values(spec) if image is None else video_values(spec)
    return {name: value for name, value in values.items() if name in workflow.params}
