"""Paint `Images` recipes into pixels and encode them: PNG, MP4/WebM (ffmpeg), animated WebP/PNG (Pillow).

Everything here is blocking and CPU-bound; the executor runs it in a worker thread.
"""

import functools
import hashlib
import io
import math
import random
import subprocess
from fractions import Fraction
from pathlib import Path

import ffmpeg  # ffmpeg-python: builds the encoder's command line
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from comfy_pipeline.media.binaries import ffmpeg_command
from comfy_pipeline.simulator.resample import common_upscale
from comfy_pipeline.simulator.values import Audio, Images

LABEL = "ComfyUI simulator"
PUSH_IN = 0.3  # a clip's last frame shows 1 / (1 + PUSH_IN) of its start image's width, magnified
DRIFT = 0.08  # and its centre has moved this share of the frame, in a direction drawn from the seed


def render_frame(images: Images, index: int) -> Image.Image:
    """Frame `index` of the batch as an RGB image of exactly images.width x images.height."""
    frame = _paint(images, index)
    if frame.size != (images.width, images.height):
        frame = frame.resize((images.width, images.height), Image.Resampling.BILINEAR)
    return frame


def _paint(images: Images, index: int) -> Image.Image:
    kind, *args = images.source
    size = (images.width, images.height)
    if kind == "solid":
        rgb = args[0]
        return Image.new("RGB", size, ((rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255))
    if kind == "generated":
        seed, text = args
        return generated_image(size, seed + index, text)
    if kind == "file":
        return load_image_file(args[0])
    if kind == "resize":
        inner, crop, method = args
        return common_upscale(render_frame(inner, index), size, method, crop)
    if kind == "invert":
        return ImageOps.invert(render_frame(args[0], index))
    if kind == "blur":
        inner, radius = args
        return render_frame(inner, index).filter(ImageFilter.GaussianBlur(radius))
    if kind == "repeat":
        inner = args[0]
        return render_frame(inner, index % max(inner.count, 1))
    if kind == "pixels":
        frames = args[0]
        return Image.frombytes("RGB", size, frames[index % len(frames)])
    if kind == "motion":
        return _motion_frame(images, index)
    raise ValueError(f"unknown image recipe {kind!r}")


def to_pixels(images: Images) -> Images:
    """The same batch with every frame painted now: what a real node returns (a tensor), not a recipe."""
    frames = tuple(render_frame(images, index).tobytes() for index in range(images.count))
    return Images(images.width, images.height, images.count, ("pixels", frames))


def load_image_file(path: str) -> Image.Image:
    """Open like ComfyUI's LoadImage (EXIF orientation applied); a non-image raises PIL.UnidentifiedImageError."""
    with Image.open(path) as opened:
        return ImageOps.exif_transpose(opened).convert("RGB")


@functools.lru_cache(maxsize=4)
def _motion_start(inner: Images) -> Image.Image:
    """Frame 0 of a clip: the start image, already fitted to the frame (scale to cover, centre crop)."""
    return render_frame(inner, 0)


def _motion_frame(images: Images, index: int) -> Image.Image:
    """A slow push-in with a seeded drift: frame 0 is the start image itself (what an image-to-video model
    keeps), every later frame shows a slightly smaller, shifted window of it, so consecutive frames differ."""
    inner, seed = images.source[1], images.source[2]
    start = _motion_start(inner)
    if index == 0:
        return start.copy()
    progress = index / max(images.count - 1, 1)
    width, height = images.width, images.height
    scale = 1 + PUSH_IN * progress
    window_w, window_h = width / scale, height / scale
    angle = random.Random(seed).uniform(0, 2 * math.pi)
    centre_x = width / 2 + math.cos(angle) * DRIFT * width * progress
    centre_y = height / 2 + math.sin(angle) * DRIFT * height * progress
    centre_x = min(max(centre_x, window_w / 2), width - window_w / 2)  # the window stays inside the picture
    centre_y = min(max(centre_y, window_h / 2), height - window_h / 2)
    box = (centre_x - window_w / 2, centre_y - window_h / 2, centre_x + window_w / 2, centre_y + window_h / 2)
    frame = start.resize((width, height), Image.Resampling.BILINEAR, box=box)
    _draw_label(frame, [f"{LABEL} - image to video"], font_size=max(8, min(width, height) // 40))
    return frame


def generated_image(size: tuple[int, int], seed: int, text: str) -> Image.Image:
    """A seeded, prompt-dependent picture: soft colour fields plus fine grain, labelled as simulated."""
    width, height = size
    digest = hashlib.sha256(f"{seed}\0{text}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    coarse = rng.integers(0, 256, size=(max(height // 96, 2), max(width // 96, 2), 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    grain_shape = (max(height // 4, 1), max(width // 4, 1), 1)
    grain_small = Image.fromarray(rng.integers(0, 48, size=grain_shape, dtype=np.uint8)[:, :, 0])
    grain = np.asarray(grain_small.resize(size, Image.Resampling.NEAREST), dtype=np.int16)[:, :, None]
    pixels = np.clip(base + grain - 24, 0, 255).astype(np.uint8)
    picture = Image.fromarray(pixels, "RGB")
    snippet = text if len(text) <= 60 else text[:57] + "..."
    _draw_label(picture, [LABEL, f"seed {seed}", snippet])
    return picture


def _draw_label(picture: Image.Image, lines: list[str], font_size: int | None = None) -> None:
    font_size = font_size or max(10, min(picture.size) // 18)
    try:
        font = ImageFont.load_default(size=font_size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed-size bitmap font
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(picture)
    x = y = max(4, font_size // 2)
    text = "\n".join(line for line in lines if line)
    box = draw.multiline_textbbox((x, y), text, font=font)
    pad = max(2, font_size // 4)
    draw.rectangle((box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad), fill=(0, 0, 0))
    draw.multiline_text((x, y), text, font=font, fill=(255, 255, 255))


def encode_png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=4)  # ComfyUI's SaveImage level
    return buffer.getvalue()


def encode_animated(images: Images, fps: float, image_format: str) -> bytes:
    """SaveAnimatedWEBP / SaveAnimatedPNG: all frames in one animated file."""
    frames = [render_frame(images, i) for i in range(images.count)]
    buffer = io.BytesIO()
    duration = round(1000 / fps)
    if image_format == "WEBP":
        frames[0].save(buffer, format="WEBP", save_all=True, append_images=frames[1:], duration=duration, lossless=True)
    else:
        frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:], duration=duration,
                       compress_level=4)
    return buffer.getvalue()


# codec -> ffmpeg encoder arguments. H.264 like SaveVideo's mp4/auto, AV1 for SaveVideo webm, VP9 for SaveWEBM.
ENCODERS: dict[str, dict[str, object]] = {
    "h264": {"c:v": "libx264", "preset": "ultrafast", "crf": 23},
    "av1": {"c:v": "libaom-av1", "cpu-used": 8, "row-mt": 1, "crf": 35, "b:v": 0},
    "vp9": {"c:v": "libvpx-vp9", "deadline": "realtime", "cpu-used": 8, "crf": 32, "b:v": 0},
}


AUDIO_RATE = 48000  # LTX-2's audio VAE decodes 48 kHz stereo
AUDIO_CODECS = {"mp4": "aac", "matroska": "aac", "webm": "libopus"}  # what SaveVideo's PyAV encoder picks


def write_video(images: Images, fps: float, codec: str, destination: Path, container: str,
                audio: Audio | None = None) -> None:
    """Encode every frame with ffmpeg (raw RGB on stdin) into `destination` (muxer `container`), yuv420p at `fps`;
    with `audio`, a sound track lasting the clip (made by ffmpeg itself: a tone, or zeros when silent)."""
    rate = Fraction(fps).limit_denominator(1001)
    raw = ffmpeg.input("-", f="rawvideo", pix_fmt="rgb24", s=f"{images.width}x{images.height}",
                       framerate=f"{rate.numerator}/{rate.denominator}")
    muxing = {"movflags": "+faststart"} if container == "mp4" else {}  # playable while downloading
    streams, sound = [raw], {}
    if audio is not None:
        streams.append(ffmpeg.input(_audio_source(audio), f="lavfi", t=f"{images.count / fps:.6f}"))
        sound = {"c:a": AUDIO_CODECS[container], "ar": AUDIO_RATE, "ac": 2}
    encode = ffmpeg.output(*streams, str(destination), **ENCODERS[codec], pix_fmt="yuv420p", f=container,
                           **sound, **muxing)
    command = ffmpeg_command(encode, "-hide_banner", "-loglevel", "error", "-y")
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdin is not None
    try:
        for index in range(images.count):
            process.stdin.write(render_frame(images, index).tobytes())
    except BrokenPipeError:
        pass  # ffmpeg died; its stderr below says why
    finally:
        process.stdin.close()
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.wait() != 0:
        raise RuntimeError(f"ffmpeg failed to encode the video: {stderr.strip()[-500:]}")


def _audio_source(audio: Audio) -> str:
    """An ffmpeg lavfi source: a seeded note (220-440 Hz, 1/8 of full scale), or digital silence."""
    if audio.silent:
        return f"anullsrc=r={AUDIO_RATE}:cl=stereo"
    frequency = 220 * 2 ** ((audio.seed % 12) / 12)
    return f"sine=f={frequency:.2f}:r={AUDIO_RATE}"
