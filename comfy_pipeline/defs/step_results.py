"""From a GPU step's outcome (batch.step, no Dagster) to Dagster: one materialization with metadata and its check
result, a retry for a transient server fault, a Failure naming what went wrong.

One bad prompt costs only itself: the good outputs are recorded and go on, and the step fails (after recording)
only when nothing was made, or when no asset downstream of it runs in the same run to carry the failures on.
"""

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import dagster as dg

from comfy_pipeline import settings
from comfy_pipeline.batch import outputs, step
from comfy_pipeline.batch.records import Lineage, ServerInfo, error_facts
from comfy_pipeline.batch.runner import BatchInterrupted
from comfy_pipeline.comfyui.errors import ComfyUIError, is_transient
from comfy_pipeline.defs.metadata import lineage_metadata, numbers, rows_table
from comfy_pipeline.defs.resources import ComfyUIResource, QualityThresholds
from comfy_pipeline.storage import StoreError
from comfy_pipeline.workflows.prompts import PromptError
from comfy_pipeline.workflows.workflow import WorkflowError

MAX_PREVIEWS = 6
# Markdown metadata this long opens from the UI's "Show Markdown" button: the label says so.
PREVIEWS_LABEL = "previews (open with Show Markdown)"
BACKEND_TAG = "comfy_pipeline/backend"


def gpu_retry_policy(max_retries: int | None = None, delay: float | None = None) -> dg.RetryPolicy:
    """Transient server faults (errors.is_transient: unreachable, restarted, 5xx) are retried with this policy's
    backoff; bad input never is. It is applied by the assets themselves (dg.RetryRequested), not as the assets'
    retry_policy: Dagster would apply that one to a terminated run too and start the step again. An asset's own
    values win; else the environment's (settings.gpu_retry_settings), read when a step fails, not at import."""
    chosen = settings.gpu_retry_settings()
    return dg.RetryPolicy(max_retries=chosen.max_retries if max_retries is None else max_retries,
                          delay=chosen.delay_s if delay is None else delay, backoff=dg.Backoff.EXPONENTIAL,
                          jitter=dg.Jitter.PLUS_MINUS)


@dataclass(frozen=True)
class StepPlan:
    """What one asset's GPU step runs: the workflow (a name in the workflows folders, or a file name in
    `workflow_folder`), the values it fixes for every prompt, its check, and its retry policy's overrides."""

    kind: step.OutputKind
    check: str
    workflow: str
    workflow_folder: Path | None = None
    fixed: Mapping[str, Any] | None = None
    max_retries: int | None = None
    retry_delay: float | None = None
    output_subfolder: str = ""  # "": straight into the run folder's images/ or videos/
    workflow_kind: str = ""  # what the asset's workflow is; run config may only swap in one of the same kind


def run_step(context: dg.AssetExecutionContext, comfy: ComfyUIResource, quality: QualityThresholds, plan: StepPlan,
             sources: list[step.Source], lineage: dict[str, Lineage | None], prompt_ids: list[str],
             carried: Sequence[str] = ()) -> Iterator[dg.MaterializeResult]:
    """Run the step and record every output and failed prompt in one materialization. `carried`: what the input
    lost in this run (its failed prompts and broken outputs), named again here so that the run fails for it at its
    last step."""
    run_folder = run_folder_of(context, comfy)
    thresholds = quality.image() if plan.kind.folder == "images" else quality.video()
    try:
        outcome = step.run_gpu_step(
            plan.kind, sources, workflow_name=plan.workflow, workflow_folder=plan.workflow_folder, fixed=plan.fixed,
            output_subfolder=plan.output_subfolder, workflow_kind=plan.workflow_kind,
            prompt_ids=prompt_ids, servers=comfy, thresholds=thresholds, run_id=context.run_id,
            run_folder=run_folder, log=context.log, run_ended=lambda run_id: run_has_ended(context.instance, run_id),
            on_server=lambda server: _announce(context, server),
            content=quality.content(), content_retries=quality.content_retries,
        )
    except BatchInterrupted:
        # The interrupt exception itself was lost (see comfy_pipeline.batch.interrupts); the prompts are cancelled.
        raise dg.DagsterExecutionInterruptedError() from None
    except (ComfyUIError, WorkflowError, step.StepInputError) as exc:
        fail(context, str(exc), {**failure_metadata(exc), "comfyui_url": comfy.display_url},
             transient=is_transient(exc), plan=plan)
    except StoreError as exc:  # the output store refused or cannot be reached: its message says what to fix
        fail(context, f"The output store failed: {exc}", failure_metadata(exc), transient=False, plan=plan)
    if not outcome.items:
        fail(context, outcome.summary(), failure_metadata(outcome.errors[0]), transient=outcome.transient, plan=plan)
    with store_failure():
        listing = outcome.write_listing(run_folder, context.asset_key.to_python_identifier())
    yield _materialize(context, plan.check, outcome, listing, lineage, carried)
    lost = bool(outcome.failed or outcome.broken or carried)
    if lost and not _downstream_in_run(context):
        carried_text = "\n".join(["The input lost these in this run (skipped here):", *carried]) if carried else ""
        description = "\n".join(t for t in (outcome.incomplete() if outcome.failed or outcome.broken else "",
                                            carried_text) if t)
        raise dg.Failure(description=description, allow_retries=False,
                         metadata=failure_metadata(outcome.errors[0] if outcome.errors else None))
    if lost:
        context.log.warning(f"{len(outcome.failed)} prompt(s) failed and {len(outcome.broken)} output(s) failed "
                            "their checks; the good ones go on, and the run fails at its end naming them")


def _materialize(context: dg.AssetExecutionContext, check: str, outcome: step.StepOutcome, listing: str,
                 lineage: dict[str, Lineage | None], carried: Sequence[str]) -> dg.MaterializeResult:
    """The manifest (the asset's value) and the metadata the UI shows. The metadata stays the same size however
    many prompts a run has: the batch's facts and figures (numbers the UI plots run after run), at most
    MAX_PREVIEWS previews, and on the check at most MAX_TABLE_ROWS rows, failures first; the full list of
    outputs is `listing`, which the metadata points to."""
    manifest, rows = outcome.manifest(), outcome.rows(context.asset_key.to_user_string())
    metadata = {
        **numbers(outcome.facts()), "output_folder": dg.MetadataValue.path(outcome.items[0].path.rsplit("/", 1)[0]),
        "timings_s": dg.MetadataValue.json(dict(manifest.timings_s)), "items_json": dg.MetadataValue.path(str(listing)),
        "outputs_per_server": dg.MetadataValue.json(outcome.outputs_per_server()),
        PREVIEWS_LABEL: dg.MetadataValue.md(outcome.previews(MAX_PREVIEWS)), **lineage_metadata(lineage),
    }
    for item in outcome.broken:
        names = [c.name for c in item.checks if not c.passed]
        context.log.error(f"{item.path} failed check(s) {names}; the file is kept for inspection")
    skipped = {}
    if carried:
        skipped = {"skipped_inputs": dg.MetadataValue.int(len(carried)),
                   "skipped_inputs_why": dg.MetadataValue.md("\n".join(f"- {step.md_cell(line)}" for line in carried))}
    failing = bool(outcome.failed or outcome.broken)
    result = dg.AssetCheckResult(
        check_name=check, passed=not failing,
        metadata={**numbers(outcome.check_counts()), **rows_table("outputs", rows, with_asset=False),
                  "items_json": dg.MetadataValue.path(str(listing)), **skipped},
        description=outcome.verdict()[:2000],
    )
    return dg.MaterializeResult(value=manifest.to_json(), metadata={**metadata, **skipped}, check_results=[result])


def fail(context: dg.AssetExecutionContext, description: str, metadata: dict[str, Any], *,
         transient: bool, plan: StepPlan | None = None) -> NoReturn:
    """Fail the step; for a transient server fault, first ask Dagster to run the step again after the retry
    policy's backoff, as long as retries are left."""
    failure = dg.Failure(description=description, metadata=metadata, allow_retries=False)
    policy = gpu_retry_policy(plan.max_retries, plan.retry_delay) if plan else gpu_retry_policy()
    if transient and context.retry_number < policy.max_retries:
        wait = policy.calculate_delay(context.retry_number + 1)
        context.log.warning(f"{description} -- a transient server fault: trying the step again in "
                            f"{wait:.1f} s (retry {context.retry_number + 1} of {policy.max_retries})")
        raise dg.RetryRequested(max_retries=policy.max_retries, seconds_to_wait=wait) from failure
    raise failure from None


def failure_metadata(error: BaseException | None) -> dict[str, Any]:
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


def run_folder_of(context: dg.AssetExecutionContext, comfy: ComfyUIResource) -> outputs.RunFolder:
    """The run's folder on the output store, named after the run's creation time (the same for every step)."""
    record = context.instance.get_run_record_by_id(context.run_id)
    started = record.create_timestamp.timestamp() if record else time.time()
    try:
        return outputs.RunFolder.of(comfy.output_store, context.run_id, started)
    except settings.SettingError as exc:  # a malformed s3:// location
        raise dg.Failure(description=str(exc), allow_retries=False) from None


def _downstream_in_run(context: dg.AssetExecutionContext) -> bool:
    """An asset that depends on this one (directly or not) runs later in this run, and so carries its losses on."""
    graph = context.job_def.asset_layer.asset_graph
    below, frontier = set(), [context.asset_key]
    while frontier:
        children = graph.get(frontier.pop()).child_keys
        frontier += [key for key in children if key not in below]
        below |= set(children)
    steps = context.run.step_keys_to_execute
    executing = ({key for key in below if key.to_python_identifier() in steps} if steps is not None
                 else below & set(context.job_def.asset_layer.executable_asset_keys))
    return bool(executing)


@contextlib.contextmanager
def store_failure() -> Iterator[None]:
    """Writing to the output store failed (a missing bucket, denied access, an endpoint down): a Failure saying
    what to fix, never a traceback."""
    try:
        yield
    except StoreError as exc:
        raise dg.Failure(description=f"The output store failed: {exc}", allow_retries=False) from None


@contextlib.contextmanager
def permanent_failure(prefix: str = "") -> Iterator[None]:
    """Bad run config or step input: a Failure that says what is wrong, never retried."""
    try:
        yield
    except PromptError as exc:
        raise dg.Failure(description=f"{prefix}{exc}", allow_retries=False) from None
    except (WorkflowError, step.StepInputError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
