"""The Dagster code location: `dagster dev -w workspace.yaml`, `dagster job execute -m comfy_pipeline ...`."""

import dagster as dg

from comfy_pipeline.defs.assets import generated_image, ltx2_video, prompt, validation_report
from comfy_pipeline.defs.io_manager import ManifestIOManager
from comfy_pipeline.defs.jobs import (
    comfyui_connection_job,
    image_generation_job,
    image_to_video_job,
    video_generation_job,
)
from comfy_pipeline.defs.loggers import progress_logger
from comfy_pipeline.defs.resources import ComfyUIResource, QualityThresholds
from comfy_pipeline.defs.schedules import daily_image_to_video_schedule
from comfy_pipeline.defs.sensors import failure_log_sensor, prompt_inbox_sensor

# Server and credentials come from the environment when a run uses them (comfy_pipeline/settings.py), so the
# definitions hold none of them: nothing secret can reach a stored run config from here.
comfy = ComfyUIResource()

defs = dg.Definitions(
    assets=[prompt, generated_image, ltx2_video, validation_report],
    jobs=[image_to_video_job, image_generation_job, video_generation_job, comfyui_connection_job],
    schedules=[daily_image_to_video_schedule],
    sensors=[prompt_inbox_sensor, failure_log_sensor],
    # Asset values are per-run JSON manifests (defs/io_manager.py), never one shared pickle per asset.
    resources={"comfy": comfy, "quality": QualityThresholds(), "io_manager": ManifestIOManager()},
    # `console` stays the default; `comfy-pipeline check` selects `progress` for a readable terminal.
    loggers={"console": dg.default_loggers()["console"], "progress": progress_logger},
    # Steps are HTTP calls to the GPU server: one process is enough, and it saves seconds per step.
    executor=dg.in_process_executor,
)
