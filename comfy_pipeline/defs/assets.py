"""The four software-defined assets: prompt -> generated_image -> ltx2_video -> validation_report.

Images and videos are files in the output folder, not IO-manager pickles: each asset records their paths,
hashes, sizes and previews as metadata, and downstream assets find this run's files through the run's
materialization events (lineage stays in Dagster, bytes stay on disk).
"""

import importlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from comfy_pipeline.batch import outputs
from comfy_pipeline.comfyui.errors import ComfyUIError
from comfy_pipeline.defs.config import PromptConfig, VideoConfig
from comfy_pipeline.batch.runner import BatchInterrupted, Job, JobResult, run_batch
from comfy_pipeline.batch.inspection import describe, inspect_image, inspect_video
from comfy_pipeline.batch.interrupts import interrupt_flag
from comfy_pipeline.media import MediaError, probe_image
from comfy_pipeline.batch.progress import ProgressLogger
from comfy_pipeline.workflows.prompts import (
    IMAGE_WORKFLOW, VIDEO_WORKFLOW, PromptError, PromptSpec, check_specs, image_values, library_specs, video_values,
)
from comfy_pipeline.batch.report import write_report
from comfy_pipeline.defs.resources import ComfyUIResource, QualityThresholds
from comfy_pipeline.workflows.workflow import WorkflowError, load_workflow

GROUP = "comfy"
MAX_PREVIEWS = 6


@dg.asset(group_name=GROUP, kinds={"python"}, description="The prompt specs of this run (run config, else the prompt library).")
def prompt(context: dg.AssetExecutionContext, config: PromptConfig) -> dg.Output[list[dict]]:
    try:
        if config.prompts:
            specs = check_specs([p.to_spec() for p in config.prompts])
        else:
            library = library_specs()
            specs = library if config.use_library else library[:1]
    except PromptError as exc:
        raise dg.Failure(description=f"Bad prompt in run config: {exc}", allow_retries=False) from None
    except WorkflowError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    table = "\n".join(
        ["| # | prompt | motion | seed | size | frames @ fps |", "|---|---|---|---|---|---|"]
        + [
            f"| {i} | {_md(s.text)} | {_md(s.motion_prompt or s.text)} | {s.seed} | {s.width}x{s.height} | {s.frames} @ {s.fps} |"
            for i, s in enumerate(specs)
        ]
    )
    context.log.info(f"{len(specs)} prompt(s) in this run")
    return dg.Output(
        [s.to_dict() for s in specs],
        metadata={"count": len(specs), "prompts": dg.MetadataValue.md(table), "first_prompt": specs[0].text},
    )


@dg.asset(
    group_name=GROUP,
    kinds={"comfyui", "image"},
    description="One Z-Image-Turbo image per prompt, all queued on the ComfyUI server together.",
    check_specs=[
        dg.AssetCheckSpec(
            "image_quality", asset="generated_image", blocking=True,
            description="Every image: PNG or JPEG, size within limits, decodes, dimensions as requested. "
            "Blocking: a broken image never goes on to the video step.",
        )
    ],
)
def generated_image(
    context: dg.AssetExecutionContext, prompt: list[dict], comfy: ComfyUIResource, quality: QualityThresholds
) -> Iterator[dg.MaterializeResult]:
    sources = [(PromptSpec(**p), None) for p in prompt]
    yield from _generate(context, comfy, quality, IMAGES, sources)


@dg.asset(
    group_name=GROUP,
    kinds={"comfyui", "video"},
    deps=[generated_image],
    description="An LTX-2 video from each image: uploaded to ComfyUI, animated, downloaded as MP4.",
    check_specs=[
        dg.AssetCheckSpec(
            "video_quality", asset="ltx2_video",
            description="Every video: MP4 or WebM, size within limits, decodes, duration > 0, frame count, fps "
            "and dimensions as requested.",
        )
    ],
)
def ltx2_video(
    context: dg.AssetExecutionContext, config: VideoConfig, comfy: ComfyUIResource, quality: QualityThresholds
) -> Iterator[dg.MaterializeResult]:
    yield from _generate(context, comfy, quality, VIDEOS, _video_sources(context, config))


@dg.asset(
    group_name=GROUP,
    kinds={"pandas", "json", "csv"},
    deps=[generated_image, ltx2_video],
    description="Every check of every output of this run, one row each, written as JSON and CSV.",
    check_specs=[dg.AssetCheckSpec("all_outputs_valid", asset="validation_report", blocking=True)],
)
def validation_report(context: dg.AssetExecutionContext, comfy: ComfyUIResource) -> dg.MaterializeResult:
    produced = _this_run_items(context)
    if not produced:
        raise dg.Failure(description="Nothing to report: no image or video was produced in this run.")
    report = write_report(outputs.kind_dir(_run_folder(context, comfy), "reports"), context.run_id, produced)
    frame, failed = report.frame, report.failed
    context.log.info(f"validation report: {len(frame) - len(failed)} passed, {len(failed)} failed -> {report.json_path}")
    table = frame[["prompt", "asset", "check", "passed", "value", "expected"]]
    return dg.MaterializeResult(
        metadata={
            "backend": report.backend,
            "passed": len(frame) - len(failed),
            "failed": len(failed),
            "report_json": dg.MetadataValue.path(str(report.json_path)),
            "report_csv": dg.MetadataValue.path(str(report.csv_path)),
            "timings_s": dg.MetadataValue.json(report.timings),
            "report": dg.MetadataValue.md(_md_rows(list(table.columns), table.itertuples(index=False))),
            "dagster/row_count": len(frame),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="all_outputs_valid",
                passed=failed.empty,
                metadata={"failed_checks": dg.MetadataValue.json(failed[["asset", "check", "path", "message"]].to_dict("records"))},
                description=None if failed.empty else f"{len(failed)} check(s) failed; see {report.json_path}",
            )
        ],
    )


# --- helpers ---------------------------------------------------------------------------------------


def _load(name: str):
    try:
        return load_workflow(name)
    except WorkflowError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None


def _server_info(context: dg.AssetExecutionContext, comfy: ComfyUIResource) -> dict[str, Any]:
    try:
        info = comfy.server_info()
    except ComfyUIError as exc:
        raise dg.Failure(description=str(exc), metadata={"comfyui_url": comfy.display_url}) from None
    if info["backend"] == "simulator":
        context.log.warning(
            f"backend: simulator -- the ComfyUI at {info['url']} is the offline simulator: its pictures are "
            "placeholders, not model output. Set COMFYUI_URL to a real GPU server for real ones."
        )
    else:
        context.log.info(f"ComfyUI {info['comfyui_version']} at {info['url']} on {info['gpu']}")
    return info


def _run_folder(context: dg.AssetExecutionContext, comfy: ComfyUIResource) -> Path:
    record = context.instance.get_run_record_by_id(context.run_id)
    started = record.create_timestamp.timestamp() if record else time.time()
    return outputs.run_dir(comfy.output_path, context.run_id, started)


@dataclass(frozen=True)
class _Kind:
    """What differs between the image and the video asset; everything else is one code path."""

    workflow: str
    folder: str
    job: str  # "prompt 0", "video 0" in logs
    check: str
    inspect: Callable[[Path, PromptSpec, Any, QualityThresholds], dict[str, Any]]


IMAGES = _Kind(IMAGE_WORKFLOW, "images", "prompt", "image_quality",
               lambda path, spec, workflow, quality: inspect_image(path, spec, workflow, quality.image()))
VIDEOS = _Kind(VIDEO_WORKFLOW, "videos", "video", "video_quality",
               lambda path, spec, workflow, quality: inspect_video(path, spec, workflow, quality.video()))


def _generate(context, comfy: ComfyUIResource, quality: QualityThresholds, kind: _Kind,
              sources: list[tuple[PromptSpec, Path | None]]) -> Iterator[dg.MaterializeResult]:
    """Run every source through the kind's workflow, check each output, record them all in one materialization;
    then fail the step if a prompt produced nothing (its error is in the failure, the good outputs are kept)."""
    loading_started = time.monotonic()
    workflow = _load(kind.workflow)
    server = {**_server_info(context, comfy), "workflow_load_s": round(time.monotonic() - loading_started, 4)}
    folder = outputs.kind_dir(_run_folder(context, comfy), kind.folder)
    run_tag = context.run_id[:8]
    jobs = []
    for i, (spec, image) in enumerate(sources):
        text = spec.text if image is None else spec.motion_prompt or spec.text
        jobs.append(
            Job(
                key=f"{kind.job} {i}",
                workflow=workflow,
                values=image_values(spec) if image is None else video_values(spec),
                filename_prefix=f"comfy_pipeline/{run_tag}/{kind.folder[:-1]}_{i:02d}",
                dest_dir=folder,
                dest_stem=f"{i:02d}_{outputs.slugify(text)}_seed{spec.seed}",
                upload=image,
            )
        )
    results = _run(context, comfy, jobs)
    made = [(spec, image, r) for (spec, image), r in zip(sources, results) if r.ok]
    with ThreadPoolExecutor(max_workers=2) as pool:
        inspections = list(pool.map(lambda m: kind.inspect(m[2].files[0], m[0], workflow, quality), made))
    items = [describe(spec, image, result, workflow, server, found) for (spec, image, result), found in zip(made, inspections)]
    failed = [r for r in results if not r.ok]
    if items:
        yield _materialize(context, kind, items, server, failed)
    if failed:
        lines = [f"{r.job.key}: {r.error}" for r in failed]
        raise dg.Failure(
            description=f"{len(failed)} of {len(results)} prompt(s) failed:\n" + "\n".join(lines)
            + (f"\nThe other {len(items)} output(s) were checked and recorded." if items else ""),
            metadata=_failure_metadata(failed[0].error),
        )


def _run(context: dg.AssetExecutionContext, comfy: ComfyUIResource, jobs: list[Job]) -> list[JobResult]:
    _warm_up_report_imports()
    try:
        with interrupt_flag() as stop:
            results = run_batch(
                comfy.get_client(), jobs, max_in_flight=comfy.max_in_flight,
                prompt_timeout=comfy.prompt_timeout, on_progress=ProgressLogger(context.log), stop=stop,
                logger=context.log,
            )
    except BatchInterrupted:
        # The interrupt exception itself was lost (see comfy_pipeline.batch.interrupts); the prompts are cancelled.
        raise dg.DagsterExecutionInterruptedError() from None
    except (ComfyUIError, WorkflowError) as exc:
        raise dg.Failure(description=str(exc), metadata=_failure_metadata(exc), allow_retries=False) from None
    for result in results:
        if result.ok:
            context.log.info(f"{result.job.key}: {result.files[0]} (prompt {result.prompt_id})")
        else:
            context.log.error(f"{result.job.key}: {result.error}")
    return results


def _warm_up_report_imports() -> None:
    """Import pandas (for the report) in the background while the GPU works, instead of after it."""
    if "pandas" not in sys.modules:
        threading.Thread(target=importlib.import_module, args=("pandas",), daemon=True).start()


def _failure_metadata(error: BaseException | None) -> dict[str, Any]:
    node = getattr(error, "node_id", None)
    meta: dict[str, Any] = {"error_type": type(error).__name__}
    if node:
        meta["comfyui_node"] = f"{node} ({getattr(error, 'node_type', None) or '?'})"
    return meta


def _materialize(context, kind: _Kind, items: list[dict], server: dict, failed: list[JobResult]) -> dg.MaterializeResult:
    phases: dict[str, float] = {"connection": server["connection_s"], "workflow_load": server["workflow_load_s"]}
    for item in items:
        for phase, seconds in item["timings_s"].items():
            phases[phase] = round(phases.get(phase, 0.0) + seconds, 4)
    first = items[0]
    metadata: dict[str, Any] = {
        "backend": server["backend"],
        "comfyui_url": server["url"],
        "comfyui_version": server["comfyui_version"] or "?",
        "gpu": server["gpu"] or "?",
        "vram_total_gb": server["vram_total_gb"],
        "workflow": first["workflow"],
        "workflow_sha256": first["workflow_sha256"],
        "count": len(items),
        "prompt": first["prompt"],
        "seed": first["seed"],
        "prompt_id": first["prompt_id"],
        "path": dg.MetadataValue.path(first["path"]),
        "size_bytes": first["size_bytes"],
        "sha256": first["sha256"],
        "queue_wait_s": first["timings_s"].get("queue_wait", 0.0),
        "execution_s": first["timings_s"].get("execution", 0.0),
        "download_s": first["timings_s"].get("download", 0.0),
        "timings_s": dg.MetadataValue.json(phases),
        "items": dg.MetadataValue.json([{k: v for k, v in item.items() if k != "preview"} for item in items]),
        "preview": dg.MetadataValue.md(
            "\n\n".join(f"**{_md(item['prompt'])[:120]}**\n\n{item['preview']}" for item in items[:MAX_PREVIEWS])
        ),
    }
    for key in ("width", "height", "format", "duration_s", "fps", "frame_count", "codec", "container"):
        if key in first:
            metadata[key] = first[key]
    bad = [c["message"] for item in items for c in item["checks"] if not c["passed"]]  # messages name the file
    bad += [f"{r.job.key}: no output ({r.error})" for r in failed]
    for item in items:
        names = [c["name"] for c in item["checks"] if not c["passed"]]
        if names:
            context.log.error(f"{item['path']} failed check(s) {names}; the file is kept for inspection")
    table = _md_rows(
        ["output", *[c["name"] for c in first["checks"]]],
        [[Path(item["path"]).name, *["pass" if c["passed"] else f"FAIL: {c['value']}" for c in item["checks"]]]
         for item in items],
    )
    check = dg.AssetCheckResult(
        check_name=kind.check,
        passed=not bad,
        metadata={"checks": dg.MetadataValue.md(table), "failures": dg.MetadataValue.json(bad)},
        description="; ".join(bad)[:2000] if bad else f"{len(items)} output(s), every check passed",
    )
    return dg.MaterializeResult(metadata=metadata, check_results=[check])


def _video_sources(context: dg.AssetExecutionContext, config: VideoConfig) -> list[tuple[PromptSpec, Path]]:
    if config.input_images:
        text = config.motion_prompt or "Slow camera push-in"
        spec = PromptSpec(text=text, motion_prompt=text, negative_prompt=config.negative_prompt, seed=config.seed, frames=config.frames, fps=config.fps)
        try:
            check_specs([spec])  # the values, then every image below: all checked before the server sees any
        except PromptError as exc:
            raise dg.Failure(description=f"Bad video config: {exc}", allow_retries=False) from None
        except WorkflowError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        sources = []
        for raw in config.input_images:
            image = Path(raw).expanduser()
            try:
                probe_image(image)
            except MediaError as exc:
                raise dg.Failure(
                    description=f"input image cannot be used: {exc}. Give the path of a PNG, JPEG or WebP image.",
                    allow_retries=False,
                ) from None
            sources.append((spec, image))
        return sources
    images = _this_run_items(context).get("generated_image")
    if not images:
        raise dg.Failure(
            description="No input image: this run generated none. Run image_to_video_job, or give "
            "ops.ltx2_video.config.input_images in the run config.",
            allow_retries=False,
        )
    sources = []
    for item in images["items"]:
        sources.append((PromptSpec(**item["spec"]), Path(item["path"])))
    return sources


def _this_run_items(context: dg.AssetExecutionContext) -> dict[str, dict]:
    """asset name -> metadata (as plain values) of its materialization in this run."""
    found: dict[str, dict] = {}
    records = context.instance.get_records_for_run(
        context.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    for record in records:
        materialization = record.event_log_entry.asset_materialization
        if materialization is None:
            continue
        meta = {k: v.value for k, v in materialization.metadata.items()}
        if "items" in meta:
            found[materialization.asset_key.to_user_string()] = meta
    return found


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_rows(header: list[str], rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
