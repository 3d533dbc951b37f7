"""The store interface and its one error tree."""

import os
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

SCHEMES = ("s3://",)


class StoreError(Exception):
    """Something about the output store went wrong; the message says what to fix and never holds a secret."""


class ObjectExists(StoreError):
    """The key is taken: outputs are never overwritten."""


class ObjectMissing(StoreError):
    """No object under that key."""


@dataclass(frozen=True)
class StoredObject:
    key: str  # relative to the store's root
    size: int
    modified: float  # epoch seconds
    etag: str = ""  # the content's tag on S3; "<size>-<mtime_ns>" on disk: changes when the object does


def is_store_url(location: str | os.PathLike | None) -> bool:
    return isinstance(location, str) and location.lower().startswith(SCHEMES)


def join_key(*parts: str) -> str:
    """`join_key("runs", "x", "images")` -> "runs/x/images"; empty parts are left out."""
    return posixpath.join(*[p.strip("/") for p in parts if p and p.strip("/")]) if any(parts) else ""


def free_name(key: str, attempt: int) -> str:
    """`a/b.png`, then `a/b_1.png`, `a/b_2.png`, ...: the names tried when a key is taken (like the downloads)."""
    if attempt == 0:
        return key
    stem, ext = posixpath.splitext(key)
    return f"{stem}_{attempt}{ext}"


class Store(Protocol):
    """An output location. `local` stores hand out real paths (`path_of`); others only URIs."""

    location: str  # what the user configured, for messages: "/abs/folder" or "s3://bucket/prefix"
    local: bool

    def uri(self, key: str) -> str:
        """What a report or metadata shows for `key`: an absolute path, or `s3://bucket/prefix/key`."""

    def key_of(self, uri: str) -> str | None:
        """The key of a URI (or path) inside this store; None for anything outside it."""

    def path_of(self, key: str) -> Path | None:
        """The file behind `key` on a local store; None on a remote one."""

    def put_file(self, source: Path, key: str, *, free_name: bool = False) -> str:
        """Store the local file `source` whole under `key` (a multipart upload for a big one, one part in memory
        at a time) and return its key. A taken key raises ObjectExists, or with `free_name` the next free name
        (`name_1.ext`, ...) is used. Nothing partial is ever visible under the final key."""

    def put_bytes(self, key: str, data: bytes, *, replace: bool = False) -> str:
        """Store `data` whole under `key`; a taken key raises ObjectExists unless `replace`."""

    def get_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes (ObjectMissing if there is none; StoreError past `max_bytes`)."""

    def get_file(self, key: str, folder: Path) -> Path:
        """The object as a local file in `folder` (streamed, never whole in memory); a local store returns the
        file itself, without copying."""

    def exists(self, key: str) -> bool: ...

    def stat(self, key: str) -> StoredObject | None: ...

    def objects(self, prefix: str, *, recursive: bool = True, page_size: int = 1000) -> Iterator[StoredObject]:
        """The objects under the folder `prefix`, in key order, fetched a page at a time; `recursive=False`:
        only those directly in it."""

    def delete(self, key: str) -> None:
        """Delete the object; a missing one is not an error."""

    def move(self, key: str, to_key: str) -> str:
        """Move an object to a free key (ObjectExists if taken); returns the new key."""

    def abort_uploads(self, prefix: str, abandoned: Callable[[str], bool]) -> list[str]:
        """Remove the unfinished writes under `prefix` (a killed upload's parts, a killed writer's temp files)
        whose final key `abandoned(key)` says belongs to a dead writer; the keys they were meant for."""
