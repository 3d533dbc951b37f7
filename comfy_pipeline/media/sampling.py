"""One ffmpeg pass over a video for the content checks: every frame decoded, a few handed over, the sound measured.

The pass decodes the whole clip (inter-coded frames cannot be decoded without the ones before them), keeps one
frame every `interval` seconds (see sample_interval), scales it down to SAMPLE_WIDTH pixels across and writes it
as a PPM picture on stdout; the first audio stream, if any, goes through volumedetect in the same process.
Because every frame is decoded, a clean pass also proves the file decodes from its first frame to its last.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import ffmpeg  # ffmpeg-python: builds the ffmpeg command lines
import numpy as np

from comfy_pipeline.media.binaries import ffmpeg_command
from comfy_pipeline.media.probe import DECODE_TIMEOUT_S, MediaError, run_tool, tool_error_summary

# One sampled frame every 0.5 s (11 frames of a 5 s clip): far enough apart that slow real motion adds up to
# more than codec noise and grain do between two frames. Clips shorter than 2 s get MIN_SAMPLES frames spread
# over their length instead (slow motion then reads lower in them).
SAMPLE_INTERVAL_S = 0.5
MIN_SAMPLES = 4
SAMPLE_WIDTH = 160  # pixels across the sampled frames (never scaled up)

# Each log line carries its level ("[error]", "[info]", ...): errors mean a bad file, info lines hold volumedetect.
LOGGING = ("-nostdin", "-nostats", "-hide_banner", "-loglevel", "level+info")
_ERROR_LEVELS = ("[error]", "[fatal]", "[panic]")
_MEAN_VOLUME = re.compile(r"mean_volume:\s*(-?[\d.]+|-inf) dB")


def sample_interval(duration: float) -> float:
    """Seconds between sampled frames for a clip of `duration` seconds (0 when unknown: the default interval)."""
    return min(SAMPLE_INTERVAL_S, duration / MIN_SAMPLES) if duration > 0 else SAMPLE_INTERVAL_S


@dataclass(frozen=True)
class VideoSample:
    frames: list[np.ndarray]  # HxWx3 uint8, first frame first, `interval` apart
    interval: float
    audio_level_db: float | None  # mean volume of the first audio stream, None when there is none or it is empty


def sample_video(path: str | Path, *, interval: float = SAMPLE_INTERVAL_S) -> VideoSample:
    """Decode the whole clip once; MediaError (naming the file) if it does not decode cleanly. Needs nothing
    from ffprobe, so that the two can run side by side: the sound is measured if there is any."""
    path = Path(path)
    # The deblocking filter only smooths block edges (a sixth of H.264's decoding time); every bit of the stream
    # is still decoded, so a broken file still fails, and a picture 160 pixels across does not show the blocks.
    stream = ffmpeg.input(str(path), skip_loop_filter="all")
    video = (
        stream["V:0"]
        .filter("select", f"isnan(prev_selected_t)+gte(t-prev_selected_t,{interval * 0.99:.6f})")
        .filter("scale", f"min({SAMPLE_WIDTH},iw)", -2, flags="area")
        .filter("format", "rgb24")
    )
    # Passthrough: only the selected frames, no duplicates to keep a constant rate. (-vsync, not 5.1's
    # -fps_mode, so that a distribution's ffmpeg 4 works too; 6.0 only warns that it is deprecated.)
    output = video.output("pipe:1", f="image2pipe", vcodec="ppm", vsync="passthrough")
    command = ffmpeg_command(output, *LOGGING) + [
        # The sound, if any ("?": a clip without sound is no error), through volumedetect into nothing. The
        # video stream, all of its frames dropped, keeps that output from being empty when there is no sound.
        "-map", "0:V:0", "-map", "0:a:0?", "-filter:v", "select=0", "-filter:a", "volumedetect", "-f", "null", "-",
    ]
    result = run_tool(command, path=path, timeout=DECODE_TIMEOUT_S)
    errors = "\n".join(line for line in result.stderr.splitlines() if any(lvl in line for lvl in _ERROR_LEVELS))
    frames = _ppm_frames(result.stdout)
    if result.returncode != 0 or errors or not frames:
        # No frame at all: the start is broken; frames and then an error: it breaks before its end.
        where = "the first frame does not decode" if not frames else "the clip does not decode to its end"
        problem = tool_error_summary(_without_levels(errors), path) if errors else "no frame came out"
        raise MediaError(f"{path}: {where}; the file is truncated or corrupt ({problem})")
    level = None
    match = _MEAN_VOLUME.search(result.stderr)
    if match:
        level = -91.0 if match.group(1) == "-inf" else float(match.group(1))
    return VideoSample(frames=frames, interval=interval, audio_level_db=level)


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
