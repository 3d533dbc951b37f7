"""What each node class "computes": typed stand-ins (values.py) instead of tensors, real files at save nodes.

`evaluate()` runs one node. Samplers spend the simulated GPU time (with progress events) through the
context; save nodes paint and encode their pixels in a worker thread and write files the way ComfyUI
names them (`prefix_00001_.png`, a "video/x" prefix saves into subfolder "video"). Unknown classes pass
their first input through, so graphs with extra plumbing nodes still run.
"""

import dataclasses
import hashlib
import os
import random
import re
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfy_pipeline.simulator import render
from comfy_pipeline.simulator.content_faults import faulted_audio, faulted_images
from comfy_pipeline.simulator.values import Audio, Images, Latent, Token, Video

SAMPLER_CLASSES = {"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"}
PREVIEW_IMAGE = 1  # binary ws event type (server.BinaryEventTypes.PREVIEW_IMAGE)
PNG_FORMAT = 2
VIDEO_CONTAINERS = {"mp4": "mp4", "mkv": "matroska", "webm": "webm"}  # SaveVideo format -> ffmpeg muxer


@dataclass
class NodeContext:
    node_id: str
    class_type: str
    output_count: int  # len(object_info[class]["output"])
    input_dir: Path
    output_dir: Path
    temp_dir: Path
    run_blocking: Callable[..., Awaitable[Any]]  # run a blocking call in a worker thread
    sample: Callable[[int, Latent], Awaitable[None]]  # spend simulated GPU time over `steps` with progress
    send_binary: Callable[[bytes], Awaitable[None]]  # to the prompt's client socket
    output_faults: frozenset[str] = frozenset()  # the content faults (faults.CONTENT) drawn for this prompt


@dataclass
class NodeResult:
    outputs: tuple
    ui: dict | None = None  # {"images": [...], "animated"?: [True]} for output nodes


class SaveOutsideOutputFolder(Exception):
    pass


async def evaluate(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    handler = HANDLERS.get(ctx.class_type)
    if handler is None:
        first = next(iter(inputs.values()), Token(ctx.class_type))
        return NodeResult((first,) * ctx.output_count)
    return await handler(ctx, inputs)


def loader_file_hash(input_dir: Path, name: str) -> str:
    """LoadImage's IS_CHANGED: the file's sha256, so new bytes under the same name are not served from cache."""
    path = resolve_input_image(input_dir, name)
    if path is None or not path.is_file():
        return ""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolve_input_image(input_dir: Path, name: str, output_dir: Path | None = None,
                        temp_dir: Path | None = None) -> Path | None:
    """`folder_paths.get_annotated_filepath`: "x.png", "sub/x.png", "x.png [output]"; None if it escapes its folder."""
    base = input_dir
    for suffix, folder in ((" [output]", output_dir), (" [input]", input_dir), (" [temp]", temp_dir)):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            base = folder or input_dir.parent / suffix.strip(" []")
            break
    base = base.resolve()
    path = (base / name).resolve()
    if path == base or base not in path.parents:
        return None
    return path


# --- handlers -------------------------------------------------------------------------------------------

def _token(kind: str):
    async def handler(ctx: NodeContext, inputs: dict) -> NodeResult:
        return NodeResult((Token(kind),) * ctx.output_count)
    return handler


def _passthrough(name: str):
    async def handler(ctx: NodeContext, inputs: dict) -> NodeResult:
        return NodeResult((inputs[name],) * ctx.output_count)
    return handler


async def checkpoint_loader(ctx: NodeContext, inputs: dict) -> NodeResult:
    return NodeResult((Token("MODEL"), Token("CLIP"), Token("VAE")))


async def primitive(ctx: NodeContext, inputs: dict) -> NodeResult:
    return NodeResult((inputs["value"],))


async def clip_text_encode(ctx: NodeContext, inputs: dict) -> NodeResult:
    return NodeResult((Token("CONDITIONING", text=str(inputs.get("text", ""))),))


async def conditioning_zero_out(ctx: NodeContext, inputs: dict) -> NodeResult:
    return NodeResult((Token("CONDITIONING"),))


async def two_conditionings(ctx: NodeContext, inputs: dict) -> NodeResult:
    return NodeResult((inputs["positive"], inputs["negative"]))


async def cfg_guider(ctx: NodeContext, inputs: dict) -> NodeResult:
    return NodeResult((Token("GUIDER", text=inputs["positive"].text),))


async def random_noise(ctx: NodeContext, inputs: dict) -> NodeResult:
    return NodeResult((Token("NOISE", seed=int(inputs.get("noise_seed", 0))),))


async def scheduler(ctx: NodeContext, inputs: dict) -> NodeResult:
    return NodeResult((Token("SIGMAS", steps=int(inputs.get("steps", 1))),))


async def manual_sigmas(ctx: NodeContext, inputs: dict) -> NodeResult:
    values = re.findall(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", str(inputs.get("sigmas", "")))
    return NodeResult((Token("SIGMAS", steps=max(len(values) - 1, 1)),))


async def empty_latent(ctx: NodeContext, inputs: dict) -> NodeResult:
    return NodeResult((Latent(inputs["width"], inputs["height"], 1, inputs["batch_size"]),))


async def empty_video_latent(ctx: NodeContext, inputs: dict) -> NodeResult:
    return NodeResult((Latent(inputs["width"], inputs["height"], inputs["length"], inputs["batch_size"]),))


async def empty_audio_latent(ctx: NodeContext, inputs: dict) -> NodeResult:
    latent = Latent(0, 0, int(inputs.get("frames_number", 1)), int(inputs.get("batch_size", 1)), audio=True)
    return NodeResult((latent,))


async def img_to_video_inplace(ctx: NodeContext, inputs: dict) -> NodeResult:
    latent: Latent = inputs["latent"]
    if inputs.get("bypass"):
        return NodeResult((latent,))
    return NodeResult((dataclasses.replace(latent, image=inputs["image"]),))


async def concat_av_latent(ctx: NodeContext, inputs: dict) -> NodeResult:
    return NodeResult((inputs["video_latent"],))


async def separate_av_latent(ctx: NodeContext, inputs: dict) -> NodeResult:
    video: Latent = inputs["av_latent"]
    return NodeResult((video, Latent(0, 0, video.frames, video.batch, seed=video.seed, audio=True)))


async def crop_guides(ctx: NodeContext, inputs: dict) -> NodeResult:
    return NodeResult((inputs["positive"], inputs["negative"], inputs["latent"]))


async def ksampler(ctx: NodeContext, inputs: dict) -> NodeResult:
    latent: Latent = inputs["latent_image"]
    await ctx.sample(int(inputs["steps"]), latent)
    sampled = dataclasses.replace(latent, seed=int(inputs["seed"]), text=inputs["positive"].text)
    return NodeResult((sampled,))


async def sampler_custom_advanced(ctx: NodeContext, inputs: dict) -> NodeResult:
    latent: Latent = inputs["latent_image"]
    await ctx.sample(inputs["sigmas"].steps, latent)
    seed = inputs["noise"].seed if latent.seed is None else latent.seed * 1000003 + inputs["noise"].seed
    sampled = dataclasses.replace(latent, seed=seed, text=inputs["guider"].text or latent.text)
    return NodeResult((sampled, sampled))


async def latent_upsampler(ctx: NodeContext, inputs: dict) -> NodeResult:
    latent: Latent = inputs["samples"]
    return NodeResult((dataclasses.replace(latent, width=latent.width * 2, height=latent.height * 2),))


async def vae_decode(ctx: NodeContext, inputs: dict) -> NodeResult:
    latent: Latent = inputs["samples"]
    seed = latent.seed or 0
    if latent.frames > 1 or latent.image is not None:
        still = latent.image or Images(latent.width, latent.height, 1, ("generated", seed, latent.text))
        fitted = Images(latent.width, latent.height, 1, ("resize", still, "center", "bilinear"))
        images = Images(latent.width, latent.height, latent.frames * latent.batch, ("motion", fitted, seed))
    else:
        images = Images(latent.width, latent.height, latent.batch, ("generated", seed, latent.text))
    return NodeResult((images,))


async def load_image(ctx: NodeContext, inputs: dict) -> NodeResult:
    name = inputs["image"]
    path = resolve_input_image(ctx.input_dir, name, ctx.output_dir, ctx.temp_dir)
    if path is None:
        raise FileNotFoundError(f"Invalid image file: {name}")
    # Opening it is what makes a non-image fail here, at run time, like the real LoadImage.
    picture = await ctx.run_blocking(render.load_image_file, str(path))
    digest = await ctx.run_blocking(lambda: hashlib.sha256(path.read_bytes()).hexdigest())
    images = Images(picture.width, picture.height, 1, ("file", str(path), digest))
    return NodeResult((images, Token("MASK")))


async def empty_image(ctx: NodeContext, inputs: dict) -> NodeResult:
    return NodeResult((Images(inputs["width"], inputs["height"], inputs["batch_size"], ("solid", inputs["color"])),))


def _resized(images: Images, width: int, height: int, crop: str = "disabled", method: str = "lanczos") -> Images:
    width, height = max(int(width), 1), max(int(height), 1)
    return Images(width, height, images.count, ("resize", images, crop, method))


def _keep_aspect(images: Images, width: int, height: int) -> tuple[int, int]:
    """ComfyUI's convention: a 0 width or height is computed from the other one."""
    if width == 0 and height == 0:
        return images.width, images.height
    if width == 0:
        return round(images.width * height / images.height), height
    if height == 0:
        return width, round(images.height * width / images.width)
    return width, height


async def image_scale(ctx: NodeContext, inputs: dict) -> NodeResult:
    images: Images = inputs["image"]
    width, height = _keep_aspect(images, inputs["width"], inputs["height"])
    return NodeResult((_resized(images, width, height, inputs.get("crop", "disabled"), inputs["upscale_method"]),))


async def image_scale_by(ctx: NodeContext, inputs: dict) -> NodeResult:
    images: Images = inputs["image"]
    scale = float(inputs["scale_by"])  # each side round(side * scale_by), Python's rounding (half to even)
    width, height = round(images.width * scale), round(images.height * scale)
    return NodeResult((_resized(images, width, height, method=inputs["upscale_method"]),))


async def resize_image_mask(ctx: NodeContext, inputs: dict) -> NodeResult:
    images = inputs["input"]
    if not isinstance(images, Images):
        return NodeResult((images,))
    mode = inputs.get("resize_type")
    if mode == "scale dimensions":
        width, height = _keep_aspect(images, inputs["resize_type.width"], inputs["resize_type.height"])
        return NodeResult((_resized(images, width, height, inputs.get("resize_type.crop", "disabled")),))
    if mode == "scale by multiplier":
        scale = float(inputs["resize_type.multiplier"])
        return NodeResult((_resized(images, round(images.width * scale), round(images.height * scale)),))
    if mode in ("scale longer dimension", "scale shorter dimension"):
        key = "longer_size" if mode == "scale longer dimension" else "shorter_size"
        target = int(inputs[f"resize_type.{key}"])
        edge = max(images.width, images.height) if key == "longer_size" else min(images.width, images.height)
        scale = target / edge
        return NodeResult((_resized(images, round(images.width * scale), round(images.height * scale)),))
    return NodeResult((images,))


async def resize_by_longer_edge(ctx: NodeContext, inputs: dict) -> NodeResult:
    images: Images = inputs["images"]
    scale = int(inputs["longer_edge"]) / max(images.width, images.height)
    return NodeResult((_resized(images, round(images.width * scale), round(images.height * scale)),))


async def get_image_size(ctx: NodeContext, inputs: dict) -> NodeResult:
    images: Images = inputs["image"]
    return NodeResult((images.width, images.height, images.count))


async def image_invert(ctx: NodeContext, inputs: dict) -> NodeResult:
    images: Images = inputs["image"]
    return NodeResult((dataclasses.replace(images, source=("invert", images)),))


async def image_blur(ctx: NodeContext, inputs: dict) -> NodeResult:
    images: Images = inputs["image"]
    return NodeResult((dataclasses.replace(images, source=("blur", images, int(inputs["blur_radius"]))),))


async def repeat_image_batch(ctx: NodeContext, inputs: dict) -> NodeResult:
    images: Images = inputs["image"]
    return NodeResult((Images(images.width, images.height, images.count * int(inputs["amount"]), ("repeat", images)),))


async def audio_vae_decode(ctx: NodeContext, inputs: dict) -> NodeResult:
    latent = inputs.get("samples")
    seed = latent.seed if isinstance(latent, Latent) and latent.seed is not None else 0
    return NodeResult((Audio(seed=seed),))


async def create_video(ctx: NodeContext, inputs: dict) -> NodeResult:
    audio = inputs.get("audio")
    return NodeResult((Video(inputs["images"], float(inputs["fps"]), audio if isinstance(audio, Audio) else None),))


# --- save nodes --------------------------------------------------------------------------------------

def save_path(output_dir: Path, filename_prefix: str) -> tuple[Path, str, int, str]:
    """`folder_paths.get_save_image_path`: (folder, filename, next counter, subfolder)."""
    normalized = os.path.normpath(filename_prefix)
    subfolder, filename = os.path.dirname(normalized), os.path.basename(normalized)
    folder = Path(os.path.abspath(os.path.join(output_dir, subfolder)))
    root = Path(os.path.abspath(output_dir))
    if os.path.commonpath((root, folder)) != str(root):
        raise SaveOutsideOutputFolder(
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {folder}\n         output_dir: {root}"
            f"\n         commonpath: {os.path.commonpath((root, folder))}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(re.escape(filename) + r"_(\d+)_")
    counters = [int(m.group(1)) for name in os.listdir(folder) if (m := pattern.match(name))]
    return folder, filename, max(counters, default=0) + 1, subfolder


def write_atomically(destination: Path, write: Callable[[Path], None]) -> None:
    """Write via a temporary file in the same folder, then rename: readers never see half a file."""
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.partial")
    try:
        write(temporary)
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)


def _write_bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


async def _save_images(ctx: NodeContext, images: Images, prefix: str, folder_type: str) -> dict:
    images = faulted_images(images, ctx.output_faults)
    base = ctx.output_dir if folder_type == "output" else ctx.temp_dir
    folder, filename, counter, subfolder = save_path(base, prefix)
    results = []
    for index in range(images.count):
        name = f"{filename}_{counter:05}_.png"
        data = await ctx.run_blocking(lambda i=index: render.encode_png(render.render_frame(images, i)))
        await ctx.run_blocking(write_atomically, folder / name, _write_bytes(data))
        results.append({"filename": name, "subfolder": subfolder, "type": folder_type})
        counter += 1
    return {"images": results}


async def save_image(ctx: NodeContext, inputs: dict) -> NodeResult:
    images: Images = inputs["images"]
    return NodeResult((images,), await _save_images(ctx, images, inputs["filename_prefix"], "output"))


async def preview_image(ctx: NodeContext, inputs: dict) -> NodeResult:
    images: Images = inputs["images"]
    prefix = "ComfyUI_temp_" + "".join(random.choice(string.ascii_lowercase) for _ in range(5))
    return NodeResult((images,), await _save_images(ctx, images, prefix, "temp"))


async def save_image_websocket(ctx: NodeContext, inputs: dict) -> NodeResult:
    images = faulted_images(inputs["images"], ctx.output_faults)
    for index in range(images.count):
        data = await ctx.run_blocking(lambda i=index: render.encode_png(render.render_frame(images, i)))
        await ctx.send_binary(PREVIEW_IMAGE.to_bytes(4, "big") + PNG_FORMAT.to_bytes(4, "big") + data)
    return NodeResult(())


async def _save_file(ctx: NodeContext, prefix: str, extension: str, write: Callable[[Path], None]) -> dict:
    folder, filename, counter, subfolder = save_path(ctx.output_dir, prefix)
    name = f"{filename}_{counter:05}_.{extension}"
    await ctx.run_blocking(write_atomically, folder / name, write)
    return {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}], "animated": [True]}


async def save_video(ctx: NodeContext, inputs: dict) -> NodeResult:
    if "format" not in inputs:
        # The dynamic combo is not checked by validation; the real node then fails like this.
        raise TypeError("SaveVideo.execute() missing 1 required positional argument: 'format'")
    video: Video = inputs["video"]
    extension = {"auto": "mp4"}.get(inputs["format"], inputs["format"])
    if extension not in VIDEO_CONTAINERS:
        raise ValueError(f"unsupported video format {inputs['format']!r}")
    codec = inputs.get("format.codec", inputs.get("codec", "auto"))
    if codec not in ("h264", "av1"):
        codec = "av1" if extension == "webm" else "h264"
    container = VIDEO_CONTAINERS[extension]
    images = faulted_images(video.images, ctx.output_faults)
    audio = faulted_audio(video.audio, ctx.output_faults)
    write = lambda path: render.write_video(images, video.fps, codec, path, container, audio)  # noqa: E731
    return NodeResult((video,), await _save_file(ctx, inputs["filename_prefix"], extension, write))


async def save_webm(ctx: NodeContext, inputs: dict) -> NodeResult:
    images = faulted_images(inputs["images"], ctx.output_faults)
    codec = inputs.get("codec", "vp9")
    fps = float(inputs["fps"])
    audio = faulted_audio(None, ctx.output_faults)
    write = lambda path: render.write_video(images, fps, codec, path, "webm", audio)  # noqa: E731
    return NodeResult((images,), await _save_file(ctx, inputs["filename_prefix"], "webm", write))


def _save_animated(image_format: str, extension: str):
    async def handler(ctx: NodeContext, inputs: dict) -> NodeResult:
        images = faulted_images(inputs["images"], ctx.output_faults)
        fps = float(inputs["fps"])
        write = lambda path: path.write_bytes(render.encode_animated(images, fps, image_format))  # noqa: E731
        return NodeResult((images,), await _save_file(ctx, inputs["filename_prefix"], extension, write))
    return handler


HANDLERS: dict[str, Callable[[NodeContext, dict], Awaitable[NodeResult]]] = {
    "CheckpointLoaderSimple": checkpoint_loader,
    "UNETLoader": _token("MODEL"),
    "CLIPLoader": _token("CLIP"),
    "VAELoader": _token("VAE"),
    "LTXAVTextEncoderLoader": _token("CLIP"),
    "LTXVAudioVAELoader": _token("VAE"),
    "LatentUpscaleModelLoader": _token("LATENT_UPSCALE_MODEL"),
    "LoraLoaderModelOnly": _passthrough("model"),
    "ModelSamplingAuraFlow": _passthrough("model"),
    "KSamplerSelect": _token("SAMPLER"),
    "LTXVAudioVAEDecode": audio_vae_decode,
    "PrimitiveInt": primitive,
    "PrimitiveFloat": primitive,
    "PrimitiveString": primitive,
    "PrimitiveStringMultiline": primitive,
    "PrimitiveBoolean": primitive,
    "CLIPTextEncode": clip_text_encode,
    "ConditioningZeroOut": conditioning_zero_out,
    "LTXVConditioning": two_conditionings,
    "CFGGuider": cfg_guider,
    "RandomNoise": random_noise,
    "LTXVScheduler": scheduler,
    "ManualSigmas": manual_sigmas,
    "EmptySD3LatentImage": empty_latent,
    "EmptyLatentImage": empty_latent,
    "EmptyLTXVLatentVideo": empty_video_latent,
    "LTXVEmptyLatentAudio": empty_audio_latent,
    "LTXVImgToVideoInplace": img_to_video_inplace,
    "LTXVConcatAVLatent": concat_av_latent,
    "LTXVSeparateAVLatent": separate_av_latent,
    "LTXVCropGuides": crop_guides,
    "KSampler": ksampler,
    "SamplerCustomAdvanced": sampler_custom_advanced,
    "LTXVLatentUpsampler": latent_upsampler,
    "VAEDecode": vae_decode,
    "LoadImage": load_image,
    "EmptyImage": empty_image,
    "ImageScale": image_scale,
    "ImageScaleBy": image_scale_by,
    "ResizeImageMaskNode": resize_image_mask,
    "ResizeImagesByLongerEdge": resize_by_longer_edge,
    "GetImageSize": get_image_size,
    "ImageInvert": image_invert,
    "ImageBlur": image_blur,
    "LTXVPreprocess": _passthrough("image"),
    "RepeatImageBatch": repeat_image_batch,
    "CreateVideo": create_video,
    "SaveImage": save_image,
    "PreviewImage": preview_image,
    "SaveImageWebsocket": save_image_websocket,
    "SaveVideo": save_video,
    "SaveWEBM": save_webm,
    "SaveAnimatedWEBP": _save_animated("WEBP", "webp"),
    "SaveAnimatedPNG": _save_animated("PNG", "png"),
}
