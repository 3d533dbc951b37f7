"""The four software-defined assets: prompt -> generated_image -> ltx2_video -> validation_report.

Data travels with the asset graph: each asset's value is a small manifest (the prompt specs; for images and
videos the files, hashes, specs and prompt ids) stored per materialization by the ManifestIOManager, and each
downstream asset takes it as an input. So a run reads its own prompts even when others run at once, a
re-execution reads its parent run's, and an asset materialized on its own reads the latest one. The images and
videos themselves are files in the output folder.

One bad prompt costs only itself: every good image goes on to its video and into the report, and the run fails
at its last step, naming each failed prompt and its ComfyUI node.
"""

import importlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import dagster as dg

from comfy_pipeline import settings
from comfy_pipeline.batch import ledger, outputs, plan
from comfy_pipeline.batch.inspection import describe, inspect_image, inspect_video
from comfy_pipeline.batch.interrupts import interrupt_flag
from comfy_pipeline.batch.progress import ProgressLogger
from comfy_pipeline.batch.report import write_report
from comfy_pipeline.batch.runner import BatchInterrupted, Job, JobResult, run_batch
from comfy_pipeline.comfyui.errors import ComfyUIError, PromptLost, ServerError, ServerUnreachable
from comfy_pipeline.defs.config import ImageConfig, PromptConfig, VideoConfig
from comfy_pipeline.defs.io_manager import LATEST
from comfy_pipeline.defs.resources import ComfyUIResource, QualityThresholds, gpu_pool
from comfy_pipeline.media import MediaError, probe_image
from comfy_pipeline.workflows.prompts import (
    PromptError, PromptSpec, check_specs, library_specs,
)
from comfy_pipeline.workflows.workflow import WorkflowError, load_workflow

GROUP = "comfy"
MAX_PREVIEWS = 6
MAX_TABLE_ROWS = 200  # the report's table in the UI; the full report is the JSON/CSV file it points to
BACKEND_TAG = "comfy_pipeline/backend"

# Transient server faults (unreachable, restarted, 5xx) are retried with this policy's backoff; bad input never
# is. It is applied by the assets themselves (dg.RetryRequested), not as the assets' retry_policy: Dagster would
# apply that one to a terminated run too and start the step again. The environment tunes it for a deployment,
# read when a step fails (settings.gpu_retry_settings), not at import.
def gpu_retry_policy() -> dg.RetryPolicy:
    chosen = settings.gpu_retry_settings()
    return dg.RetryPolicy(max_retries=chosen.max_retries, delay=chosen.delay_s, backoff=dg.Backoff.EXPONENTIAL,
                          jitter=dg.Jitter.PLUS_MINUS)


@dg.asset(
    group_name=GROUP, kinds={"python"},
    description="The prompt specs of this run (run config, else the prompt library).",
)
def prompt(context: dg.AssetExecutionContext, config: PromptConfig) -> dg.Output[dict]:
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
            for i, s in enumerate(specs[:MAX_TABLE_ROWS])
        ]
    )
    context.log.info(f"{len(specs)} prompt(s) in this run")
    return dg.Output(
        {"prompts": [s.to_dict() for s in specs]},
        metadata={"count": len(specs), "prompts": dg.MetadataValue.md(table), "first_prompt": specs[0].text},
    )


@dg.asset(
    group_name=GROUP,
    kinds={"comfyui", "image"},
    pool=gpu_pool(),
    description="One Z-Image-Turbo image per prompt, all queued on the ComfyUI server together.",
    check_specs=[
        dg.AssetCheckSpec(
            "image_quality", asset="generated_image",
            description="Every prompt produced an image, and every image is PNG or JPEG, within the size limits, "
            "decodes, and has the requested dimensions. Failed prompts and broken images are named here and are "
            "not animated; the good images go on.",
        )
    ],
)
def generated_image(
    context: dg.AssetExecutionContext, config: ImageConfig, prompt: dict | None, comfy: ComfyUIResource,
    quality: QualityThresholds,
) -> Iterator[dg.MaterializeResult]:
    if prompt is None:
        raise dg.Failure(
            description="No prompt to render: `prompt` was never materialized. Materialize prompt first, or run "
            "image_to_video_job.", allow_retries=False,
        )
    sources = [(i, PromptSpec(**p), None) for i, p in enumerate(prompt["prompts"])]
    yield from _generate(context, comfy, quality, IMAGES, config.workflow, sources, {"prompt": prompt["source"]},
                         config.prompt_ids)


@dg.asset(
    group_name=GROUP,
    kinds={"comfyui", "video"},
    pool=gpu_pool(),
    description="An LTX-2 video from each good image (this run's, else the latest generated_image, or "
    "input_images): uploaded to ComfyUI, animated, downloaded as MP4.",
    check_specs=[
        dg.AssetCheckSpec(
            "video_quality", asset="ltx2_video",
            description="Every image produced a video, and every video is MP4 or WebM, within the size limits, "
            "decodes, lasts more than 0 s, and has the requested frame count, fps and dimensions.",
        )
    ],
)
def ltx2_video(
    context: dg.AssetExecutionContext, config: VideoConfig, generated_image: dict | None, comfy: ComfyUIResource,
    quality: QualityThresholds,
) -> Iterator[dg.MaterializeResult]:
    sources, lineage = _video_sources(config, generated_image)
    yield from _generate(context, comfy, quality, VIDEOS, config.workflow, sources, lineage, config.prompt_ids)


@dg.asset(
    group_name=GROUP,
    kinds={"pandas", "json", "csv"},
    description="Every check of every output, and every failed prompt, one row each, written as JSON and CSV: "
    "this run's outputs, or the latest ones when materialized on its own.",
    check_specs=[
        dg.AssetCheckSpec(
            "all_outputs_valid", asset="validation_report",
            description="Every prompt produced its outputs and every output passed every check.",
        )
    ],
)
def validation_report(
    context: dg.AssetExecutionContext, generated_image: dict | None, ltx2_video: dict | None, comfy: ComfyUIResource
) -> Iterator[dg.MaterializeResult]:
    produced = _report_inputs({"generated_image": generated_image, "ltx2_video": ltx2_video})
    if not produced:
        raise dg.Failure(description="Nothing to report: neither generated_image nor ltx2_video has been "
                         "materialized. Run image_to_video_job first.", allow_retries=False)
    report = write_report(outputs.kind_dir(_run_folder(context, comfy), "reports"), context.run_id, produced)
    frame, failed = report.frame, report.failed
    passed = len(frame) - len(failed)
    context.log.info(f"validation report: {passed} passed, {len(failed)} failed -> {report.json_path}")
    shown = frame.sort_values("passed", kind="stable").head(MAX_TABLE_ROWS)  # failures first
    failed_prompts = [f for manifest in produced.values() for f in manifest.get("failed") or []]
    yield dg.MaterializeResult(
        value={"json": str(report.json_path), "csv": str(report.csv_path), "passed": passed, "failed": len(failed)},
        metadata={
            "backend": report.backend,
            "passed": passed,
            "failed": len(failed),
            "failed_prompts": len(failed_prompts),
            "report_json": dg.MetadataValue.path(str(report.json_path)),
            "report_csv": dg.MetadataValue.path(str(report.csv_path)),
            "timings_s": dg.MetadataValue.json(report.timings),
            "report": _table(shown),
            "dagster/row_count": len(frame),
            **_lineage_metadata({name: m["source"] for name, m in produced.items()}),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="all_outputs_valid",
                passed=failed.empty,
                metadata={
                    "passed": passed, "failed": len(failed), "failed_prompts": len(failed_prompts),
                    "failed_checks": dg.MetadataValue.json(
                        failed[["asset", "check", "path", "message"]].head(MAX_TABLE_ROWS).to_dict("records")
                    ),
                },
                description=None if failed.empty else f"{len(failed)} check(s) failed; see {report.json_path}",
            )
        ],
    )
    if not failed.empty:
        failed_checks = failed[failed["check"] != "produced"]
        lines = [_failure_line(f) for f in failed_prompts]
        lines += [f"{row.path}: check {row.check} failed: {row.message}" for row in failed_checks.itertuples()]
        raise dg.Failure(
            description=f"{len(failed_prompts)} prompt(s) failed and {len(failed_checks)} output check(s) failed; "
            f"everything good was made and reported in {report.json_path}:\n" + "\n".join(lines[:50]),
            metadata={"failed": len(failed), "failed_prompts": len(failed_prompts)},
            allow_retries=False,
        )


# --- helpers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Kind:
    """What differs between the image and the video asset; everything else is one code path."""

    folder: str
    job: str  # "prompt 0", "video 0" in logs
    check: str
    inspect: Callable[[Path, PromptSpec, Any, QualityThresholds], dict[str, Any]]
    downstream: tuple[str, ...]  # assets that carry this one's failures on to the end of the run


IMAGES = _Kind("images", "prompt", "image_quality",
               lambda path, spec, workflow, quality: inspect_image(path, spec, workflow, quality.image()),
               ("ltx2_video", "validation_report"))
VIDEOS = _Kind("videos", "video", "video_quality",
               lambda path, spec, workflow, quality: inspect_video(path, spec, workflow, quality.video()),
               ("validation_report",))


def _generate(context, comfy: ComfyUIResource, quality: QualityThresholds, kind: _Kind, workflow_name: str,
              sources: list[tuple[int, PromptSpec, Path | None]], lineage: dict[str, dict],
              prompt_ids: list[str]) -> Iterator[dg.MaterializeResult]:
    """Run every source (prompt index, spec, image to animate) through the kind's workflow, check each output and
    record them all in one materialization, the failed prompts included. A video keeps its prompt's index:
    "video 3" is the video of "prompt 3". The step fails only when nothing was made, or when no later
    asset of this run will carry the failures on (then after recording everything good)."""
    loading_started = time.monotonic()
    workflow = _load(workflow_name)
    server = {**_server_info(context, comfy), "workflow_load_s": round(time.monotonic() - loading_started, 4)}
    folder = outputs.kind_dir(_run_folder(context, comfy), kind.folder)
    _cancel_orphans(context, comfy, server)
    ids = _prompt_ids(prompt_ids, len(sources))
    jobs = [plan.gpu_job(kind.folder, i, spec, image, workflow, context.run_id, folder, ids[n])
            for n, (i, spec, image) in enumerate(sources)]
    # Each output is checked as soon as it is home, while the GPU works on the next prompts.
    source_of = {job.key: (spec, image) for job, (_, spec, image) in zip(jobs, sources)}
    with ThreadPoolExecutor(max_workers=2) as pool:
        checking = {}

        def check_when_home(result: JobResult) -> None:
            spec = source_of[result.job.key][0]
            checking[result.job.key] = pool.submit(kind.inspect, result.files[0], spec, workflow, quality)

        results = _run(context, comfy, server, jobs, check_when_home)
        made = [(spec, image, r) for (_, spec, image), r in zip(sources, results) if r.ok]
        inspections = [checking[r.job.key].result() for _, _, r in made]  # every good result was handed over
    items = [describe(spec, image, result, workflow, server, found) for (spec, image, result), found in zip(made, inspections)]
    failed = [_failed_prompt(spec, r) for (_, spec, _), r in zip(sources, results) if not r.ok]
    summary = f"{len(failed)} of {len(results)} prompt(s) failed:\n" + "\n".join(_failure_line(f) for f in failed)
    if not items:
        errors = [r.error for r in results if not r.ok]
        _fail(context, dg.Failure(description=summary, metadata=_failure_metadata(errors[0]), allow_retries=False),
              transient=all(_transient(e) for e in errors))
    listing = outputs.kind_dir(folder.parent, "reports") / f"{context.asset_key.to_user_string()}_items.json"
    yield _materialize(context, kind, items, server, failed, lineage, listing)
    broken = [item["path"] for item in items if not _passed(item)]
    if (failed or broken) and not _downstream_in_run(context, kind):
        raise dg.Failure(
            description=(summary if failed else "")
            + (f"\n{len(broken)} output(s) failed their checks: {', '.join(broken)}" if broken else "")
            + f"\nThe other {len(items) - len(broken)} output(s) were checked and recorded.",
            metadata=_failure_metadata(next((r.error for r in results if not r.ok), None)),
            allow_retries=False,
        )
    if failed or broken:
        context.log.warning(f"{len(failed)} prompt(s) failed and {len(broken)} output(s) failed their checks; "
                            f"the good ones go on, and the run fails at its end naming them")


def _prompt_ids(given: list[str], count: int) -> list[str | None]:
    """The prompt ids chosen ahead (config `prompt_ids`), one per prompt; None each when none were given."""
    from comfy_pipeline.comfyui.client import is_canonical_uuid  # loaded by the step's client already

    if not given:
        return [None] * count
    bad = [i for i in given if not is_canonical_uuid(i)]
    if len(given) != count or bad:
        raise dg.Failure(
            description=f"config prompt_ids: give one lowercase UUID per prompt ({count}), or none; got {len(given)}"
            + (f", of which not UUIDs: {bad[:3]}" if bad else ""), allow_retries=False)
    return list(given)


def _load(name: str):
    try:
        return load_workflow(name)
    except WorkflowError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None


def _server_info(context: dg.AssetExecutionContext, comfy: ComfyUIResource) -> dict[str, Any]:
    try:
        info = comfy.server_info()
    except ComfyUIError as exc:
        _fail(context, dg.Failure(description=str(exc), metadata={"comfyui_url": comfy.display_url},
                                  allow_retries=False), transient=_transient(exc))
    for problem in info["unreachable"]:
        context.log.warning(f"not answering, left out of this step: {problem}")
    if _first_in_run(context, info["backend"]):
        if info["backend"] == "simulator":
            context.log.warning(
                f"backend: simulator -- the ComfyUI at {info['url']} is the offline simulator: its pictures are "
                "placeholders, not model output. Set COMFYUI_URL to a real GPU server for real ones."
            )
        else:
            context.log.info(f"ComfyUI {info['comfyui_version']} at {info['url']} on {info['gpu']}")
    return info


def _first_in_run(context: dg.AssetExecutionContext, backend: str) -> bool:
    """Tag the run with its backend (the runs list can filter on it); True for the first step that does."""
    run = context.instance.get_run_by_id(context.run_id)
    if run is not None and run.tags.get(BACKEND_TAG) == backend:
        return False
    context.instance.add_run_tags(context.run_id, {BACKEND_TAG: backend})
    return True


def _run_folder(context: dg.AssetExecutionContext, comfy: ComfyUIResource) -> Path:
    record = context.instance.get_run_record_by_id(context.run_id)
    started = record.create_timestamp.timestamp() if record else time.time()
    return outputs.run_dir(comfy.output_path, context.run_id, started)


def _cancel_orphans(context: dg.AssetExecutionContext, comfy: ComfyUIResource, server: dict) -> None:
    """Clean up after dead runs before queueing our own work: their prompts on this server (batch.ledger) and
    their partial downloads in the output folder."""
    ended = lambda run_id: run_has_ended(context.instance, run_id)  # noqa: E731
    for client in comfy.get_clients():
        if client.url not in server["servers"]:
            continue  # not answering: swept once it is back
        found = ledger.cancel_orphans(comfy.output_path, client.url, client.cancel, ended)
        for run_id in sorted({e.run_id for e in found}):
            ids = [e.prompt_id for e in found if e.run_id == run_id]
            context.log.warning(f"run {run_id} died with {len(ids)} prompt(s) on {client.url}; cancelled them "
                                "there: " + ", ".join(ids))
    for part in outputs.remove_stale_parts(comfy.output_path, ended):
        context.log.info(f"removed {part}, a partial download a dead run left behind")


def run_has_ended(instance: dg.DagsterInstance, run_id: str) -> bool:
    run = instance.get_run_by_id(run_id)
    return run is None or run.is_finished


def _run(context: dg.AssetExecutionContext, comfy: ComfyUIResource, server: dict, jobs: list[Job],
         on_result: Callable[[JobResult], None]) -> list[JobResult]:
    _warm_up_report_imports()
    clients = [c for c in comfy.get_clients() if c.url in server["servers"]]  # those that answered
    record = ledger.PromptLedger(comfy.output_path, context.run_id)
    try:
        with interrupt_flag() as stop:
            results = run_batch(
                clients, jobs, max_in_flight=comfy.max_in_flight, prompt_timeout=comfy.prompt_timeout,
                queue_timeout=comfy.queue_timeout, on_progress=ProgressLogger(context.log), stop=stop,
                logger=context.log, ledger=record, on_result=on_result,
            )
    except BatchInterrupted:
        # The interrupt exception itself was lost (see comfy_pipeline.batch.interrupts); the prompts are cancelled.
        record.close()
        raise dg.DagsterExecutionInterruptedError() from None
    except (ComfyUIError, WorkflowError) as exc:
        record.close()  # nothing of ours is left running: run_batch cancels its prompts when it fails
        _fail(context, dg.Failure(description=str(exc), metadata=_failure_metadata(exc), allow_retries=False),
              transient=_transient(exc))
    record.close()
    for result in results:
        if result.ok:
            via = f" on {result.server}" if len(clients) > 1 else ""
            context.log.info(f"{result.job.key}: {result.files[0]} (prompt {result.prompt_id}{via})")
        else:
            context.log.error(f"{result.job.key}: {result.error}")
    return results


def _fail(context: dg.AssetExecutionContext, failure: dg.Failure, *, transient: bool) -> NoReturn:
    """Raise `failure`; for a transient server fault, first ask Dagster to run the step again after the retry
    policy's backoff, as long as retries are left."""
    failure.__suppress_context__ = True  # the failure says it all: no "during handling of ..." chain
    policy = gpu_retry_policy()
    if transient and context.retry_number < policy.max_retries:
        wait = policy.calculate_delay(context.retry_number + 1)
        context.log.warning(f"{failure.description} -- a transient server fault: trying the step again in "
                            f"{wait:.1f} s (retry {context.retry_number + 1} of {policy.max_retries})")
        raise dg.RetryRequested(max_retries=policy.max_retries, seconds_to_wait=wait) from failure
    raise failure from None


def _transient(error: BaseException | None) -> bool:
    """A server fault that a later attempt may not meet: unreachable, restarted (prompt forgotten), 5xx."""
    if isinstance(error, (ServerUnreachable, PromptLost)):
        return True
    return isinstance(error, ServerError) and (error.status or 0) >= 500


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


def _failed_prompt(spec: PromptSpec, result: JobResult) -> dict[str, Any]:
    meta = _failure_metadata(result.error)
    return {
        "job": result.job.key, "prompt": spec.text, "spec": {k: v for k, v in spec.to_dict().items() if k != "extra"},
        "prompt_id": result.prompt_id, "comfyui_url": result.server, "error": str(result.error),
        "error_type": meta["error_type"], "comfyui_node": meta.get("comfyui_node"),
    }


def _failure_line(failed: dict) -> str:
    """`prompt 0 ('a red fox'): ComfyUI prompt <id> failed in node 57:3 (KSampler): ...`"""
    text = failed["prompt"] if len(failed["prompt"]) <= 60 else failed["prompt"][:57] + "..."
    return f"{failed['job']} ({text!r}): {failed['error']}"


def _passed(item: dict) -> bool:
    return all(c["passed"] for c in item["checks"])


def _downstream_in_run(context: dg.AssetExecutionContext, kind: _Kind) -> bool:
    steps = context.run.step_keys_to_execute
    names = set(steps) if steps is not None else {
        k.to_user_string() for k in context.job_def.asset_layer.executable_asset_keys
    }
    return bool(names & set(kind.downstream))


def _materialize(context, kind: _Kind, items: list[dict], server: dict, failed: list[dict],
                 lineage: dict[str, dict], listing: Path) -> dg.MaterializeResult:
    """The manifest (the asset's value) and the metadata the UI shows. The metadata stays the same size however
    many prompts a run has: the first output's facts, counts, at most MAX_PREVIEWS previews and MAX_TABLE_ROWS
    rows; the full list of outputs is written to `listing`, which the metadata points to."""
    phases: dict[str, float] = {"connection": server["connection_s"], "workflow_load": server["workflow_load_s"]}
    for item in items:
        for phase, seconds in item["timings_s"].items():
            phases[phase] = round(phases.get(phase, 0.0) + seconds, 4)
    first = items[0]
    recorded = [{k: v for k, v in item.items() if k != "preview"} for item in items]
    manifest = {
        "items": recorded, "failed": failed, "backend": server["backend"], "comfyui_url": server["url"],
        "workflow": first["workflow"], "workflow_sha256": first["workflow_sha256"], "timings_s": phases,
    }
    outputs.write_json(listing, {"items": recorded, "failed": failed}, replace=True)  # a retried step rewrites it
    servers = sorted({item["comfyui_url"] for item in items})
    metadata: dict[str, Any] = {
        "backend": server["backend"],
        "comfyui_url": ", ".join(servers),
        "comfyui_version": server["comfyui_version"] or "?",
        "gpu": server["gpu"] or "?",
        "vram_total_gb": server["vram_total_gb"],
        "workflow": first["workflow"],
        "workflow_sha256": first["workflow_sha256"],
        "count": len(items),
        "failed_prompts": len(failed),
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
        "items_json": dg.MetadataValue.path(str(listing)),
        "outputs_per_server": dg.MetadataValue.json({url: sum(i["comfyui_url"] == url for i in items) for url in servers}),
        "preview": dg.MetadataValue.md(
            "\n\n".join(f"**{_md(item['prompt'])[:120]}**\n\n{item['preview']}" for item in items[:MAX_PREVIEWS])
        ),
        **_lineage_metadata(lineage),
    }
    for key in ("width", "height", "format", "duration_s", "fps", "frame_count", "codec", "container"):
        if key in first:
            metadata[key] = first[key]
    bad = [c["message"] for item in items for c in item["checks"] if not c["passed"]]  # messages name the file
    bad += [f"{_failure_line(f)} (no output)" for f in failed]
    for item in items:
        names = [c["name"] for c in item["checks"] if not c["passed"]]
        if names:
            context.log.error(f"{item['path']} failed check(s) {names}; the file is kept for inspection")
    table = _md_rows(
        ["output", *[c["name"] for c in first["checks"]]],
        [[Path(item["path"]).name, *["pass" if c["passed"] else f"FAIL: {c['value']}" for c in item["checks"]]]
         for item in items[:MAX_TABLE_ROWS]],
    )
    check = dg.AssetCheckResult(
        check_name=kind.check,
        passed=not bad,
        metadata={
            "outputs": len(items),
            "passed_outputs": sum(_passed(item) for item in items),
            "failed_outputs": sum(not _passed(item) for item in items),
            "failed_prompts": len(failed),
            "validation_s": round(sum(item["timings_s"].get("validation", 0.0) for item in items), 4),
            "checks": dg.MetadataValue.md(table),
            "failures": dg.MetadataValue.json(bad[:MAX_TABLE_ROWS]),
        },
        description="; ".join(bad)[:2000] if bad else f"{len(items)} output(s), every check passed",
    )
    return dg.MaterializeResult(value=manifest, metadata=metadata, check_results=[check])


def _lineage_metadata(lineage: dict[str, dict]) -> dict[str, Any]:
    """Which run's materialization each input came from: this run, the parent of a re-execution, or the latest."""
    meta: dict[str, Any] = {}
    for name, source in lineage.items():
        meta[f"input_{name}_run"] = dg.MetadataValue.dagster_run(source["run_id"])
        meta[f"input_{name}_from"] = source["how"]
    return meta


def _video_sources(config: VideoConfig, images: dict | None) -> tuple[list[tuple[int, PromptSpec, Path]], dict]:
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
        for i, raw in enumerate(config.input_images):
            image = Path(raw).expanduser()
            try:
                probe_image(image)
            except MediaError as exc:
                raise dg.Failure(
                    description=f"input image cannot be used: {exc}. Give the path of a PNG, JPEG or WebP image.",
                    allow_retries=False,
                ) from None
            sources.append((i, spec, image))
        return sources, {}
    if images is None:
        raise dg.Failure(
            description="No input image: generated_image has never been materialized. Run image_to_video_job, "
            "or give ops.ltx2_video.config.input_images in the run config.",
            allow_retries=False,
        )
    usable = [item for item in images["items"] if _passed(item)]
    if not usable:
        raise dg.Failure(
            description=f"No usable input image: every image of generated_image (run {images['source']['run_id']}) "
            "failed its checks.", allow_retries=False,
        )
    sources = [(_index(item["job"]), PromptSpec(**item["spec"]), Path(item["path"])) for item in usable]
    return sources, {"generated_image": images["source"]}


def _index(job: str) -> int:
    """"prompt 3" -> 3."""
    return int(job.rsplit(" ", 1)[-1])


def _report_inputs(manifests: dict[str, dict | None]) -> dict[str, dict]:
    """What the report covers: the inputs made in this run (or its parent run, when re-executed); when none were,
    as when the report is materialized on its own, the latest materialization of each."""
    present = {name: m for name, m in manifests.items() if m is not None}
    this_run = {name: m for name, m in present.items() if m["source"]["how"] != LATEST}
    return this_run or present


def _table(frame) -> dg.MetadataValue:
    columns = ["prompt", "asset", "check", "passed", "value", "expected", "message"]
    types = {"passed": "bool"}
    records = [
        dg.TableRecord({c: (bool(row[c]) if c == "passed" else "" if row[c] is None else str(row[c])) for c in columns})
        for row in frame[columns].to_dict("records")
    ]
    schema = dg.TableSchema(columns=[dg.TableColumn(c, types.get(c, "string")) for c in columns])
    return dg.MetadataValue.table(records=records, schema=schema)


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_rows(header: list[str], rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
