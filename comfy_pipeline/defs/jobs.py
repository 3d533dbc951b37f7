"""Jobs: the whole pipeline, its two halves, and a connection check."""

import dagster as dg

from comfy_pipeline.defs.assets import generated_image, ltx2_video, prompt, validation_report
from comfy_pipeline.comfyui.errors import ComfyUIError
from comfy_pipeline.defs.resources import ComfyUIResource

image_to_video_job = dg.define_asset_job(
    "image_to_video_job",
    selection=dg.AssetSelection.assets(prompt, generated_image, ltx2_video, validation_report),
    description="Prompt -> Z-Image-Turbo image -> LTX-2 video -> validation report.",
)
image_generation_job = dg.define_asset_job(
    "image_generation_job",
    selection=dg.AssetSelection.assets(prompt, generated_image, validation_report),
    description="Prompt -> Z-Image-Turbo image -> validation report.",
)
video_generation_job = dg.define_asset_job(
    "video_generation_job",
    selection=dg.AssetSelection.assets(ltx2_video, validation_report),
    description="LTX-2 video from the image(s) in ops.ltx2_video.config.input_images -> validation report.",
)


@dg.op(description="Ask the ComfyUI server for its version, devices, VRAM and queue.")
def comfyui_connection(context: dg.OpExecutionContext, comfy: ComfyUIResource) -> dict:
    try:
        info = comfy.server_info()
        queue = comfy.get_client().queue()
    except ComfyUIError as exc:
        raise dg.Failure(description=str(exc), metadata={"comfyui_url": comfy.display_url}) from None
    info["queue_running"] = len(queue.get("queue_running", []))
    info["queue_pending"] = len(queue.get("queue_pending", []))
    context.log.info(
        f"ComfyUI {info['comfyui_version']} ({info['backend']}) at {info['url']}: {info['gpu']}, "
        f"VRAM {info['vram_free_gb']}/{info['vram_total_gb']} GB free, "
        f"queue {info['queue_running']} running + {info['queue_pending']} pending"
    )
    context.add_output_metadata(info)
    return info


@dg.job(description="Check that the ComfyUI server answers: version, devices, VRAM, queue.")
def comfyui_connection_job():
    comfyui_connection()
