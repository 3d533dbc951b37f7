"""What an image or a video really is: format, size, dimensions, frames, hash.

Images are read with Pillow (and fully decoded); videos with one ffprobe call for the metadata, a second
(demux-only) call only when the container does not record the frame count, and -- for the "decodes"
check -- two ffmpeg processes side by side: one decodes the first frame, the other seeks to the last
keyframe and decodes from there to the end. That keeps validating an LTX-2 clip well under a second.
"""

import hashlib
import json
import re
import subprocess
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import ffmpeg  # ffmpeg-python: builds the ffmpeg command lines
from PIL import Image

from comfy_pipeline.media.binaries import ffmpeg_command, ffprobe_path

QUIET = ("-nostdin", "-v", "error")  # global options: no stdin, errors only (any error output is a failure)

PROBE_TIMEOUT_S = 30.0
# Decoding the last frame means decoding its whole group of pictures, which may be the whole clip.
DECODE_TIMEOUT_S = 120.0

# ISO-BMFF major brands that mean "QuickTime", "3GPP" or "audio-only MPEG-4"; every other brand is MP4.
_MOV_BRANDS = {"qt"}
_3GP_PREFIXES = ("3gp", "3g2")
_M4A_BRANDS = {"m4a", "m4b", "m4p"}


class MediaError(Exception):
    """A media file is missing, unreadable or not what it claims to be. The message names the file."""


@dataclass(frozen=True)
class ImageInfo:
    path: Path
    format: str
    width: int
    height: int
    mode: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    container: str
    codec: str
    width: int
    height: int
    fps: float
    frame_count: int
    duration: float
    size_bytes: int
    sha256: str
    pix_fmt: str | None
    has_audio: bool


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: file not found")
    if not path.is_file():
        raise MediaError(f"{path}: not a regular file")
    return path


def probe_image(path: str | Path) -> ImageInfo:
    """Identify the image by its content (not its extension) and decode every pixel of it."""
    info, pixels = decode_image(path)
    pixels.close()
    return info


def decode_image(path: str | Path) -> tuple[ImageInfo, Image.Image]:
    """probe_image's findings and the decoded picture itself (the caller closes it): the content checks
    measure the pixels that were decoded for the "decodes" check instead of decoding the file twice."""
    path = _existing_file(path)
    try:
        # verify() checks the structure (PNG chunk CRCs); it leaves the image unusable, hence the reopen.
        with Image.open(path) as img:
            img.verify()
        img = Image.open(path)
        try:
            img.load()
        except BaseException:
            img.close()
            raise
        fmt, width, height, mode = img.format, img.width, img.height, img.mode
    except Image.UnidentifiedImageError:
        raise MediaError(f"{path}: not an image Pillow can read (unknown or corrupt header)") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ... for broken data
        raise MediaError(f"{path}: the {identify_image_format(path) or 'image'} does not decode ({exc})") from None
    info = ImageInfo(
        path=path,
        format=fmt or "unknown",
        width=width,
        height=height,
        mode=mode,
        size_bytes=path.stat().st_size,
        sha256=sha256_file(path),
    )
    return info, img


def identify_image_format(path: str | Path) -> str | None:
    """Pillow's format name ("PNG", "JPEG", ...) from the header alone, or None if it is not an image."""
    try:
        with Image.open(path) as img:
            return img.format
    except Exception:
        return None


@dataclass(frozen=True)
class ToolResult:
    returncode: int
    stdout: bytes
    stderr: str


def run_tool(args: list[str], *, path: Path, timeout: float) -> ToolResult:
    return run_tools([args], path=path, timeout=timeout)[0]


def run_tools(commands: list[list[str]], *, path: Path, timeout: float) -> list[ToolResult]:
    """Run several ffmpeg/ffprobe commands side by side (two cores decode two things at once) and wait for
    all of them, `timeout` in total. Whatever happens -- timeout, KeyboardInterrupt, run termination --
    no child is left running when this returns or raises."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for args in commands:
            procs.append(
                subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            )
        deadline = time.monotonic() + timeout
        outputs = [proc.communicate(timeout=max(deadline - time.monotonic(), 0.001)) for proc in procs]
    except subprocess.TimeoutExpired as exc:
        raise MediaError(f"{path}: {Path(str(exc.cmd[0])).name} did not finish within {timeout:g} s") from None
    finally:  # after success nothing is alive any more; after an exception, kill what is
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
    return [
        ToolResult(proc.returncode, stdout, stderr.decode("utf-8", errors="replace"))
        for proc, (stdout, stderr) in zip(procs, outputs)
    ]


def tool_error_summary(stderr: str, path: Path) -> str:
    """ffmpeg's complaint in one short line: no '[h264 @ 0x...]' prefixes, no file name, no repeats."""
    lines: list[str] = []
    for raw in stderr.splitlines():
        line = re.sub(r"\[[^\]]* @ 0x[0-9a-f]+\]\s*", "", raw).strip()
        line = line.replace(f"{path}: ", "").replace(f"{path}", "the file")
        if line and line not in lines:
            lines.append(line)
    summary = "; ".join(lines[-3:]) or "no error message"
    return summary if len(summary) <= 300 else summary[:297] + "..."


def probe_video(path: str | Path) -> VideoInfo:
    """Container, codec, size, fps, frame count and duration of the first video stream, from ffprobe."""
    path = _existing_file(path)
    result = run_tool(
        [ffprobe_path(), "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        path=path,
        timeout=PROBE_TIMEOUT_S,
    )
    if result.returncode != 0:
        raise MediaError(
            f"{path}: not a readable video; it may be truncated, corrupt or not a video at all "
            f"(ffprobe: {tool_error_summary(result.stderr, path)})"
        )
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise MediaError(f"{path}: ffprobe returned output that is not JSON") from None
    streams = data.get("streams", [])
    fmt = data.get("format", {})
    video = next(
        (
            s
            for s in streams
            if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")
        ),
        None,
    )
    if video is None:
        raise MediaError(f"{path}: contains no video stream (format {fmt.get('format_name', 'unknown')})")

    fps = _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate"))
    duration = _float(video.get("duration")) or _float(fmt.get("duration"))
    frame_count = _int(video.get("nb_frames")) or _count_packets(path)
    return VideoInfo(
        path=path,
        container=_container(path, fmt),
        codec=video.get("codec_name", "unknown"),
        width=int(video.get("width") or 0),
        height=int(video.get("height") or 0),
        fps=fps,
        frame_count=frame_count,
        duration=duration,
        size_bytes=path.stat().st_size,
        sha256=sha256_file(path),
        pix_fmt=video.get("pix_fmt"),
        has_audio=any(s.get("codec_type") == "audio" for s in streams),
    )


def _count_packets(path: Path) -> int:
    """Frame count for containers that do not store it (Matroska/WebM): demux, do not decode."""
    result = run_tool(
        [
            ffprobe_path(), "-v", "error", "-select_streams", "V:0", "-count_packets",
            "-show_entries", "stream=nb_read_packets", "-of", "json", str(path),
        ],
        path=path,
        timeout=PROBE_TIMEOUT_S,
    )
    if result.returncode != 0:
        raise MediaError(f"{path}: cannot count the video packets ({tool_error_summary(result.stderr, path)})")
    streams = json.loads(result.stdout).get("streams") or [{}]
    return _int(streams[0].get("nb_read_packets"))


def _container(path: Path, fmt: dict) -> str:
    """A short container name: ffprobe reports every ISO-BMFF file as "mov,mp4,m4a,3gp,3g2,mj2" and
    every Matroska file as "matroska,webm", so look at the major brand / EBML DocType to tell them apart."""
    names = fmt.get("format_name", "")
    if names.startswith("mov,mp4"):
        brand = fmt.get("tags", {}).get("major_brand", "").strip().lower()
        if not brand:  # old QuickTime files have no ftyp box
            return "mov" if path.suffix.lower() == ".mov" else "mp4"
        if brand in _MOV_BRANDS:
            return "mov"
        if brand.startswith(_3GP_PREFIXES):
            return "3gp"
        if brand in _M4A_BRANDS:
            return "m4a"
        return "mp4"
    if names.startswith("matroska"):
        return "webm" if _ebml_doctype(path) == "webm" else "matroska"
    return names.split(",")[0] or "unknown"


def _ebml_doctype(path: Path) -> str | None:
    """The DocType string of the EBML header at the start of a Matroska file ("webm" or "matroska")."""
    with open(path, "rb") as f:
        head = f.read(128)
    at = head.find(b"\x42\x82")  # DocType element id
    if at < 0 or at + 3 > len(head):
        return None
    size_byte = head[at + 2]
    if not size_byte & 0x80:  # only the one-byte size form is used for such a short string
        return None
    size = size_byte & 0x7F
    return head[at + 3 : at + 3 + size].decode("ascii", errors="replace")


def decode_first_and_last_frame(path: str | Path) -> None:
    """Decode the first and the last frame of the first video stream; MediaError if either fails.

    A truncated or corrupted stream shows up here: ffmpeg logs errors (or decodes nothing) even when
    its exit status is 0, so any error output counts as a failure. The last frame is reached with -sseof,
    which starts decoding at the last keyframe instead of at the beginning.
    """
    path = _existing_file(path)
    frames = {"map": "0:V:0", "f": "framecrc"}  # a checksum line per decoded frame, on stdout
    first, last = run_tools(
        [
            # one frame: no decoder threads needed
            ffmpeg_command(ffmpeg.input(str(path), threads=1).output("-", **frames, **{"frames:v": 1}), *QUIET),
            # 2 s before the end: short enough to be cheap, long enough to include the last frame even at
            # low frame rates (at 8 fps the last frame starts 0.125 s before the end).
            ffmpeg_command(ffmpeg.input(str(path), sseof=-2).output("-", **frames), *QUIET),
        ],
        path=path,
        timeout=DECODE_TIMEOUT_S,
    )
    for where, result in (("first", first), ("last", last)):
        decoded = sum(1 for line in result.stdout.splitlines() if line and not line.startswith(b"#"))
        if result.returncode != 0 or result.stderr.strip() or decoded == 0:
            problem = tool_error_summary(result.stderr, path) if result.stderr.strip() else "no frame came out"
            raise MediaError(f"{path}: the {where} frame does not decode; the file is truncated or corrupt ({problem})")


def _rate(value: str | None) -> float:
    try:
        rate = Fraction(value or "")
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(rate)


def _float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0
