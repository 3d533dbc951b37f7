"""The prompt inbox folder: which dropped files are ready to run, and where a bad one goes. No Dagster here.

A file is taken once it is a regular file (never a symlink: a link could point anywhere on the machine) and
has not changed for `settle` seconds (a file still being written would run truncated), or was renamed into
place. The cursor remembers what was handled by name, size and mtime, so a tick costs only what is new, and
an edited file is taken again. A bad file is moved aside to `rejected/` with a note saying why, so it is
reported once and never blocks the others.
"""

import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

PROMPT_SUFFIXES = (".txt", ".json")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SETTLE_S = 2.0
REJECTED = "rejected"


@dataclass
class Scan:
    ready: list[Path] = field(default_factory=list)  # new and stable: to be requested now
    waiting: list[str] = field(default_factory=list)  # still changing: next tick
    cursor: dict[str, list[int]] = field(default_factory=dict)  # name -> [size, mtime_ns] of what was handled


def _regular(path: Path) -> os.stat_result | None:
    """The file's stat if it is a regular file and not a symlink; else None."""
    try:
        info = path.lstat()
    except OSError:
        return None
    return info if stat.S_ISREG(info.st_mode) else None


def scan(inbox: Path, handled: dict[str, list[int]], *, settle: float = SETTLE_S, now: float | None = None) -> Scan:
    """What in `inbox` is ready. `handled` is the previous cursor; the new one keeps only files still there."""
    now = time.time() if now is None else now
    result = Scan()
    with os.scandir(inbox) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            name = entry.name
            if name.startswith(".") or Path(name).suffix.lower() not in PROMPT_SUFFIXES:
                continue
            info = _regular(Path(entry.path))
            if info is None:
                continue  # a folder, a FIFO, a symlink: never read
            signature = [info.st_size, info.st_mtime_ns]
            if handled.get(name) == signature:
                result.cursor[name] = signature
            elif now - info.st_mtime < settle:
                result.waiting.append(name)
            else:
                result.ready.append(Path(entry.path))
    return result


def mark_handled(result: Scan, path: Path) -> None:
    info = _regular(path)
    if info is not None:
        result.cursor[path.name] = [info.st_size, info.st_mtime_ns]


def image_beside(prompt_file: Path) -> Path | None:
    """A regular (non-symlink) image with the prompt file's name, if there is one."""
    for suffix in IMAGE_SUFFIXES:
        for candidate in (prompt_file.with_suffix(suffix), prompt_file.with_suffix(suffix.upper())):
            if _regular(candidate) is not None:
                return candidate
    return None


def reject(prompt_file: Path, reason: str) -> Path:
    """Move a bad prompt file (and the image beside it) to `rejected/`, with `<name>.reason.txt` saying why."""
    folder = prompt_file.parent / REJECTED
    folder.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    moved = folder / f"{stamp}_{prompt_file.name}"
    for path in filter(None, (prompt_file, image_beside(prompt_file))):
        os.replace(path, folder / f"{stamp}_{path.name}")
    (folder / f"{moved.name}.reason.txt").write_text(reason + "\n", encoding="utf-8")
    return moved
