"""The output folder: where each run's files go, how they are named, and how they are written.

Layout: <output_dir>/runs/<UTC time>_<run id>/{images,videos,reports}/<descriptive name>.
Everything is written to a temporary file in the target folder and renamed into place, and an existing
file is never replaced, so a crash leaves no partial files and no run can clobber another's.
"""

import json
import os
import re
import tempfile
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from comfy_pipeline.comfyui.files import FILE_MODE

KINDS = ("images", "videos", "reports")
STALE_PART_S = 3600  # a .part file untouched this long belongs to a download that died


class OutputPathError(ValueError):
    pass


def slugify(text: str, max_len: int = 40) -> str:
    """'A red fox, in snow!' -> 'a-red-fox-in-snow' (ASCII only, safe on every filesystem)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_len].rstrip("-") or "untitled"


def run_folder_name(run_id: str, started_at: float) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started_at))
    return f"{stamp}_{slugify(run_id, 36)}"


def run_dir(output_dir: str | Path, run_id: str, started_at: float) -> Path:
    return Path(output_dir) / "runs" / run_folder_name(run_id, started_at)


SUBFOLDER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def kind_dir(run_folder: Path, kind: str, subfolder: str = "") -> Path:
    """`<run folder>/<kind>/`, or `<run folder>/<kind>/<subfolder>/` (one plain name: an asset's own outputs)."""
    if kind not in KINDS:
        raise OutputPathError(f"unknown output kind {kind!r}; one of {KINDS}")
    if subfolder and not SUBFOLDER.fullmatch(subfolder):
        raise OutputPathError(f"output subfolder {subfolder!r}: use one plain name (letters, digits, _ . -)")
    folder = run_folder / kind / subfolder if subfolder else run_folder / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def confined(base: Path, name: str) -> Path:
    """`base/name`, refusing any name that would land outside `base`."""
    if not name or name in {".", ".."} or "/" in name or "\\" in name or "\x00" in name:
        raise OutputPathError(f"refusing unsafe file name {name!r}")
    path = base / name
    if path.resolve().parent != base.resolve():
        raise OutputPathError(f"refusing file name {name!r}: it resolves outside {base}")
    return path


def write_atomic(path: Path, data: bytes, *, replace: bool = False) -> Path:
    """Write `data` to `path` via a temp file + rename; never replaces an existing file unless `replace` (for
    state files that describe, rather than are, an output: a retried step rewrites its manifest whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)  # mkstemp makes it 0600; an output follows the umask like any file
        # os.link fails if the target exists, unlike os.replace: that is the no-overwrite guarantee.
        os.replace(tmp, path) if replace else os.link(tmp, path)
    except FileExistsError:
        raise OutputPathError(f"{path} already exists; outputs are never overwritten") from None
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return path


def write_json(path: Path, value: Any, *, replace: bool = False) -> Path:
    data = (json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8")
    return write_atomic(path, data, replace=replace)


def append_line(path: Path, line: str) -> None:
    """Append one line in a single write (O_APPEND), so concurrent writers never interleave within a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode("utf-8"))
    finally:
        os.close(fd)


def remove_stale_parts(output_dir: str | Path, run_ended: Callable[[str], bool]) -> list[Path]:
    """Delete the hidden `.part` files that dead runs left in their run folders (a `kill -9` mid-download):
    those of runs that Dagster says ended, and any untouched for STALE_PART_S. A live run's are never touched."""
    removed = []
    now = time.time()
    runs = Path(output_dir) / "runs"
    # runs/<run>/images/ and, for a component asset's own folder, runs/<run>/images/<key>/
    for part in [*runs.glob("*/*/.*.part"), *runs.glob("*/*/*/.*.part")]:
        run_id = part.relative_to(runs).parts[0].split("_", 1)[-1]
        try:
            stale = now - part.stat().st_mtime > STALE_PART_S or run_ended(run_id)
            if stale:
                part.unlink()
                removed.append(part)
        except FileNotFoundError:
            continue  # finished and renamed meanwhile
    return removed
