"""The four software-defined assets: prompt -> generated_image -> ltx2_video -> validation_report.

Data travels with the asset graph: each asset's value is a small manifest (batch.records: the prompt specs; for
images and videos the files, hashes, specs and prompt ids) stored per materialization by the ManifestIOManager,
and each downstream asset takes it as an input. So a run reads its own prompts even when others run at once, a
re-execution reads its parent run's, and an asset materialized on its own reads the latest one. The images and
videos themselves are files in the output folder.

The GPU work is plain code (batch.step.run_gpu_step); the assets translate its outcome into Dagster: metadata,
check results, a retry for a transient server fault, a Failure naming what went wrong. One bad prompt costs only
itself: every good image goes on to its video and into the report, and the run fails at its last step, naming
each failed prompt and its ComfyUI node.
"""

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import dagster as dg

from comfy_pipeline import settings
from comfy_pipeline.batch import outputs, step
from comfy_pipeline.batch.records import (
    GenerationManifest,
    Lineage,
    PromptManifest,
    ReportManifest,
    ServerInfo,
    error_facts,
)
from comfy_pipeline.batch.report import write_report
from comfy_pipeline.batch.runner import BatchInterrupted
from comfy_pipeline.comfyui.errors import ComfyUIError, is_transient
from comfy_pipeline.defs.config import ImageConfig, PromptConfig, VideoConfig
from comfy_pipeline.defs.io_manager import LATEST
from comfy_pipeline.defs.resources import ComfyUIResource, QualityThresholds, gpu_pool
from comfy_pipeline.workflows.prompts import PromptError, PromptSpec, check_specs, library_specs
from comfy_pipeline.workflows.workflow import WorkflowError

GROUP = "comfy"
MAX_PREVIEWS = 6
MAX_TABLE_ROWS = 200  # the report's table in the UI; the full report is the JSON/CSV file it points to
BACKEND_TAG = "comfy_pipeline/backend"

# Transient server faults (errors.is_transient: unreachable, restarted, 5xx) are retried with this policy's
# backoff; bad input never is. It is applied by the assets themselves (dg.RetryRequested), not as the assets'
# retry_policy: Dagster would apply that one to a terminated run too and start the step again. The environment
# tunes it for a deployment, read when a step fails (settings.gpu_retry_settings), not at import.
def gpu_retry_policy() -> dg.RetryPolicy:
    chosen = settings.gpu_retry_settings()
    return dg.RetryPolicy(max_retries=chosen.max_retries, delay=chosen.delay_s, backoff=dg.Backoff.EXPONENTIAL,
                          jitter=dg.Jitter.PLUS_MINUS)


@dg.asset(
    group_name=GROUP, kinds={"python"},
    description="The prompt specs of this run (run config, else the prompt library).",
)
def prompt(context: dg.AssetExecutionContext, config: PromptConfig) -> dg.Output[dict]:
    with _permanent_failure("Bad prompt in run config: "):
        if config.prompts:
            specs = check_specs([p.to_spec() for p in config.prompts])
        else:
            library = library_specs()
            specs = library if config.use_library else library[:1]
    rows = [[i, s.text, s.motion_prompt or s.text, s.seed, f"{s.width}x{s.height}", f"{s.frames} @ {s.fps}"]
            for i, s in enumerate(specs[:MAX_TABLE_ROWS])]
    table = step.md_table(["#", "prompt", "motion", "seed", "size", "frames @ fps"], rows)
    context.log.info(f"{len(specs)} prompt(s) in this run")
    return dg.Output(
        PromptManifest(tuple(specs)).to_json(),
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
            "decodes, has the requested dimensions, and is neither black nor flat (the content checks the "
            "workflow does not skip). Failed prompts and broken images are named here and are not animated; the "
            "good images go on.",
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
    prompts = PromptManifest.from_json(prompt)
    sources = [step.Source(i, spec) for i, spec in enumerate(prompts.prompts)]
    yield from _gpu_step(context, comfy, IMAGES, quality.image(), config.workflow, sources,
                         {"prompt": prompts.source}, config.prompt_ids, quality)


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
            "decodes, lasts more than 0 s, has the requested frame count, fps and dimensions, moves, is not "
            "blank, starts from its image and, when it has or should have sound, is not silent (the content "
            "checks the workflow does not skip).",
        )
    ],
)
def ltx2_video(
    context: dg.AssetExecutionContext, config: VideoConfig, generated_image: dict | None, comfy: ComfyUIResource,
    quality: QualityThresholds,
) -> Iterator[dg.MaterializeResult]:
    images = None if generated_image is None else GenerationManifest.from_json(generated_image)
    sources, lineage = _video_sources(config, images)
    yield from _gpu_step(context, comfy, VIDEOS, quality.video(), config.workflow, sources, lineage,
                         config.prompt_ids, quality)


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
    failed_prompts = [f for manifest in produced.values() for f in manifest.failed]
    counts = {"passed": passed, "failed": len(failed), "failed_prompts": len(failed_prompts)}
    failed_checks = failed[["asset", "check", "path", "message"]].head(MAX_TABLE_ROWS).to_dict("records")
    yield dg.MaterializeResult(
        value=ReportManifest(str(report.json_path), str(report.csv_path), passed, len(failed)).to_json(),
        metadata={
            "backend": report.backend, **counts,
            "report_json": dg.MetadataValue.path(str(report.json_path)),
            "report_csv": dg.MetadataValue.path(str(report.csv_path)),
            "timings_s": dg.MetadataValue.json(report.timings),
            "report": _table(shown),
            "dagster/row_count": len(frame),
            **_lineage_metadata({name: m.source for name, m in produced.items()}),
        },
        check_results=[dg.AssetCheckResult(
            check_name="all_outputs_valid", passed=failed.empty,
            metadata={**counts, "failed_checks": dg.MetadataValue.json(failed_checks)},
            description=None if failed.empty else f"{len(failed)} check(s) failed; see {report.json_path}",
        )],
    )
    if not failed.empty:
        raise dg.Failure(description=report.failure(failed_prompts), allow_retries=False,
                         metadata={"failed": len(failed), "failed_prompts": len(failed_prompts)})


# --- from the step's outcome to Dagster ------------------------------------------------------------------


@dataclass(frozen=True)
class _Kind:
    """The image or the video step, with what Dagster adds: its check, and the assets that carry its failures on."""

    step: step.OutputKind
    check: str
    downstream: tuple[str, ...]


IMAGES = _Kind(step.IMAGES, "image_quality", ("ltx2_video", "validation_report"))
VIDEOS = _Kind(step.VIDEOS, "video_quality", ("validation_report",))


def _gpu_step(context: dg.AssetExecutionContext, comfy: ComfyUIResource, kind: _Kind, thresholds: Any,
              workflow: str, sources: list[step.Source], lineage: dict[str, Lineage | None],
              prompt_ids: list[str], quality: QualityThresholds) -> Iterator[dg.MaterializeResult]:
    """Run the step and record every output and failed prompt in one materialization. The step fails only when
    nothing was made, or when no later asset of this run will carry the failures on (then after recording)."""
    run_folder = _run_folder(context, comfy)
    try:
        outcome = step.run_gpu_step(
            kind.step, sources, workflow_name=workflow, prompt_ids=prompt_ids, servers=comfy, thresholds=thresholds,
            run_id=context.run_id, run_folder=run_folder, log=context.log,
            run_ended=lambda run_id: run_has_ended(context.instance, run_id),
            on_server=lambda server: _announce(context, server),
            content=quality.content(), content_retries=quality.content_retries,
        )
    except BatchInterrupted:
        # The interrupt exception itself was lost (see comfy_pipeline.batch.interrupts); the prompts are cancelled.
        raise dg.DagsterExecutionInterruptedError() from None
    except (ComfyUIError, WorkflowError, step.StepInputError) as exc:
        _fail(context, str(exc), {**_failure_metadata(exc), "comfyui_url": comfy.display_url},
              transient=is_transient(exc))
    if not outcome.items:
        _fail(context, outcome.summary(), _failure_metadata(outcome.errors[0]), transient=outcome.transient)
    listing = outcome.write_listing(run_folder, context.asset_key.to_user_string())
    yield _materialize(context, kind, outcome, listing, lineage)
    if (outcome.failed or outcome.broken) and not _downstream_in_run(context, kind):
        raise dg.Failure(description=outcome.incomplete(), allow_retries=False,
                         metadata=_failure_metadata(outcome.errors[0] if outcome.errors else None))
    if outcome.failed or outcome.broken:
        context.log.warning(f"{len(outcome.failed)} prompt(s) failed and {len(outcome.broken)} output(s) failed "
                            "their checks; the good ones go on, and the run fails at its end naming them")


def _materialize(context: dg.AssetExecutionContext, kind: _Kind, outcome: step.StepOutcome, listing: Path,
                 lineage: dict[str, Lineage | None]) -> dg.MaterializeResult:
    """The manifest (the asset's value) and the metadata the UI shows. The metadata stays the same size however
    many prompts a run has: the first output's facts, counts, at most MAX_PREVIEWS previews and MAX_TABLE_ROWS
    rows; the full list of outputs is `listing`, which the metadata points to."""
    manifest, bad = outcome.manifest(), outcome.problems()
    metadata = {
        **outcome.facts(), "path": dg.MetadataValue.path(outcome.items[0].path),
        "timings_s": dg.MetadataValue.json(dict(manifest.timings_s)), "items_json": dg.MetadataValue.path(str(listing)),
        "outputs_per_server": dg.MetadataValue.json(outcome.outputs_per_server()),
        "preview": dg.MetadataValue.md(outcome.previews(MAX_PREVIEWS)), **_lineage_metadata(lineage),
    }
    for item in outcome.broken:
        names = [c.name for c in item.checks if not c.passed]
        context.log.error(f"{item.path} failed check(s) {names}; the file is kept for inspection")
    check = dg.AssetCheckResult(
        check_name=kind.check, passed=not bad,
        metadata={**outcome.check_counts(), "checks": dg.MetadataValue.md(outcome.checks_table(MAX_TABLE_ROWS)),
                  "failures": dg.MetadataValue.json(bad[:MAX_TABLE_ROWS])},
        description="; ".join(bad)[:2000] if bad else f"{len(outcome.items)} output(s), every check passed",
    )
    return dg.MaterializeResult(value=manifest.to_json(), metadata=metadata, check_results=[check])


def _fail(context: dg.AssetExecutionContext, description: str, metadata: dict[str, Any], *,
          transient: bool) -> NoReturn:
    """Fail the step; for a transient server fault, first ask Dagster to run the step again after the retry
    policy's backoff, as long as retries are left."""
    failure = dg.Failure(description=description, metadata=metadata, allow_retries=False)
    policy = gpu_retry_policy()
    if transient and context.retry_number < policy.max_retries:
        wait = policy.calculate_delay(context.retry_number + 1)
        context.log.warning(f"{description} -- a transient server fault: trying the step again in "
                            f"{wait:.1f} s (retry {context.retry_number + 1} of {policy.max_retries})")
        raise dg.RetryRequested(max_retries=policy.max_retries, seconds_to_wait=wait) from failure
    raise failure from None


def _failure_metadata(error: BaseException | None) -> dict[str, Any]:
    error_type, node = error_facts(error)
    return {"error_type": error_type, **({"comfyui_node": node} if node else {})}


def _announce(context: dg.AssetExecutionContext, server: ServerInfo) -> None:
    """Tag the run with its backend (the runs list can filter on it) and say once per run what it runs on."""
    run = context.instance.get_run_by_id(context.run_id)
    if run is not None and run.tags.get(BACKEND_TAG) == server.backend:
        return
    context.instance.add_run_tags(context.run_id, {BACKEND_TAG: server.backend})
    (context.log.warning if server.simulated else context.log.info)(server.announcement())


def run_has_ended(instance: dg.DagsterInstance, run_id: str) -> bool:
    run = instance.get_run_by_id(run_id)
    return run is None or run.is_finished


def _run_folder(context: dg.AssetExecutionContext, comfy: ComfyUIResource) -> Path:
    record = context.instance.get_run_record_by_id(context.run_id)
    started = record.create_timestamp.timestamp() if record else time.time()
    return outputs.run_dir(comfy.output_path, context.run_id, started)


def _downstream_in_run(context: dg.AssetExecutionContext, kind: _Kind) -> bool:
    steps = context.run.step_keys_to_execute
    names = set(steps) if steps is not None else {
        k.to_user_string() for k in context.job_def.asset_layer.executable_asset_keys
    }
    return bool(names & set(kind.downstream))


@contextlib.contextmanager
def _permanent_failure(prefix: str = "") -> Iterator[None]:
    """Bad run config or step input: a Failure that says what is wrong, never retried."""
    try:
        yield
    except PromptError as exc:
        raise dg.Failure(description=f"{prefix}{exc}", allow_retries=False) from None
    except (WorkflowError, step.StepInputError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None


def _video_sources(config: VideoConfig, images: GenerationManifest | None
                   ) -> tuple[list[step.Source], dict[str, Lineage | None]]:
    if config.input_images:
        text = config.motion_prompt or "Slow camera push-in"
        spec = PromptSpec(text=text, motion_prompt=text, negative_prompt=config.negative_prompt, seed=config.seed,
                          frames=config.frames, fps=config.fps)
        with _permanent_failure("Bad video config: "):
            check_specs([spec])  # the values, then every image: all checked before the server sees any
            return step.sources_from_files(spec, config.input_images), {}
    if images is None:
        raise dg.Failure(
            description="No input image: generated_image has never been materialized. Run image_to_video_job, "
            "or give ops.ltx2_video.config.input_images in the run config.", allow_retries=False,
        )
    with _permanent_failure():
        return step.sources_from_images(images), {"generated_image": images.source}


def _report_inputs(manifests: dict[str, dict | None]) -> dict[str, GenerationManifest]:
    """What the report covers: the inputs made in this run (or its parent run, when re-executed); when none were,
    as when the report is materialized on its own, the latest materialization of each."""
    present = {name: GenerationManifest.from_json(m) for name, m in manifests.items() if m is not None}
    this_run = {name: m for name, m in present.items() if m.source is None or m.source.how != LATEST}
    return this_run or present


def _lineage_metadata(lineage: dict[str, Lineage | None]) -> dict[str, Any]:
    """Which run's materialization each input came from: this run, the parent of a re-execution, or the latest."""
    meta: dict[str, Any] = {}
    for name, source in lineage.items():
        if source is not None:
            meta[f"input_{name}_run"] = dg.MetadataValue.dagster_run(source.run_id)
            meta[f"input_{name}_from"] = source.how
    return meta


def _table(frame) -> dg.MetadataValue:
    columns = ["prompt", "asset", "check", "passed", "value", "expected", "message"]
    types = {"passed": "bool"}
    records = [
        dg.TableRecord({c: (bool(row[c]) if c == "passed" else "" if row[c] is None else str(row[c])) for c in columns})
        for row in frame[columns].to_dict("records")
    ]
    schema = dg.TableSchema(columns=[dg.TableColumn(c, types.get(c, "string")) for c in columns])
    return dg.MetadataValue.table(records=records, schema=schema)
