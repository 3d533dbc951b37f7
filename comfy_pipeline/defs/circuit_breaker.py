"""Stop the schedule and sensors from feeding a broken setup: after 3 consecutive failed pipeline runs they
request nothing until a run succeeds or someone resets the breaker (touching the reset file).

A run, its automatic retries and its re-executions are one attempt at the same work: they count as one failure
(grouped by Dagster's root run id), and a success of any of them closes the breaker. Runs of the pipeline jobs
and of the UI's Materialize button (`__ASSET_JOB`) count alike.
"""

from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from comfy_pipeline.batch.breaker import THRESHOLD, Breaker

PIPELINE_JOB_NAMES = ("image_to_video_job", "image_generation_job", "video_generation_job")
ASSET_JOB_PREFIX = "__ASSET_JOB"  # what the UI's Materialize button and `dg launch --assets` run
RESET_FILE = "circuit_breaker_reset"


@dataclass(frozen=True)
class BreakerState:
    open: bool
    failed_run_ids: tuple[str, ...]
    message: str


def reset_path(output_dir: str | Path) -> Path:
    return Path(output_dir) / RESET_FILE


def reset(output_dir: str | Path) -> Path:
    path = reset_path(output_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def breaker_state(instance: dg.DagsterInstance, output_dir: str | Path) -> BreakerState:
    marker = reset_path(output_dir)
    reset_at = marker.stat().st_mtime if marker.exists() else 0.0
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
            f"or the breaker is reset: `touch {marker}`.",
        )
    return BreakerState(False, failures, "circuit breaker closed")


def is_pipeline_job(job_name: str) -> bool:
    return job_name in PIPELINE_JOB_NAMES or job_name.startswith(ASSET_JOB_PREFIX)
