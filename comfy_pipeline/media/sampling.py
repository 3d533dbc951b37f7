"""One ffmpeg pass over a video for the content checks: every frame decoded, a few handed over, the sound measured.

The pass decodes the whole clip (inter-coded frames cannot be decoded without the ones before them), keeps one
frame every SAMPLE_INTERVAL_S, scales it down to SAMPLE_WIDTH pixels across and writes it as a PPM picture on
stdout; the first audio stream, if any, goes through volumedetect in the same process. Because every frame is
decoded, a clean pass also proves the file decodes from its first frame to its last.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import ffmpeg  # ffmpeg-python: builds the ffmpeg command lines
import numpy as np

from comfy_pipeline.media.binaries import ffmpeg_command
from comfy_pipeline.media.probe import DECODE_TIMEOUT_S, MediaError, run_tool, tool_error_summary

SAMPLE_INTERVAL_S = 0.2  # one sampled frame every 0.2 s: 25 frames of a 5 s clip
SAMPLE_WIDTH = 160  # pixels across the sampled frames (never scaled up)

# Each log line carries its level ("[error]", "[info]", ...): errors mean a bad file, info lines hold volumedetect.
LOGGING = ("-nostdin", "-nostats", "-hide_banner", "-loglevel", "level+info")
_ERROR_LEVELS = ("[error]", "[fatal]", "[panic]")
_MEAN_VOLUME = re.compile(r"mean_volume:\s*(-?[\d.]+|-inf) dB")


@dataclass(frozen=True)
class VideoSample:
    frames: list[np.ndarray]  # HxWx3 uint8, first frame first, SAMPLE_INTERVAL_S apart
    audio_level_db: float | None  # mean volume of the first audio stream, None when there is none or it is empty


def sample_video(path: str | Path, *, audio: bool) -> VideoSample:
    """Decode the whole clip once; MediaError (naming the file) if it does not decode cleanly."""
    path = Path(path)
    stream = ffmpeg.input(str(path))
    video = (
        stream["V:0"]
        .filter("select", f"isnan(prev_selected_t)+gte(t-prev_selected_t,{SAMPLE_INTERVAL_S - 0.001})")
        .filter("scale", f"min({SAMPLE_WIDTH},iw)", -2, flags="area")
        .filter("format", "rgb24")
    )
    outputs = [video.output("pipe:1", f="image2pipe", vcodec="ppm", fps_mode="passthrough")]
    if audio:
        outputs.append(stream["a:0"].filter("volumedetect").output("-", f="null"))
    command = ffmpeg_command(ffmpeg.merge_outputs(*outputs), *LOGGING)
    result = run_tool(command, path=path, timeout=DECODE_TIMEOUT_S)
    errors = "\n".join(line for line in result.stderr.splitlines() if any(lvl in line for lvl in _ERROR_LEVELS))
    frames = _ppm_frames(result.stdout)
    if result.returncode != 0 or errors or not frames:
        # No frame at all: the start is broken; frames and then an error: it breaks before its end.
        where = "the first frame does not decode" if not frames else "the clip does not decode to its end"
        problem = tool_error_summary(_without_levels(errors), path) if errors else "no frame came out"
        raise MediaError(f"{path}: {where}; the file is truncated or corrupt ({problem})")
    level = None
    if audio:
        match = _MEAN_VOLUME.search(result.stderr)
        if match:
            level = -91.0 if match.group(1) == "-inf" else float(match.group(1))
    return VideoSample(frames=frames, audio_level_db=level)


def _without_levels(text: str) -> str:
    return re.sub(r"\[(error|fatal|panic)\]\s*", "", text)


def _ppm_frames(data: bytes) -> list[np.ndarray]:
    """Split concatenated binary PPM (P6, maxval 255) pictures into arrays."""
    frames: list[np.ndarray] = []
    pos = 0
    header = re.compile(rb"P6\s+(\d+)\s+(\d+)\s+(\d+)\s")
    while pos < len(data):
        match = header.match(data, pos)
        if not match:
            break
        w, h = int(match.group(1)), int(match.group(2))
        start = match.end()
        end = start + w * h * 3
        if end > len(data):
            break
        frames.append(np.frombuffer(data, dtype=np.uint8, count=w * h * 3, offset=start).reshape(h, w, 3))
        pos = end
    return frames
