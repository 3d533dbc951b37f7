"""The prompt ledger on an object store (a real S3 API server on loopback): one object per record, since objects
can be neither appended to nor renamed; a dead run's prompts cancelled and their records deleted, a live run's
kept, a prompt whose cancel failed kept on record for the next sweep. And the same calls on a local folder keep
its one-file layout."""

import json
import subprocess
import sys
import threading
import uuid

import pytest

from comfy_pipeline.batch import ledger
from comfy_pipeline.storage import StoreError, open_store
from comfy_pipeline_tests.support.helpers import StepServers

A, B = "http://a:8188", "http://b:8188"


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


@pytest.fixture
def bucket(s3_env) -> str:
    return s3_env.new_bucket()


@pytest.fixture
def store(bucket):
    return open_store(f"s3://{bucket}/team/out")


def test_records_are_one_object_each_and_close_deletes_them(store, s3_env, bucket):
    record = ledger.PromptLedger(store, "run-1")
    assert record.path is None and not ledger.has_record(store, "run-1")
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    record.record(first, A)
    record.record(second, A)
    record.record(second, B)  # moved to another server: recorded once more
    keys = s3_env.keys(bucket, "team/out/.inflight/")
    assert len(keys) == 3 and all(k.startswith("team/out/.inflight/run-1/") and k.endswith(".json") for k in keys)
    entries = [json.loads(s3_env.read(bucket, k)) for k in keys]
    assert [(e["prompt_id"], e["server"]) for e in entries] == [(first, A), (second, A), (second, B)]  # in order
    assert ledger.has_record(store, "run-1") and not ledger.has_record(store, "run-2")
    # a location string works as well as a store
    assert ledger.has_record(f"s3://{bucket}/team/out", "run-1")
    record.close()
    assert s3_env.keys(bucket, "team/out/.inflight/") == []
    assert not ledger.has_record(store, "run-1")


def test_a_dead_runs_prompts_are_cancelled_a_live_ones_kept(store, s3_env, bucket, monkeypatch):
    monkeypatch.setattr(ledger.os, "getpid", dead_pid)  # written as by a process now gone
    dead = ledger.PromptLedger(store, "dead-run")
    dead_ids = [str(uuid.uuid4()) for _ in range(3)]
    for prompt_id in dead_ids:
        dead.record(prompt_id, A)
    elsewhere = str(uuid.uuid4())
    dead.record(elsewhere, B)
    monkeypatch.undo()
    alive = ledger.PromptLedger(store, "live-run")  # this very process: alive
    alive.record(str(uuid.uuid4()), A)

    cancelled: list[str] = []
    found = ledger.cancel_orphans(store, A, cancelled.append, lambda _: False)
    assert sorted(cancelled) == sorted(dead_ids)
    assert sorted(e.prompt_id for e in found) == sorted(dead_ids) and {e.run_id for e in found} == {"dead-run"}
    left = s3_env.keys(bucket, "team/out/.inflight/")
    assert len(left) == 2 and sum("/live-run/" in k for k in left) == 1
    assert [json.loads(s3_env.read(bucket, k))["server"] for k in left if "/dead-run/" in k] == [B]
    # B's sweep takes the rest of the dead run; the live run stays on record
    assert [e.prompt_id for e in ledger.cancel_orphans(store, B, cancelled.append, lambda _: False)] == [elsewhere]
    assert not ledger.has_record(store, "dead-run") and ledger.has_record(store, "live-run")


def test_a_run_elsewhere_is_swept_only_once_dagster_says_it_ended(store, monkeypatch):
    monkeypatch.setattr(ledger.socket, "gethostname", lambda: "another-pod")
    record = ledger.PromptLedger(store, "remote-run")
    record.record("p-1", A)
    monkeypatch.undo()
    cancelled: list[str] = []
    assert ledger.cancel_orphans(store, A, cancelled.append, lambda _: False) == []
    assert ledger.has_record(store, "remote-run")
    ended = ledger.cancel_orphans(store, A, cancelled.append, lambda run_id: run_id == "remote-run")
    assert [e.prompt_id for e in ended] == cancelled == ["p-1"]
    assert not ledger.has_record(store, "remote-run")


def test_only_run_sweeps_that_run_whatever_its_process_looks_like(store):
    for run in ("failed-run", "other-run"):  # both written by this live process
        ledger.PromptLedger(store, run).record(f"{run}-prompt", A)
    cancelled: list[str] = []
    found = ledger.cancel_orphans(store, A, cancelled.append, lambda _: False, only_run="failed-run")
    assert [e.prompt_id for e in found] == cancelled == ["failed-run-prompt"]
    assert not ledger.has_record(store, "failed-run") and ledger.has_record(store, "other-run")


def test_a_failed_cancel_keeps_its_record_for_the_next_sweep(store, monkeypatch):
    monkeypatch.setattr(ledger.os, "getpid", dead_pid)
    record = ledger.PromptLedger(store, "dead-run")
    record.record("refused", A)
    record.record("fine", A)
    monkeypatch.undo()
    cancelled: list[str] = []

    def cancel(prompt_id: str) -> None:
        if prompt_id == "refused":
            raise ConnectionError("server down")
        cancelled.append(prompt_id)

    assert [e.prompt_id for e in ledger.cancel_orphans(store, A, cancel, lambda _: True)] == ["fine"]
    assert ledger.has_record(store, "dead-run")
    found = ledger.cancel_orphans(store, A, cancelled.append, lambda _: True)  # the server is back
    assert [e.prompt_id for e in found] == ["refused"] and cancelled == ["fine", "refused"]
    assert not ledger.has_record(store, "dead-run")


def test_racing_sweepers_cancel_every_dead_prompt_and_leave_no_record(store, monkeypatch):
    """No claim by rename on a store: cancels are idempotent, so racing sweepers may both cancel a prompt, but
    every one is cancelled, none trips over another, and the records are gone."""
    monkeypatch.setattr(ledger.os, "getpid", dead_pid)
    ids = []
    for run in range(4):
        record = ledger.PromptLedger(store, f"run-{run}")
        for _ in range(3):
            ids.append(str(uuid.uuid4()))
            record.record(ids[-1], A)
    monkeypatch.undo()
    cancelled: list[str] = []
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            ledger.cancel_orphans(store, A, cancelled.append, lambda _: True)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and set(cancelled) == set(ids)
    assert not any(ledger.has_record(store, f"run-{run}") for run in range(4))


def test_a_missing_bucket_is_a_store_error_that_says_so(s3_env):
    store = open_store(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/out")
    with pytest.raises(StoreError, match="bucket does not exist"):
        ledger.cancel_orphans(store, A, lambda _: None, lambda _: True)


def test_a_record_that_cannot_be_deleted_does_not_fail_a_finished_run(store, monkeypatch, caplog):
    record = ledger.PromptLedger(store, "done-run")
    record.record("p-1", A)

    def refuse(key: str) -> None:
        raise StoreError(f"deleting {key}: access denied")

    monkeypatch.setattr(store, "delete", refuse)
    record.close()  # the run's work is done: a record left behind is swept later (its prompts long finished)
    assert "could not delete the prompt records of run done-run" in caplog.text
    monkeypatch.undo()
    swept = ledger.cancel_orphans(store, A, lambda _: None, lambda _: True, only_run="done-run")
    assert [e.prompt_id for e in swept] == ["p-1"] and not ledger.has_record(store, "done-run")


def test_a_local_store_keeps_the_one_file_layout(tmp_path):
    store = open_store(str(tmp_path / "out"))
    record = ledger.PromptLedger(store, "run-1")
    record.record("p-1", A)
    assert record.path == tmp_path / "out" / ".inflight" / "run-1.jsonl" and record.path.is_file()
    assert ledger.has_record(store, "run-1") and ledger.has_record(tmp_path / "out", "run-1")
    assert [e.prompt_id for e in ledger.cancel_orphans(store, A, lambda _: None, lambda _: True,
                                                       only_run="run-1")] == ["p-1"]
    assert not (tmp_path / "out" / ".inflight").exists() or not list((tmp_path / "out" / ".inflight").iterdir())


def test_a_gpu_step_on_the_store_records_each_prompt_before_submitting_and_leaves_no_record(
        simulator, store, s3_env, bucket, monkeypatch):
    import logging

    from comfy_pipeline.batch import step
    from comfy_pipeline.batch.outputs import RunFolder
    from comfy_pipeline.comfyui.client import ComfyUIClient
    from comfy_pipeline.media import ImageThresholds
    from comfy_pipeline.workflows.prompts import PromptSpec

    written: list[tuple[str, str]] = []  # each record's prompt, and what the server knew of it then
    put_bytes = store.put_bytes

    def spy(key: str, data: bytes, **options) -> str:
        if key.startswith(ledger.FOLDER):
            prompt_id = json.loads(data)["prompt_id"]
            written.append((prompt_id, client.status(prompt_id)))
        return put_bytes(key, data, **options)

    monkeypatch.setattr(store, "put_bytes", spy)
    with ComfyUIClient(simulator.url) as client:
        result = step.run_gpu_step(
            step.IMAGES, [step.Source(i, PromptSpec(text=f"fox {i}", width=256, height=256, seed=i))
                          for i in range(2)],
            workflow_name="z_image_turbo_generation", prompt_ids=[], servers=StepServers([client], store),
            thresholds=ImageThresholds(min_bytes=1), run_id="run-on-s3", run_folder=RunFolder.of(store, "run-on-s3", 0),
            run_ended=lambda run_id: False, log=logging.getLogger("test"))
    assert all(item.passed for item in result.items)
    assert len(written) == 2 and [status for _, status in written] == ["unknown"] * 2  # recorded, then submitted
    assert s3_env.keys(bucket, "team/out/.inflight/") == []
