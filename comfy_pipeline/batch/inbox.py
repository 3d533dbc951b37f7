"""The prompt inbox, `inbox/` on the output store (a local folder or an S3 bucket): which dropped prompt files are
ready to run, and where a bad one goes. No Dagster here.

One code path for both stores, over the Store interface. An object is taken once it has not changed for `settle`
seconds (a file still being written would run truncated; a local file renamed into place is settled at once).
Only the inbox's direct children are listed, a page at a time (never `rejected/`, never a subfolder); a local
store lists only regular files, never a symlink (a link could point anywhere on the machine). The cursor
remembers what was handled by name and signature (size and etag; the etag of a local file is its size and
mtime), so a tick of a large inbox costs its listing and reads only what is new or changed, and an edited file
is taken again. A bad file is moved aside to `rejected/` with a note saying why, so it is reported once and
never blocks the others.
"""

import json
import posixpath
import time
from dataclasses import dataclass, field
from pathlib import Path

from comfy_pipeline.storage import ObjectExists, ObjectMissing, Store, StoredObject, StoreError
from comfy_pipeline.workflows.prompts import MAX_PROMPT_FILE_BYTES, PromptError, check_prompt_file_size

INBOX = "inbox"
PROMPT_SUFFIXES = (".txt", ".json")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SETTLE_S = 2.0
REJECTED = "rejected"
PAGE_SIZE = 1000  # objects per listing request: 10,000 handled objects cost 10 requests
MAX_IMAGE_DOWNLOAD_BYTES = 50 * 1024**2  # an image beside a prompt on a remote store is downloaded to be probed


@dataclass(frozen=True)
class Dropped:
    """A prompt object ready to be read, and the image beside it (its name with an image suffix), if any."""

    prompt: StoredObject
    image: StoredObject | None = None

    @property
    def name(self) -> str:
        return _name(self.prompt.key)


@dataclass
class Scan:
    ready: list[Dropped] = field(default_factory=list)  # new and settled: to be read now
    waiting: list[str] = field(default_factory=list)  # still changing: next tick
    cursor: dict[str, list] = field(default_factory=dict)  # name -> signature of what was handled


def _name(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def signature(obj: StoredObject) -> list:
    """What the cursor remembers of a handled object: it changes when the object does. (S3 quotes its ETags:
    the quotes, escaped in the cursor's JSON, would cost a tenth of a large inbox's cursor.)"""
    return [obj.size, obj.etag.strip('"')]


def was_handled(previous: object, obj: StoredObject) -> bool:
    """Whether the cursor's entry describes `obj` as it is now. Entries written before the store interface,
    `[size, mtime_ns]` of a local file, still count: a local object's etag spells them `<size>-<mtime_ns>`."""
    if previous == signature(obj):
        return True
    return (isinstance(previous, list) and len(previous) == 2 and all(type(v) is int for v in previous)
            and obj.etag == f"{previous[0]}-{previous[1]}")


def load_cursor(cursor: str | None) -> dict[str, list]:
    """The sensor's cursor as a dict; anything unreadable is an empty one (everything is looked at again, and
    the run keys keep a content from running twice)."""
    try:
        handled = json.loads(cursor) if cursor else {}
    except ValueError:
        return {}
    return handled if isinstance(handled, dict) else {}


def dump_cursor(result: Scan) -> str:
    return json.dumps(result.cursor, separators=(",", ":"))


def prepare(store: Store) -> None:
    """A local inbox folder is created, for people to drop files into; a file in its place is a StoreError."""
    folder = store.path_of(INBOX)
    if folder is None:
        return  # an object store has no folders to create
    if folder.exists() and not folder.is_dir():
        raise StoreError(f"{folder} is not a folder: remove it, or set the output folder elsewhere, so the inbox "
                         "can be created there.")
    folder.mkdir(parents=True, exist_ok=True)


def scan(store: Store, handled: dict, *, settle: float = SETTLE_S, now: float | None = None,
         page_size: int = PAGE_SIZE) -> Scan:
    """What in the inbox is ready. `handled` is the previous cursor; the new one keeps only objects still there.
    A prompt waits while it, or the image beside it, changed less than `settle` seconds ago."""
    now = time.time() if now is None else now
    prompts, images = [], {}
    for obj in store.objects(INBOX, recursive=False, page_size=page_size):
        name = _name(obj.key)
        suffix = posixpath.splitext(name)[1].lower()
        if not name or name.startswith("."):
            continue  # hidden: a writer's temp file, a folder marker
        if suffix in PROMPT_SUFFIXES:
            prompts.append(obj)
        elif suffix in IMAGE_SUFFIXES:
            images[name] = obj
    result = Scan()
    for obj in prompts:
        name = _name(obj.key)
        if was_handled(handled.get(name), obj):
            result.cursor[name] = signature(obj)
            continue
        image = image_beside(name, images)
        if now - obj.modified < settle or (image is not None and now - image.modified < settle):
            result.waiting.append(name)
        else:
            result.ready.append(Dropped(obj, image))
    return result


def image_beside(prompt_name: str, images: dict[str, StoredObject]) -> StoredObject | None:
    """The image with the prompt file's name (`scene.txt` -> `scene.png`, `.jpg`, ..., upper case too)."""
    stem = posixpath.splitext(prompt_name)[0]
    for suffix in IMAGE_SUFFIXES:
        for candidate in (stem + suffix, stem + suffix.upper()):
            if candidate in images:
                return images[candidate]
    return None


def mark_handled(result: Scan, dropped: Dropped) -> None:
    """Remember the prompt as it was listed: if it changed since, the next tick takes it again."""
    result.cursor[dropped.name] = signature(dropped.prompt)


def read_prompt(store: Store, dropped: Dropped) -> bytes:
    """The prompt object's bytes; one above the prompt file limit is refused before it is read."""
    check_prompt_file_size(dropped.name, dropped.prompt.size)
    return store.get_bytes(dropped.prompt.key, max_bytes=MAX_PROMPT_FILE_BYTES)


def check_image_size(dropped: Dropped, store: Store) -> None:
    """On a remote store the image beside is downloaded to be probed: one too big for an input is refused first."""
    image = dropped.image
    if image is not None and not store.local and image.size > MAX_IMAGE_DOWNLOAD_BYTES:
        raise PromptError(f"{dropped.name}: the image beside it, {_name(image.key)}, is {image.size:,} bytes; the "
                          f"limit for an input image is {MAX_IMAGE_DOWNLOAD_BYTES:,}")


def hash_file(digest, path: Path) -> None:
    """Add a file's bytes to `digest` a chunk at a time (an image is never whole in memory)."""
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)


def reject(store: Store, dropped: Dropped, reason: str) -> str:
    """Move a bad prompt object (and the image beside it) to `inbox/rejected/<stamp>_<name>`, with
    `<that name>.reason.txt` saying why; returns the moved prompt's key. Nothing already there is replaced."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    moved = _move_aside(store, dropped.prompt.key, stamp)
    if dropped.image is not None:
        try:
            _move_aside(store, dropped.image.key, stamp)
        except ObjectMissing:
            pass  # gone meanwhile (another prompt of the same name took it aside)
    store.put_bytes(f"{moved}.reason.txt", (reason + "\n").encode("utf-8"), replace=True)
    return moved


def _move_aside(store: Store, key: str, stamp: str) -> str:
    folder, name = f"{INBOX}/{REJECTED}", _name(key)
    for attempt in range(1000):
        tag = stamp if attempt == 0 else f"{stamp}-{attempt}"  # the same name rejected twice in one second
        try:
            return store.move(key, f"{folder}/{tag}_{name}")
        except ObjectExists:
            continue
    raise StoreError(f"{store.uri(folder)} holds too many rejected files named {name}; clear it out")
