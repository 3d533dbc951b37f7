"""Jobs: the whole pipeline, its two halves, and a connection check."""

import dagster as dg

from comfy_pipeline.comfyui.errors import ComfyUIError
from comfy_pipeline.defs.resources import SERVER_TAG, ComfyUIResource, gpu_pool

# The run queue limits runs per server set (deploy/dagster.yaml, tag_concurrency_limits on SERVER_TAG).
SERVER_TAGS = {SERVER_TAG: gpu_pool()}

image_to_video_job = dg.define_asset_job(
    "image_to_video_job",
    tags=SERVER_TAGS,
    selection=dg.AssetSelection.assets("prompt", "generated_image", "ltx2_video", "validation_report"),
    description="Prompt -> Z-Image-Turbo image -> LTX-2 video -> validation report.",
)
image_generation_job = dg.define_asset_job(
    "image_generation_job",
    tags=SERVER_TAGS,
    selection=dg.AssetSelection.assets("prompt", "generated_image", "validation_report"),
    description="Prompt -> Z-Image-Turbo image -> validation report.",
)
video_generation_job = dg.define_asset_job(
    "video_generation_job",
    tags=SERVER_TAGS,
    selection=dg.AssetSelection.assets("ltx2_video", "validation_report"),
    description="LTX-2 video from the image(s) in ops.ltx2_video.config.input_images -> validation report.",
)


@dg.op(description="Ask the ComfyUI server for its version, devices, VRAM and queue.")
def comfyui_connection(context: dg.OpExecutionContext, comfy: ComfyUIResource) -> dict:
    try:
        info = comfy.server_info()
        queues = [client.queue() for client in comfy.get_clients() if client.url in info.servers]
    except ComfyUIError as exc:
        raise dg.Failure(description=str(exc), metadata={"comfyui_url": comfy.display_url}) from None
    running = sum(len(q.get("queue_running", [])) for q in queues)
    pending = sum(len(q.get("queue_pending", [])) for q in queues)
    for problem in info.unreachable:
        context.log.warning(f"not answering: {problem}")
    context.log.info(
        f"ComfyUI {info.comfyui_version} ({info.backend}) at {info.url}: {info.gpu}, "
        f"VRAM {info.vram_free_gb}/{info.vram_total_gb} GB free, queue {running} running + {pending} pending"
    )
    found = {**info.to_json(), "queue_running": running, "queue_pending": pending}  # the op's output: JSON
    context.add_output_metadata(found)
    return found


@dg.job(description="Check that the ComfyUI server answers: version, devices, VRAM, queue.")
def comfyui_connection_job():
    comfyui_connection()
