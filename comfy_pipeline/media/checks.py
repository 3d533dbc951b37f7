"""The quality validator: named pass/fail checks of a generated image or video against what was requested.

Bad files never raise here: a missing, truncated or mislabelled file comes back as failed checks whose
messages say what was found and what was expected, so the caller can report every problem at once.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfy_pipeline.media.probe import (
    ImageInfo,
    MediaError,
    VideoInfo,
    decode_first_and_last_frame,
    identify_image_format,
    probe_image,
    probe_video,
)

FPS_TOLERANCE = 0.01


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: Any
    expected: Any
    message: str


@dataclass(frozen=True)
class ImageThresholds:
    formats: tuple[str, ...] = ("PNG", "JPEG")
    min_bytes: int = 10 * 1024
    max_bytes: int = 50 * 1024**2


@dataclass(frozen=True)
class VideoThresholds:
    containers: tuple[str, ...] = ("mp4", "webm")
    min_bytes: int = 100 * 1024
    max_bytes: int = 500 * 1024**2


def check_image(
    path: str | Path,
    *,
    width: int | None = None,
    height: int | None = None,
    thresholds: ImageThresholds = ImageThresholds(),
) -> list[Check]:
    """Checks "format", "file_size", "decodes", "dimensions", always all four, in that order."""
    path = Path(path)
    size = file_size(path)
    info: ImageInfo | None = None
    decode_error = missing_message(path) if size is None else None
    if size is not None:
        try:
            info = probe_image(path)
        except MediaError as exc:
            decode_error = str(exc)
    return image_file_checks(
        path, size=size, info=info, decode_error=decode_error, width=width, height=height, thresholds=thresholds
    )


def image_file_checks(
    path: Path,
    *,
    size: int | None,
    info: ImageInfo | None,
    decode_error: str | None,
    width: int | None,
    height: int | None,
    thresholds: ImageThresholds,
) -> list[Check]:
    """The four file checks from what was probed (info) or why decoding failed."""
    fmt = identify_image_format(path) if size is not None else None
    return [
        _format_check(path, fmt, thresholds.formats, size, kind="image"),
        _size_check(path, size, thresholds.min_bytes, thresholds.max_bytes),
        _decodes_check(path, decode_error),
        _dimensions_check(path, info, width, height, decode_error),
    ]


def check_video(
    path: str | Path,
    *,
    width: int | None = None,
    height: int | None = None,
    frames: int | None = None,
    fps: float | None = None,
    thresholds: VideoThresholds = VideoThresholds(),
) -> list[Check]:
    """Checks "format", "file_size", "decodes", "duration", "frame_count", "fps", "dimensions", in that order."""
    path = Path(path)
    size = file_size(path)
    info: VideoInfo | None = None
    probe_error = missing_message(path) if size is None else None
    if size is not None:
        try:
            info = probe_video(path)
        except MediaError as exc:
            probe_error = str(exc)
    decode_error = probe_error
    if info is not None:
        try:
            decode_first_and_last_frame(path)
        except MediaError as exc:
            decode_error = str(exc)
    return video_file_checks(
        path,
        size=size,
        info=info,
        probe_error=probe_error,
        decode_error=decode_error,
        width=width,
        height=height,
        frames=frames,
        fps=fps,
        thresholds=thresholds,
    )


def video_file_checks(
    path: Path,
    *,
    size: int | None,
    info: VideoInfo | None,
    probe_error: str | None,
    decode_error: str | None,
    width: int | None,
    height: int | None,
    frames: int | None,
    fps: float | None,
    thresholds: VideoThresholds,
) -> list[Check]:
    """The seven file checks from what was probed and whether (and how) decoding failed."""
    return [
        _format_check(path, info and info.container, thresholds.containers, size, kind="video", error=probe_error),
        _size_check(path, size, thresholds.min_bytes, thresholds.max_bytes),
        _decodes_check(path, decode_error),
        _duration_check(path, info, probe_error),
        _frame_count_check(path, info, frames, probe_error),
        _fps_check(path, info, fps, probe_error),
        _dimensions_check(path, info, width, height, probe_error),
    ]


def file_size(path: Path) -> int | None:
    return path.stat().st_size if path.is_file() else None


def missing_message(path: Path) -> str:
    return f"{path}: file not found" if not path.exists() else f"{path}: not a regular file"


def _format_check(
    path: Path, found: str | None, allowed: tuple[str, ...], size: int | None, *, kind: str, error: str | None = None
) -> Check:
    expected = " or ".join(allowed)
    if size is None:
        return Check("format", False, None, expected, missing_message(path))
    if found is None:
        why = error or f"{path.name} is not a readable {kind}"
        return Check("format", False, None, expected, f"{why}; expected {expected}")
    if found not in allowed:
        return Check("format", False, found, expected, f"{path.name} is {found}, expected {expected}")
    return Check("format", True, found, expected, f"{found}")


def _size_check(path: Path, size: int | None, min_bytes: int, max_bytes: int) -> Check:
    expected = f"{min_bytes}..{max_bytes} bytes"
    if size is None:
        return Check("file_size", False, None, expected, missing_message(path))
    wanted = f"{_human(min_bytes)} to {_human(max_bytes)}"
    if size < min_bytes:
        return Check("file_size", False, size, expected, f"{path.name} is {_human(size)}, smaller than {wanted}")
    if size > max_bytes:
        return Check("file_size", False, size, expected, f"{path.name} is {_human(size)}, larger than {wanted}")
    return Check("file_size", True, size, expected, f"{_human(size)} (allowed {wanted})")


def _decodes_check(path: Path, error: str | None) -> Check:
    if error:
        return Check("decodes", False, False, True, error)
    return Check("decodes", True, True, True, f"{path.name} decodes")


def _duration_check(path: Path, info: VideoInfo | None, error: str | None) -> Check:
    if info is None:
        return Check("duration", False, None, "> 0", _not_checked(error))
    value = round(info.duration, 3)
    if info.duration <= 0:
        return Check("duration", False, value, "> 0", f"{path.name} has no duration ({value} s), expected > 0 s")
    return Check("duration", True, value, "> 0", f"{value} s")


def _frame_count_check(path: Path, info: VideoInfo | None, frames: int | None, error: str | None) -> Check:
    expected: Any = frames if frames is not None else "> 0"
    if info is None:
        return Check("frame_count", False, None, expected, _not_checked(error))
    ok = info.frame_count == frames if frames is not None else info.frame_count > 0
    message = f"{info.frame_count} frames" if ok else f"{path.name} has {info.frame_count} frames, expected {expected}"
    return Check("frame_count", ok, info.frame_count, expected, message)


def _fps_check(path: Path, info: VideoInfo | None, fps: float | None, error: str | None) -> Check:
    expected: Any = fps if fps is not None else "> 0"
    if info is None:
        return Check("fps", False, None, expected, _not_checked(error))
    value = round(info.fps, 3)
    ok = abs(info.fps - fps) <= FPS_TOLERANCE if fps is not None else info.fps > 0
    message = f"{value} fps" if ok else f"{path.name} plays at {value} fps, expected {expected}"
    return Check("fps", ok, value, expected, message)


def _dimensions_check(
    path: Path, info: ImageInfo | VideoInfo | None, width: int | None, height: int | None, error: str | None
) -> Check:
    expected = "any" if width is None and height is None else f"{width or '*'}x{height or '*'}"
    if info is None:
        return Check("dimensions", False, None, expected, _not_checked(error))
    value = f"{info.width}x{info.height}"
    ok = (width is None or info.width == width) and (height is None or info.height == height)
    message = value if ok else f"{path.name} is {value}, expected {expected}"
    return Check("dimensions", ok, value, expected, message)


def _not_checked(error: str | None) -> str:
    return f"not checked: {error}"


def _human(n: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
