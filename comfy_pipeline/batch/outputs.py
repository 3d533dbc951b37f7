"""The output folder: where each run's files go, how they are named, and how they are written.

Layout: <output location>/runs/<UTC time>_<run id>/{images,videos,reports}/<descriptive name>, on a local disk or
an object store (storage/). Everything is written to a temporary file (or an unfinished upload) and made visible
whole under its final name, and an existing file is never replaced, so a crash leaves no partial files and no
run can clobber another's. A run's files are made in a local folder first (ffprobe and the content checks need
a file): the run folder itself on a local disk; for an object store, a temporary folder, gone when the step ends,
each file uploaded once checked.
"""

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfy_pipeline.storage import LocalStore, ObjectExists, Store, join_key
from comfy_pipeline.storage.local import write_atomic as _write_atomic

KINDS = ("images", "videos", "reports")


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
    try:
        return _write_atomic(path, data, replace=replace)
    except ObjectExists as exc:
        raise OutputPathError(str(exc)) from None


def json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8")


def write_json(path: Path, value: Any, *, replace: bool = False) -> Path:
    return write_atomic(path, json_bytes(value), replace=replace)


STAGING_PREFIX = "comfy-pipeline-run-"


@dataclass(frozen=True)
class RunFolder:
    """One run's folder on the output store: `runs/<UTC time>_<run id>`."""

    store: Store
    key: str

    @classmethod
    def of(cls, store: Store, run_id: str, started_at: float) -> "RunFolder":
        return cls(store, join_key("runs", run_folder_name(run_id, started_at)))

    @property
    def uri(self) -> str:
        return self.store.uri(self.key)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """The local folder a step makes its files in, laid out like the run folder: on a local store the run
        folder itself; on a remote one a temporary folder, removed when the step ends (a killed step's is swept
        with its run: sweep_unfinished)."""
        local = self.store.path_of(self.key)
        if local is not None:
            local.mkdir(parents=True, exist_ok=True)
            yield local
            return
        work = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{self.key.rsplit('_', 1)[-1]}-"))
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def publish(self, staging: Path, file: Path) -> str:
        """Put a checked file of `staging` at its place in the run folder, under a free name; its URI (on a
        local store the file is there already: its path)."""
        key = join_key(self.key, file.relative_to(staging).as_posix())
        return self.store.uri(self.store.put_file(file, key, free_name=True))

    def write_json(self, kind: str, name: str, value: Any, *, replace: bool = False) -> str:
        """`<run folder>/<kind>/<name>` (a report), written whole; its URI. A taken name is an OutputPathError
        unless `replace` (a retried step rewrites its listing)."""
        return self.write_bytes(kind, name, json_bytes(value), replace=replace)

    def write_bytes(self, kind: str, name: str, data: bytes, *, replace: bool = False) -> str:
        if kind not in KINDS:
            raise OutputPathError(f"unknown output kind {kind!r}; one of {KINDS}")
        confined(Path("/"), name)
        try:
            return self.store.uri(self.store.put_bytes(join_key(self.key, kind, name), data, replace=replace))
        except ObjectExists as exc:
            raise OutputPathError(str(exc)) from None


def append_line(path: Path, line: str) -> None:
    """Append one line in a single write (O_APPEND), so concurrent writers never interleave within a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode("utf-8"))
    finally:
        os.close(fd)


def sweep_unfinished(store: Store, run_ended: Callable[[str], bool]) -> list[str]:
    """What dead runs left half-written: their unfinished uploads (or hidden `.part` files) in their run folders,
    and for a remote store their local staging folders. A live run's are never touched; the keys (or folders)."""
    def dead(key: str) -> bool:
        parts = key.split("/")
        return len(parts) > 2 and run_ended(parts[1].split("_", 1)[-1])

    removed = store.abort_uploads("runs", dead)
    if not store.local:
        for folder in Path(tempfile.gettempdir()).glob(f"{STAGING_PREFIX}*-*"):
            run_slug = folder.name[len(STAGING_PREFIX):].rsplit("-", 1)[0]
            if run_ended(run_slug):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(str(folder))
    return removed


def remove_stale_parts(output_dir: str | Path, run_ended: Callable[[str], bool]) -> list[Path]:
    """Delete the hidden `.part` files that dead runs left in their run folders (a `kill -9` mid-download):
    those of runs that Dagster says ended, and any untouched for STALE_PART_S. A live run's are never touched."""
    store = LocalStore(output_dir)
    return [store.root / key for key in sweep_unfinished(store, run_ended)]
