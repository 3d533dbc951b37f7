"""The validation figures of issue 20: every check (file and content) of a 121-frame 1024x784 H.264 clip with
AAC sound, and of a 1024x784 PNG, against 0.5 s and 0.1 s on 2 cores.

The bench makes both files itself, like a good model output: a photo-like picture (coloured noise with a
photo's 1/f spectrum) and a slow push-in over it with a 440 Hz tone, encoded by the real ffmpeg. The baseline
column is the same file's file checks alone (check_video / check_image): what the content checks add.
"""

import resource
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image

from comfy_pipeline.cli.bench.report import AT_MOST, Figure
from comfy_pipeline.media import check_image, check_video, validate_image, validate_video
from comfy_pipeline.media.binaries import ffmpeg_path

WIDTH, HEIGHT, FRAMES, FPS = 1024, 784, 121, 25
VIDEO_TARGET_S, IMAGE_TARGET_S = 0.5, 0.1
FILE_CHECKS_ONLY = "file checks only (check_video / check_image) on the same file"


def photo_like(width: int, height: int, seed: int) -> Image.Image:
    """Coloured noise whose spectrum falls as 1/f, as natural pictures' do."""
    rng = np.random.default_rng(seed)
    fy, fx = np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = 1.0
    channels = [np.fft.irfft2((rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f, s=(height, width))
                for _ in range(3)]
    rgb = np.stack(channels, axis=-1) @ (np.eye(3) + 0.3 * rng.normal(size=(3, 3)))
    rgb = (rgb - rgb.mean()) / rgb.std() * 50 + 120
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def make_files(workdir: Path) -> tuple[Path, Path]:
    """The start picture (PNG) and a 121-frame push-in over it with sound (MP4, yuv420p, like ComfyUI's)."""
    workdir.mkdir(parents=True, exist_ok=True)
    picture = photo_like(WIDTH, HEIGHT, seed=20)
    png, mp4 = workdir / "start.png", workdir / "clip.mp4"
    picture.save(png)
    command = [
        ffmpeg_path(), "-nostdin", "-v", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS), "-i", "-",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=6",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-shortest", "-movflags", "+faststart", str(mp4),
    ]
    with subprocess.Popen(command, stdin=subprocess.PIPE) as ffmpeg:
        assert ffmpeg.stdin is not None
        for i in range(FRAMES):
            zoom = 1 + 0.1 * i / (FRAMES - 1)  # 10 % closer at the end: a slow push-in
            w, h = WIDTH / zoom, HEIGHT / zoom
            box = ((WIDTH - w) / 2, (HEIGHT - h) / 2, (WIDTH + w) / 2, (HEIGHT + h) / 2)
            ffmpeg.stdin.write(picture.resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR, box=box).tobytes())
        ffmpeg.stdin.close()
        if ffmpeg.wait(timeout=300) != 0:
            raise RuntimeError("ffmpeg could not encode the bench clip")
    return png, mp4


def validation_figures(workdir: Path, repeats: int) -> list[Figure]:
    """validate_video (all checks, start image and sound included) and validate_image, median of `repeats`."""
    png, mp4 = make_files(workdir)
    video = _median(lambda: validate_video(mp4, width=WIDTH, height=HEIGHT, frames=FRAMES, fps=FPS,
                                           start_image=png, expect_audio=True), repeats)
    video_files = _median(lambda: check_video(mp4, width=WIDTH, height=HEIGHT, frames=FRAMES, fps=FPS), repeats)
    image = _median(lambda: validate_image(png, width=WIDTH, height=HEIGHT), repeats)
    image_files = _median(lambda: check_image(png, width=WIDTH, height=HEIGHT), repeats)
    figures = []
    for key, label, target, (seconds, cpu, result), (baseline, baseline_cpu, _) in (
        ("content_validation_video_s", f"all checks of a {FRAMES}-frame {WIDTH}x{HEIGHT} MP4 with sound, median",
         VIDEO_TARGET_S, video, video_files),
        ("content_validation_image_s", f"all checks of a {WIDTH}x{HEIGHT} PNG, median", IMAGE_TARGET_S, image,
         image_files),
    ):
        if not result.passed:  # a good file must pass, or the figure measures something else
            raise RuntimeError(f"the bench's good file failed: {[c.message for c in result.failed]}")
        figures.append(Figure(
            key, label, "s", FILE_CHECKS_ONLY, target, AT_MOST, seconds, baseline,
            {"repeats": repeats, "cpu_s": round(cpu, 3), "baseline_cpu_s": round(baseline_cpu, 3),
             "checks": [c.name for c in result.checks], "measures": result.measures,
             "bytes": (mp4 if key.endswith("video_s") else png).stat().st_size},
        ))
    return figures


def _median(run, repeats: int):
    """(median wall seconds, median CPU seconds of this process and its children, the last result). The CPU time
    says what a validation costs whatever else the machine is doing; the wall time depends on it."""
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        cpu_before, start = _cpu_seconds(), time.monotonic()
        result = run()
        walls.append(time.monotonic() - start)
        cpus.append(_cpu_seconds() - cpu_before)
    return statistics.median(walls), statistics.median(cpus), result


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
