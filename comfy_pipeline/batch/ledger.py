"""A written record of the prompts a run has on a ComfyUI server, so a run that dies cannot leave GPU work behind.

Prompt ids are chosen by the client, so each one is written down here *before* it is submitted. A run that ends
normally deletes its record. A run that dies (`kill -9`, an evicted pod) leaves it behind, and whoever comes next
against the same server (the next batch, or the failure sensor once Dagster marks the run failed) cancels every
prompt in it that the server still has queued or running. Cancelling is idempotent: a prompt that already
finished is left alone. No Dagster here.

Layout: `<output folder>/.inflight/<run id>.jsonl`, one JSON line per prompt: id, server, host, pid.
"""

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from comfy_pipeline.batch import outputs

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
    """The record of one run's prompts, on whichever servers they went to."""

    def __init__(self, output_dir: str | Path, run_id: str):
        self.path = outputs.confined(Path(output_dir) / FOLDER, f"{outputs.slugify(run_id, 64)}.jsonl")
        self.run_id = run_id

    def record(self, prompt_id: str, server: str) -> None:
        """Called before the prompt is submitted: a crash right after the submit still leaves its id behind.
        A prompt moved to another server is recorded once more, with that server."""
        entry = {"run_id": self.run_id, "prompt_id": prompt_id, "server": server,
                 "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
        outputs.append_line(self.path, json.dumps(entry))

    def close(self) -> None:
        """Every prompt ended or was cancelled: nothing is left to clean up after this run."""
        self.path.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()  # only when empty: other runs may be under way
        except OSError:
            pass


def has_record(output_dir: str | Path, run_id: str) -> bool:
    return (Path(output_dir) / FOLDER / f"{outputs.slugify(run_id, 64)}.jsonl").is_file()


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


def cancel_orphans(output_dir: str | Path, server: str, cancel: Callable[[str], None],
                   run_ended: Callable[[str], bool], *, only_run: str | None = None) -> list[Entry]:
    """Cancel the prompts on `server` of every dead run and delete their records; the cancelled entries.

    A run is dead when Dagster says it ended (`run_ended(run_id)`) yet its record is still there, or when its
    process on this host is gone. `only_run` sweeps that one run, which Dagster has declared failed (the failure
    sensor's case), whatever its process looks like."""
    folder = Path(output_dir) / FOLDER
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
        alive = _process_alive(first)
        if not only_run and (alive or (alive is None and not run_ended(first.run_id))):
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
