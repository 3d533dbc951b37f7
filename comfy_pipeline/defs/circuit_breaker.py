"""Stop the schedule and sensors from feeding a broken setup: after 3 consecutive failed pipeline runs they
request nothing until a run succeeds or someone resets the breaker (touching the reset file, or on an object store
writing the reset object: its modified time is when it was reset).

A run, its automatic retries and its re-executions are one attempt at the same work: they count as one failure
(grouped by Dagster's root run id), and a success of any of them closes the breaker. Runs of the pipeline jobs
and of the UI's Materialize button (`__ASSET_JOB`) count alike.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from comfy_pipeline.batch.breaker import THRESHOLD, Breaker
from comfy_pipeline.storage import Store, StoreError, as_store

PIPELINE_JOB_NAMES = ("image_to_video_job", "image_generation_job", "video_generation_job")
ASSET_JOB_PREFIX = "__ASSET_JOB"  # what the UI's Materialize button and `dg launch --assets` run
RESET_FILE = "circuit_breaker_reset"


@dataclass(frozen=True)
class BreakerState:
    open: bool
    failed_run_ids: tuple[str, ...]
    message: str
    warning: str = ""  # the reset marker could not be read (the store's error, which names the fix)


def reset_path(output_dir: str | Path) -> Path:
    """The reset file of a local output folder."""
    return Path(output_dir) / RESET_FILE


def reset(where: "Store | str | Path") -> Path | str:
    """Reset the breaker now: the file touched (its path), or on an object store the object rewritten (its URI)."""
    store = as_store(where)
    if store.local:
        path = reset_path(store.location)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        return path
    # The marker describes state, it is no output: rewriting it is what a reset is.
    store.put_bytes(RESET_FILE, time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()).encode(), replace=True)
    return store.uri(RESET_FILE)


def _reset_at(store: Store) -> tuple[float, str]:
    """When the breaker was last reset (0: never), and a warning when the marker could not be read."""
    if store.local:
        marker = reset_path(store.location)
        return (marker.stat().st_mtime if marker.exists() else 0.0), ""
    try:
        stored = store.stat(RESET_FILE)
    except StoreError as exc:  # a run would fail on the same store: its failure names the problem too
        return 0.0, f"could not read the circuit breaker's reset marker: {exc}"
    return (stored.modified if stored else 0.0), ""


def _how_to_reset(store: Store) -> str:
    if store.local:
        return f"`touch {reset_path(store.location)}`"
    uri = store.uri(RESET_FILE)
    return f"write any object to {uri} (e.g. `echo reset | aws s3 cp - {uri}`)"


def breaker_state(instance: dg.DagsterInstance, where: "Store | str | Path") -> BreakerState:
    """Open after THRESHOLD consecutive failed attempts since the last reset. `where` is the output folder or
    store the reset marker lives in."""
    store = as_store(where)
    reset_at, warning = _reset_at(store)
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]), limit=200
    )
    # Newest first; a run made before the last reset ends the history like a success. The root run id is the key:
    # a run, its retries and its re-executions are one attempt.
    outcomes = (
        (record.dagster_run.root_run_id or record.dagster_run.run_id,
         record.dagster_run.status == dg.DagsterRunStatus.SUCCESS or record.create_timestamp.timestamp() <= reset_at)
        for record in records if is_pipeline_job(record.dagster_run.job_name)
    )
    breaker = Breaker.from_history(outcomes, THRESHOLD)
    failures = tuple(reversed(breaker.failures))  # newest first, as they are listed
    if breaker.open:
        return BreakerState(
            True,
            failures,
            f"Circuit breaker open: the last {THRESHOLD} pipeline runs failed "
            f"({', '.join(f[:8] for f in failures)}). "
            f"Nothing is requested until a run succeeds (launch one by hand once the cause is fixed) "
            f"or the breaker is reset: {_how_to_reset(store)}." + (f" ({warning})" if warning else ""),
            warning,
        )
    return BreakerState(False, failures, "circuit breaker closed", warning)


def is_pipeline_job(job_name: str) -> bool:
    return job_name in PIPELINE_JOB_NAMES or job_name.startswith(ASSET_JOB_PREFIX)
