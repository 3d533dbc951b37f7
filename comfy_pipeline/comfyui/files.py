"""Output files of a finished prompt: listing them from a history entry and saving them safely.

ComfyUI traps handled here:
- core SaveVideo/SaveWEBM/SaveAnimated* list their files under `images` (plus `"animated": [true]`), custom nodes
  use `gifs`/`videos`/`audio`; so every list of `{filename, subfolder, type}` items is an output, whatever its key;
- every item carries its own `type` (`output`, `temp`, `input`);
- the names come from the server, so they are sanitised before they touch the local disk.
"""

import atexit
import os
import tempfile
import threading
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import DownloadError


def _umask() -> int:
    """The process umask, read without changing it (os.umask() would, for every thread, for a moment)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_EXTENSIONS = {".mp4", ".webm", ".mkv", ".mov", ".avi", ".gif", ".m4v"}


@dataclass(frozen=True)
class OutputFile:
    """One file a node wrote on the server; `kind` is "image", "video" or "other"."""

    node_id: str
    filename: str
    subfolder: str
    type: str
    kind: str


def file_kind(filename: str, animated: bool = False) -> str:
    ext = os.path.splitext(filename)[1].lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS:
        # SaveAnimatedWEBP / SaveAnimatedPNG write a moving picture in an image container.
        return "video" if animated else "image"
    return "other"


def outputs(history_entry: dict) -> list[OutputFile]:
    """Every output file of a history entry (`{"outputs": ...}` or the whole `{prompt_id: entry}` answer)."""
    entry = history_entry
    if "outputs" not in entry and len(entry) == 1:
        (entry,) = entry.values()  # the answer of GET /history/{id}: {id: entry}
    files: list[OutputFile] = []
    for node_id, node_output in (entry.get("outputs") or {}).items():
        if not isinstance(node_output, dict):
            continue
        animated = any(node_output.get("animated") or [])
        for items in node_output.values():
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("filename"), str):
                    files.append(
                        OutputFile(
                            node_id=str(node_id),
                            filename=item["filename"],
                            subfolder=str(item.get("subfolder") or ""),
                            type=str(item.get("type") or "output"),
                            kind=file_kind(item["filename"], animated),
                        )
                    )
    return files


def safe_filename(name: str) -> str:
    """The last path component of a server-given name, with nothing that could escape or hide a file.

    Drops directories (`/` and `\\`), control characters and NUL, leading dots and spaces; refuses what is left
    if it is empty. The result can be joined to a folder without leaving it.
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C")
    base = base.strip().lstrip(". ")
    if not base:
        raise DownloadError(f"The server named an output {name!r}, which is not a usable file name.")
    return base[:255]


_unfinished: set[Path] = set()  # temp files of downloads under way in this process
_unfinished_lock = threading.Lock()


@atexit.register
def _remove_unfinished() -> None:
    """An interrupted process (Ctrl-C, a SIGTERM turned into an exception) exits with downloads still running in
    daemon threads that die with it: their temp files go now, not with the next run. kill -9 leaves them to
    the next run (batch.outputs.remove_stale_parts)."""
    with _unfinished_lock:
        left = list(_unfinished)
    for tmp in left:
        tmp.unlink(missing_ok=True)


def _free_name(dest_dir: Path, name: str, attempt: int) -> Path:
    if attempt == 0:
        return dest_dir / name
    stem, ext = os.path.splitext(name)
    return dest_dir / f"{stem}_{attempt}{ext}"


def _publish(tmp: Path, dest_dir: Path, name: str) -> Path:
    """Give the finished temp file its final name, never replacing an existing file (name.ext, name_1.ext, ...).

    os.link fails when the target exists, so the check and the rename are one atomic step (no race with
    another writer); where hard links are not supported, fall back to a checked os.replace.
    """
    for attempt in range(10_000):
        target = _free_name(dest_dir, name, attempt)
        try:
            os.link(tmp, target)
        except FileExistsError:
            continue
        except OSError:
            if target.exists():
                continue
            os.replace(tmp, target)
            return target
        tmp.unlink()
        return target
    raise DownloadError(f"Too many files named like {name!r} in {dest_dir}.")


def save_stream(
    chunks: Iterable[bytes],
    dest_dir: str | Path,
    name: str,
    *,
    expected_bytes: int | None,
    max_bytes: int,
    source: str,
) -> Path:
    """Stream `chunks` into `dest_dir/name` atomically: temp file in the same folder, fsync, then rename.

    Refuses before writing when `expected_bytes` (Content-Length) is above `max_bytes`; aborts and deletes the
    temp file when the stream grows past `max_bytes` or ends short of `expected_bytes`. `name` must already be
    safe (see safe_filename). Returns the final path, which may be `name_1.ext` when `name` exists already.
    """
    dest = Path(dest_dir)
    if expected_bytes is not None and expected_bytes > max_bytes:
        raise DownloadError(
            f"{source} is {expected_bytes} bytes, more than the limit of {max_bytes} bytes; nothing was written. "
            "Raise max_download_bytes if the file is expected to be this big."
        )
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dest)
    tmp = Path(tmp_name)
    with _unfinished_lock:
        _unfinished.add(tmp)
    try:
        written = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                written += len(chunk)
                if written > max_bytes:
                    raise DownloadError(
                        f"{source} grew past the limit of {max_bytes} bytes; the partial file was deleted."
                    )
                out.write(chunk)
            if expected_bytes is not None and written != expected_bytes:
                raise DownloadError(
                    f"{source} ended after {written} of {expected_bytes} bytes (short read); "
                    "the partial file was deleted. Try again."
                )
            out.flush()
            os.fsync(out.fileno())
        tmp.chmod(FILE_MODE)  # mkstemp makes it 0600; a published output follows the umask like any file
        return _publish(tmp, dest, name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        with _unfinished_lock:
            _unfinished.discard(tmp)
