"""Check each downloaded output and describe it: checks, facts, preview and provenance. No Dagster here.

The description ("item") is a plain dict that goes into the asset's metadata, the validation report and the
`check` command's JSON report alike.
"""

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from comfy_pipeline.batch.runner import JobResult
from comfy_pipeline.media import (
    ImageThresholds, MediaError, VideoThresholds, check_image, check_video, image_preview_markdown, probe_image,
    probe_video, sha256_file, video_preview_markdown,
)
from comfy_pipeline.workflows.prompts import PromptSpec
from comfy_pipeline.workflows.workflow import Workflow


def inspect_image(path: Path, spec: PromptSpec, workflow: Workflow, thresholds: ImageThresholds) -> dict[str, Any]:
    started = time.monotonic()
    checks = check_image(path, width=spec.width, height=spec.height, thresholds=thresholds)
    facts: dict[str, Any] = {}
    with contextlib.suppress(MediaError):
        info = probe_image(path)
        facts = {"width": info.width, "height": info.height, "format": info.format}
    preview = _preview(image_preview_markdown, path)
    return {"checks": checks, "facts": facts, "preview": preview, "seconds": time.monotonic() - started}


def inspect_video(path: Path, spec: PromptSpec, workflow: Workflow, thresholds: VideoThresholds) -> dict[str, Any]:
    started = time.monotonic()
    size = workflow.defaults()  # the LTX-2 output size is the workflow's, not the image's
    # The checks, the probe and the contact sheet each wait on ffmpeg: run them side by side.
    with ThreadPoolExecutor(max_workers=3) as pool:
        checks = pool.submit(
            check_video, path, width=size.get("width"), height=size.get("height"), frames=spec.frames,
            fps=spec.fps, thresholds=thresholds,
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
        found = {"checks": checks.result(), "facts": facts, "preview": preview.result()}
    return {**found, "seconds": time.monotonic() - started}


def describe(spec: PromptSpec, image: Path | None, result: JobResult, workflow: Workflow, server: dict,
             found: dict) -> dict[str, Any]:
    """One output as the metadata and the reports record it."""
    path = result.files[0]
    timings = {**{k: round(v, 4) for k, v in result.timings.items()}, "validation": round(found["seconds"], 4)}
    item = {
        "job": result.job.key, "prompt": spec.text, "spec": {k: v for k, v in spec.to_dict().items() if k != "extra"},
        "seed": spec.seed, "requested_size": f"{spec.width}x{spec.height}", "workflow": workflow.name,
        "workflow_sha256": workflow.sha256, "prompt_id": result.prompt_id, "backend": server["backend"],
        "comfyui_url": result.server or server["url"],  # the server that made it
        "comfyui_version": server["comfyui_version"], "gpu": server["gpu"], "path": str(path),
        "size_bytes": path.stat().st_size, "sha256": sha256_file(path), "timings_s": timings,
        "cached_nodes": result.cached_nodes,
        "checks": [
            {"name": c.name, "passed": c.passed, "value": cell(c.value), "expected": cell(c.expected), "message": c.message}
            for c in found["checks"]
        ],
        "preview": found["preview"],
        **found["facts"],
    }
    if image is not None:
        item["input_image"] = str(image)
    return item


def cell(value: Any) -> Any:
    """A value a JSON/CSV cell can hold as it is."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def _preview(make, path: Path) -> str:
    try:
        return make(path)
    except MediaError as exc:
        return f"no preview ({exc})"
