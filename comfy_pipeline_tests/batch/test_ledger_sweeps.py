"""The prompt ledger when several runs start at once and sweep up the same dead runs' records (as
`comfy-pipeline check` starts overlapping runs): each prompt is cancelled once, no sweeper trips over another,
and prompts on other servers stay on record for whoever talks to those servers."""

import subprocess
import sys
import threading
import uuid

from comfy_pipeline.batch import ledger


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_concurrent_sweeps_cancel_each_dead_prompt_once(tmp_path, monkeypatch):
    monkeypatch.setattr(ledger.os, "getpid", dead_pid)  # the records are written as by a process now gone
    ids = {}
    for run in range(20):
        record = ledger.PromptLedger(tmp_path, f"run-{run}")
        ids[f"run-{run}"] = [str(uuid.uuid4()) for _ in range(3)]
        for prompt_id in ids[f"run-{run}"]:
            record.record(prompt_id, "http://a:8188")
        record.record(str(uuid.uuid4()), "http://b:8188")  # moved to another server: b's sweepers' business
    monkeypatch.undo()
    cancelled: list[str] = []
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            ledger.cancel_orphans(tmp_path, "http://a:8188", cancelled.append, lambda _: True)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=sweep) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(cancelled) == sorted(p for run in ids.values() for p in run)  # each once
    left = sorted((tmp_path / ledger.FOLDER).iterdir())
    assert [p.suffix for p in left] == [".jsonl"] * 20  # no claimed copy left behind
    for path in left:
        assert [e.server for e in ledger.read(path)] == ["http://b:8188"]
    found = ledger.cancel_orphans(tmp_path, "http://b:8188", cancelled.append, lambda _: True)
    assert len(found) == 20 and not list((tmp_path / ledger.FOLDER).iterdir())
