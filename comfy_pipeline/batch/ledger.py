"""A written record of the prompts a run has on a ComfyUI server, so a run that dies cannot leave GPU work behind.

Prompt ids are chosen by the client, so each one is written down here *before* it is submitted. A run that ends
normally deletes its record. A run that dies (`kill -9`, an evicted pod) leaves it behind, and whoever comes next
against the same server (the next batch, or the failure sensor once Dagster marks the run failed) cancels every
prompt in it that the server still has queued or running. Cancelling is idempotent: a prompt that already
finished is left alone. No Dagster here.

Layout on a local folder: `<output folder>/.inflight/<run id>.jsonl`, one JSON line per prompt: id, server, host,
pid. On an object store, which can neither append to an object nor rename one atomically, each prompt is an object
of its own: `.inflight/<run id>/<time ns>-<n>_<prompt id>.json`; a run's records are its folder's objects.
"""

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

from comfy_pipeline.batch import outputs
from comfy_pipeline.storage import ObjectExists, ObjectMissing, Store, StoreError, as_store

FOLDER = ".inflight"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    run_id: str
    prompt_id: str
    server: str
    host: str
    pid: int


class PromptLedger:
    """The record of one run's prompts, on whichever servers they went to. `where` is the output folder or store:
    a local one keeps the run's record in one file (`path`), a remote one one object per prompt under `prefix`."""

    def __init__(self, where: "Store | str | Path", run_id: str):
        self.store = as_store(where)
        self.run_id = run_id
        self.prefix = run_prefix(run_id)
        folder = self.store.path_of(FOLDER)
        self.path = outputs.confined(folder, f"{outputs.slugify(run_id, 64)}.jsonl") if folder else None
        self._written = 0

    def record(self, prompt_id: str, server: str) -> None:
        """Called before the prompt is submitted: a crash right after the submit still leaves its id behind.
        A prompt moved to another server is recorded once more, with that server."""
        entry = {"run_id": self.run_id, "prompt_id": prompt_id, "server": server,
                 "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
        if self.path is not None:
            outputs.append_line(self.path, json.dumps(entry))
            return
        data = json.dumps(entry).encode("utf-8")
        for _ in range(100):
            # Time first, so a listing returns a run's records in the order written (the first one decides
            # whose process it was); the counter keeps two records of one instant apart.
            self._written += 1
            key = f"{self.prefix}/{time.time_ns():020d}-{self._written:06d}_{outputs.slugify(prompt_id, 64)}.json"
            try:
                self.store.put_bytes(key, data)
                return
            except ObjectExists:  # another process of the same run id wrote the same instant: the next name
                continue
        raise ObjectExists(f"{self.store.uri(self.prefix)}: no free record name for prompt {prompt_id}")

    def close(self) -> None:
        """Every prompt ended or was cancelled: nothing is left to clean up after this run."""
        if self.path is None:
            try:
                for stored in list(self.store.objects(self.prefix)):
                    self.store.delete(stored.key)
            except StoreError as exc:  # harmless: a later sweep of the ended run removes them
                log.warning("could not delete the prompt records of run %s: %s", self.run_id, exc)
            return
        self.path.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()  # only when empty: other runs may be under way
        except OSError:
            pass


def run_prefix(run_id: str) -> str:
    """The folder of a run's records on a remote store."""
    return f"{FOLDER}/{outputs.slugify(run_id, 64)}"


def has_record(where: "Store | str | Path", run_id: str) -> bool:
    store = as_store(where)
    folder = store.path_of(FOLDER)
    if folder is not None:
        return (folder / f"{outputs.slugify(run_id, 64)}.jsonl").is_file()
    return next(iter(store.objects(run_prefix(run_id), page_size=1)), None) is not None


def read(path: Path) -> list[Entry]:
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            raw = json.loads(line)
            entries.append(Entry(str(raw["run_id"]), str(raw["prompt_id"]), str(raw["server"]), str(raw["host"]),
                                 int(raw["pid"])))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by the crash itself
    return entries


def _process_alive(entry: Entry) -> bool | None:
    """True/False for a process on this host; None when it ran elsewhere (only Dagster can tell then)."""
    if entry.host != socket.gethostname():
        return None
    try:
        os.kill(entry.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_dead(first: Entry, run_ended: Callable[[str], bool], only_run: str | None) -> bool:
    """Whether the run whose first record is `first` is over (see cancel_orphans)."""
    if only_run:
        return True
    alive = _process_alive(first)
    return not (alive or (alive is None and not run_ended(first.run_id)))


def cancel_orphans(where: "Store | str | Path", server: str, cancel: Callable[[str], None],
                   run_ended: Callable[[str], bool], *, only_run: str | None = None) -> list[Entry]:
    """Cancel the prompts on `server` of every dead run and delete their records; the cancelled entries.

    A run is dead when Dagster says it ended (`run_ended(run_id)`) yet its record is still there, or when its
    process on this host is gone. `only_run` sweeps that one run, which Dagster has declared failed (the failure
    sensor's case), whatever its process looks like."""
    store = as_store(where)
    folder = store.path_of(FOLDER)
    if folder is None:
        return _cancel_stored_orphans(store, server, cancel, run_ended, only_run)
    if not folder.is_dir():
        return []
    cancelled: list[Entry] = []
    for path in sorted(folder.glob("*.jsonl")):
        try:
            entries = read(path)
        except FileNotFoundError:
            continue  # its run ended, or another sweeper took it
        if not entries or (only_run and entries[0].run_id != only_run):
            continue
        first = entries[0]
        if not _is_dead(first, run_ended, only_run):
            continue
        if not any(e.server == server for e in entries):
            continue  # another server's prompts: whoever talks to that server cleans them up
        # Several runs may start at once and sweep together: renaming the record claims it for one of them.
        claimed = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.sweeping")
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            continue
        entries = read(claimed)
        kept = [e for e in entries if e.server != server]  # other servers' prompts: swept by whoever talks to them
        for entry in (e for e in entries if e.server == server):
            try:
                cancel(entry.prompt_id)
                cancelled.append(entry)
            except Exception as exc:  # keep it on record: the next sweep tries again
                log.warning("could not cancel prompt %s of dead run %s: %s", entry.prompt_id, entry.run_id, exc)
                kept.append(entry)
        _rewrite(claimed, path, kept)
    return cancelled


def _rewrite(claimed: Path, path: Path, entries: list[Entry]) -> None:
    """Put `entries` back on record (atomically) and drop the claimed copy; no entries left, no record."""
    if entries:
        lines = [json.dumps({"run_id": e.run_id, "prompt_id": e.prompt_id, "server": e.server, "host": e.host,
                             "pid": e.pid}) for e in entries]
        claimed.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(claimed, path)
    else:
        claimed.unlink(missing_ok=True)


# --- on a remote store: one object per record -------------------------------------------------------------------


def _parse(data: bytes) -> Entry | None:
    try:
        raw = json.loads(data)
        return Entry(str(raw["run_id"]), str(raw["prompt_id"]), str(raw["server"]), str(raw["host"]),
                     int(raw["pid"]))
    except (ValueError, KeyError, TypeError):
        return None  # not one of ours, or damaged: left alone


def _stored_entries(store: Store, keys: list[str]) -> Iterator[tuple[str, Entry]]:
    for key in keys:
        try:
            entry = _parse(store.get_bytes(key, max_bytes=64 * 1024))
        except ObjectMissing:
            continue  # its run ended, or another sweeper cancelled it meanwhile
        if entry is not None:
            yield key, entry


def _cancel_stored_orphans(store: Store, server: str, cancel: Callable[[str], None],
                           run_ended: Callable[[str], bool], only_run: str | None) -> list[Entry]:
    """cancel_orphans on a remote store. There is no atomic rename to claim a run's records with, and none is
    needed: cancelling a prompt is idempotent (one already cancelled or finished is left alone by the server),
    so two sweepers racing over the same dead run at worst both cancel a prompt, and deleting a deleted record
    is no error. Each record is deleted once its prompt is cancelled; one whose cancel failed stays for the next
    sweep."""
    cancelled: list[Entry] = []
    # The listing is paged and sorted by key, so one run's records come together: one run in memory at a time.
    # `only_run` lists that run's folder alone.
    folder = run_prefix(only_run) if only_run else FOLDER
    listing = (o.key for o in store.objects(folder) if o.key.endswith(".json") and o.key.count("/") == 2)
    for _, keys in groupby(listing, key=lambda k: k.rsplit("/", 1)[0]):
        keys = list(keys)
        records = _stored_entries(store, keys)
        first = next(records, None)
        if first is None or (only_run and first[1].run_id != only_run):
            continue
        if not _is_dead(first[1], run_ended, only_run):
            continue  # a live run's records are read no further
        for key, entry in [first, *records]:
            if entry.server != server:
                continue  # another server's prompts: swept by whoever talks to that server
            try:
                cancel(entry.prompt_id)
            except Exception as exc:  # keep it on record: the next sweep tries again
                log.warning("could not cancel prompt %s of dead run %s: %s", entry.prompt_id, entry.run_id, exc)
                continue
            cancelled.append(entry)
            store.delete(key)
    return cancelled
