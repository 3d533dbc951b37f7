"""Stop the schedule and sensors from feeding a broken setup: after 3 consecutive failed pipeline runs they
request nothing until a run succeeds or someone resets the breaker (touching the reset file).

A run, its automatic retries and its re-executions are one attempt at the same work: they count as one failure
(grouped by Dagster's root run id), and a success of any of them closes the breaker. Runs of the pipeline jobs
and of the UI's Materialize button (`__ASSET_JOB`) count alike.
"""

from dataclasses import dataclass
from pathlib import Path

import dagster as dg

THRESHOLD = 3
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
    failures: list[str] = []  # root run ids: one per failed piece of work, however often it was retried
    for record in records:  # newest first
        run = record.dagster_run
        if not is_pipeline_job(run.job_name):
            continue
        if record.create_timestamp.timestamp() <= reset_at or run.status == dg.DagsterRunStatus.SUCCESS:
            break
        root = run.root_run_id or run.run_id
        if root not in failures:
            failures.append(root)
        if len(failures) >= THRESHOLD:
            return BreakerState(
                True,
                tuple(failures),
                f"Circuit breaker open: the last {THRESHOLD} pipeline runs failed ({', '.join(f[:8] for f in failures)}). "
                f"Nothing is requested until a run succeeds (launch one by hand once the cause is fixed) "
                f"or the breaker is reset: `touch {marker}`.",
            )
    return BreakerState(False, tuple(failures), "circuit breaker closed")


def is_pipeline_job(job_name: str) -> bool:
    return job_name in PIPELINE_JOB_NAMES or job_name.startswith(ASSET_JOB_PREFIX)
