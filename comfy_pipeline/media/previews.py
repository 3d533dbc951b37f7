"""Small previews for the Dagster UI: markdown images with the picture inlined as a JPEG data URI.

Dagster stores metadata in its event log, so a preview must stay small: the JPEG quality (and, as a last
resort, the size) is lowered until the base64 text fits in PREVIEW_BUDGET_CHARS.
"""

import base64
import io
import math
from pathlib import Path

import ffmpeg  # ffmpeg-python: builds the ffmpeg command line
from PIL import Image

from comfy_pipeline.media.binaries import ffmpeg_command
from comfy_pipeline.media.probe import (
    DECODE_TIMEOUT_S,
    QUIET,
    MediaError,
    probe_image,
    probe_video,
    run_tool,
    tool_error_summary,
)

PREVIEW_BUDGET_CHARS = 40_000
_QUALITIES = (80, 65, 50, 35)


def image_preview_markdown(path: str | Path, *, max_side: int = 320) -> str:
    """A thumbnail of the image whose longer side is at most `max_side` pixels."""
    path = Path(path)
    probe_image(path)  # a clear MediaError for a missing or broken file
    with Image.open(path) as img:
        img.thumbnail((max_side, max_side))
        thumb = _to_rgb(img)
    return _markdown(thumb)


def video_preview_markdown(path: str | Path, *, frames: int = 8, columns: int = 4, tile_width: int = 240) -> str:
    """A contact sheet of `frames` evenly spaced frames (first and last included), `columns` per row."""
    path = Path(path)
    info = probe_video(path)
    if info.frame_count < 1 or info.width < 1 or info.height < 1:
        raise MediaError(f"{path}: has no frames to preview")
    count = max(1, min(frames, info.frame_count))
    tile_height = max(2, round(tile_width * info.height / info.width / 2) * 2)
    wanted = sorted({round(i * (info.frame_count - 1) / max(count - 1, 1)) for i in range(count)})
    columns = max(1, min(columns, len(wanted)))
    rows = math.ceil(len(wanted) / columns)
    return _markdown(_contact_sheet(path, wanted, tile_width, tile_height, columns, rows))


def _contact_sheet(path: Path, indices: list[int], width: int, height: int, columns: int, rows: int) -> Image.Image:
    """The frames at `indices`, scaled and tiled by ffmpeg in one sequential pass over the video.

    One pass is cheaper than one seek per frame: with long GOPs every seek would decode from the keyframe.
    The tile filter emits a single picture, so the output frame rate cannot duplicate or drop anything.
    """
    select = "+".join(f"eq(n\\,{n})" for n in indices)
    sheet = ffmpeg.input(str(path)).output(
        "-", map="0:V:0", vf=f"select='{select}',scale={width}:{height},tile={columns}x{rows}",
        f="rawvideo", pix_fmt="rgb24", **{"frames:v": 1},
    )
    result = run_tool(
        ffmpeg_command(sheet, *QUIET),
        path=path,
        timeout=DECODE_TIMEOUT_S,
    )
    size = (columns * width, rows * height)
    if result.returncode != 0 or len(result.stdout) != size[0] * size[1] * 3:
        raise MediaError(f"{path}: cannot extract preview frames ({tool_error_summary(result.stderr, path)})")
    return Image.frombytes("RGB", size, result.stdout)


def _to_rgb(img: Image.Image) -> Image.Image:
    """JPEG has no alpha: put transparent images on white rather than on black."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, "white")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def _markdown(img: Image.Image) -> str:
    while True:
        for quality in _QUALITIES:
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=quality, optimize=True)
            encoded = base64.b64encode(buf.getvalue()).decode("ascii")
            if len(encoded) <= PREVIEW_BUDGET_CHARS:
                return f"![preview](data:image/jpeg;base64,{encoded})"
        img = img.resize((max(1, img.width // 2), max(1, img.height // 2)))
