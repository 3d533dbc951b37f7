"""The daily schedule: the prompt library through the whole pipeline, once a day."""

import dagster as dg

from comfy_pipeline import settings
from comfy_pipeline.defs.circuit_breaker import breaker_state
from comfy_pipeline.defs.jobs import image_to_video_job
from comfy_pipeline.defs.resources import ComfyUIResource

DAILY_CRON, TIMEZONE = settings.daily_schedule()
_SUBMITTED = [status for status in dg.DagsterRunStatus if status != dg.DagsterRunStatus.NOT_STARTED]


@dg.schedule(
    cron_schedule=DAILY_CRON,
    execution_timezone=TIMEZONE,
    job=image_to_video_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Runs the prompt library through image_to_video_job every day (02:00 UTC unless "
    "COMFY_PIPELINE_DAILY_CRON / COMFY_PIPELINE_TIMEZONE say otherwise); one run per day.",
)
def daily_image_to_video_schedule(context: dg.ScheduleEvaluationContext, comfy: ComfyUIResource):
    try:
        store = comfy.output_store
    except settings.SettingError as exc:  # a malformed output location: its runs would fail on it too
        return dg.SkipReason(f"Cannot run: {exc}")
    breaker = breaker_state(context.instance, store)
    if breaker.warning:
        context.log.warning(breaker.warning)
    if breaker.open:
        return dg.SkipReason(breaker.message)
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    # Dagster scopes a schedule's run key to one tick, so a cron that ticks twice a day would run twice: skip a day
    # that has its run (a run created but never submitted, NOT_STARTED, is the same tick retried: let it through).
    ran = context.instance.get_run_records(dg.RunsFilter(tags={"comfy_pipeline/date": day}, statuses=_SUBMITTED),
                                           limit=1)
    if ran:
        return dg.SkipReason(f"The run of {day} exists already ({ran[0].dagster_run.run_id}): one run per day.")
    return dg.RunRequest(
        run_key=f"daily-{day}",
        run_config={"ops": {"prompt": {"config": {"use_library": True}}}},
        tags={"comfy_pipeline/date": day},
    )
