"""Check each downloaded output and describe it: checks, facts, preview and provenance. No Dagster here.

The description is an OutputItem (batch.records): the asset's metadata, the validation report and the `check`
command's JSON report all read it.
"""

import contextlib
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfy_pipeline.batch.records import CheckResult, OutputItem, ServerInfo
from comfy_pipeline.batch.runner import JobResult
from comfy_pipeline.media import (
    ContentThresholds,
    ImageThresholds,
    MediaError,
    VideoThresholds,
    image_preview_markdown,
    probe_image,
    probe_video,
    sha256_file,
    validate_image,
    validate_video,
    video_preview_markdown,
)
from comfy_pipeline.workflows.prompts import PromptSpec
from comfy_pipeline.workflows.workflow import Workflow


@dataclass(frozen=True)
class Inspection:
    """What checking one output found."""

    checks: tuple[CheckResult, ...]
    facts: dict[str, Any] = field(default_factory=dict)
    preview: str = ""
    seconds: float = 0.0
    measures: dict[str, float | None] = field(default_factory=dict)  # the content measures (media.MEASURE_KEYS)


@dataclass(frozen=True)
class OutputShape:
    """What the workflow was asked to make: the values of its parameters of these names. None where it has no such
    parameter (an upscaler's output size follows its input): that is not checked."""

    width: int | None = None
    height: int | None = None
    frames: int | None = None
    fps: int | None = None

    @classmethod
    def of(cls, workflow: Workflow, values: dict[str, Any]) -> "OutputShape":
        given = {**workflow.defaults(), **values}

        def asked(name: str) -> int | None:
            value = given.get(name) if name in workflow.params else None
            # 0 is ComfyUI's "follow the other side" (ImageScale): not a size to check
            return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

        return cls(asked("width"), asked("height"), asked("frames"), asked("fps"))

    @property
    def size(self) -> str:
        """"1280x704", or "any" for a side the workflow does not set."""
        return f"{self.width or 'any'}x{self.height or 'any'}" if self.width or self.height else "any"


def content_limits(content: ContentThresholds, workflow: Workflow) -> ContentThresholds:
    """The content limits for `workflow`'s outputs: its own skip_checks are left out too."""
    return dataclasses.replace(content, skip=content.skip | workflow.skip_checks)


def inspect_image(path: Path, shape: OutputShape, workflow: Workflow, thresholds: ImageThresholds,
                  content: ContentThresholds = ContentThresholds(), start_image: Path | None = None) -> Inspection:
    """The file and content checks of an image (`start_image` is for the video's signature; images have none)."""
    started = time.monotonic()
    found = validate_image(path, width=shape.width, height=shape.height, thresholds=thresholds,
                           content=content_limits(content, workflow))
    facts: dict[str, Any] = {}
    with contextlib.suppress(MediaError):
        info = probe_image(path)
        facts = {"width": info.width, "height": info.height, "format": info.format}
    preview = _preview(image_preview_markdown, path)
    return Inspection(tuple(CheckResult.of(c) for c in found.checks), facts, preview, time.monotonic() - started,
                      dict(found.measures))


def inspect_video(path: Path, shape: OutputShape, workflow: Workflow, thresholds: VideoThresholds,
                  content: ContentThresholds = ContentThresholds(), start_image: Path | None = None) -> Inspection:
    """The file and content checks of a video: its first frame against `start_image` (the picture it was made
    from), its sound track when the workflow makes one or the file has one."""
    started = time.monotonic()
    # The checks, the probe and the contact sheet each wait on ffmpeg: run them side by side.
    with ThreadPoolExecutor(max_workers=3) as pool:
        checks = pool.submit(
            validate_video, path, width=shape.width, height=shape.height, frames=shape.frames,
            fps=shape.fps, thresholds=thresholds, content=content_limits(content, workflow), start_image=start_image,
            expect_audio=workflow.makes_audio,
        )
        probe = pool.submit(probe_video, path)
        preview = pool.submit(_preview, video_preview_markdown, path)
        facts: dict[str, Any] = {}
        with contextlib.suppress(MediaError):
            info = probe.result()
            facts = {
                "width": info.width, "height": info.height, "duration_s": round(info.duration, 3), "fps": info.fps,
                "frame_count": info.frame_count, "codec": info.codec, "container": info.container,
            }
        validation = checks.result()
        shown = preview.result()
    found = tuple(CheckResult.of(c) for c in validation.checks)
    return Inspection(found, facts, shown, time.monotonic() - started, dict(validation.measures))


def describe(spec: PromptSpec, image: str | Path | None, result: JobResult, workflow: Workflow, server: ServerInfo,
             found: Inspection, attempt: int = 1, stored_as: str | None = None) -> OutputItem:
    """One output as the metadata and the reports record it: `stored_as`, where it was published (a path or an
    s3:// URI), is its path; the local file it was checked in gives its size and hash."""
    shape = OutputShape.of(workflow, result.job.values)
    path = result.files[0]
    timings = {**{k: round(v, 4) for k, v in result.timings.items()}, "validation": round(found.seconds, 4)}
    return OutputItem(
        job=result.job.key, prompt=spec.text, spec=spec, path=stored_as or str(path), checks=found.checks,
        workflow=workflow.name, workflow_sha256=workflow.sha256, prompt_id=result.prompt_id, backend=server.backend,
        comfyui_url=result.server or server.url, comfyui_version=server.comfyui_version, gpu=server.gpu,
        size_bytes=path.stat().st_size, sha256=sha256_file(path), timings_s=timings,
        cached_nodes=tuple(result.cached_nodes), facts=found.facts, preview=found.preview,
        input_image=None if image is None else str(image), measures=found.measures, attempt=attempt,
        requested_size=shape.size,
    )


def _preview(make, path: Path) -> str:
    try:
        return make(path)
    except MediaError as exc:
        return f"no preview ({exc})"
