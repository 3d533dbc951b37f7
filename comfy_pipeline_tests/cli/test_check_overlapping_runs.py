"""`comfy-pipeline check` with overlapping runs, as a user runs it: real subprocesses, a simulator on loopback, real
Dagster runs. No timing targets here (the bench has those): only what overlapping must not break."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import requests
from dagster._core.instance.ref import InstanceRef

from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import check, report_of

# slow tier (pytest -m slow; CI runs every tier): whole check runs with overlapping Dagster runs
pytestmark = pytest.mark.slow

ENV_PREFIXES = ("DAGSTER_", "COMFYUI_", "COMFY_PIPELINE_", "TEST_TIMEOUT")


def prompt_args(count: int) -> list[str]:
    return [arg for i in range(count) for arg in ("--prompt", f"overlap prompt {i}")]


def test_runs_overlap_and_each_test_keeps_its_own_run_outputs_and_checkpoint(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.4) as sim:
        proc = check(tmp_path, "--test-type", "image-only", "--comfyui-url", sim.url, "--json", *prompt_args(4),
                     DAGSTER_HOME=str(home))
        started = sim.started_prompts()
    assert proc.returncode == 0, proc.stderr
    tests = report_of(proc)["tests"]
    assert [t["name"] for t in tests] == ["image-1", "image-2", "image-3", "image-4"]  # as planned
    assert len({t["run_id"] for t in tests}) == 4 and len(started) == 4  # one run and one prompt per test
    for i, test in enumerate(tests):
        assert test["success"] and len(test["outputs"]) == 1 and Path(test["outputs"][0]).is_file()
        assert f"overlap-prompt-{i}" in Path(test["outputs"][0]).name  # its own prompt's image, not another's
        assert {c["name"] for c in test["checks"]} == {"format", "file_size", "decodes", "dimensions",  # the file
                                                       "brightness", "detail"}  # the picture
    # The runs were really in flight together: some run started before the one before it had ended.
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        records = {r.dagster_run.run_id: r for r in instance.get_run_records()}
    spans = sorted((records[t["run_id"]].start_time, records[t["run_id"]].end_time) for t in tests)
    assert all(r.dagster_run.is_success for r in records.values())
    assert any(later_start < earlier_end for (_, earlier_end), (later_start, _) in zip(spans, spans[1:]))
    # Every result was checkpointed with its run.
    progress = json.loads((tmp_path / "state" / "check-progress.json").read_text())
    assert {name: r["details"]["run_id"] for name, r in progress["results"].items()} == {
        t["name"]: t["run_id"] for t in tests}
    # Interleaved progress lines say which test they belong to.
    assert "image-2|  [generated_image]" in proc.stderr and "image-4|  [validation_report]" in proc.stderr


def test_breaker_stops_new_tests_and_says_how_many_never_started(tmp_path):
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.01) as failing:
        failing.set_fault("execution-error")
        proc = check(tmp_path, "--test-type", "image-only", "--comfyui-url", failing.url, "--json", *prompt_args(6))
        ran = len(failing.started_prompts())
        assert proc.returncode == 1
        report = report_of(proc)
        failed = [t for t in report["tests"] if not t["success"]]
        assert len(failed) == len(report["tests"]) == 3 and ran == 3  # nothing started after the third failure
        assert "stopping: 3 consecutive failures (circuit breaker): 3 test(s) not started" in proc.stderr
        assert report["progress"]["status"] == "stopped by circuit breaker" and report["progress"]["pending"] == 3

        # Still broken: the resumed check gives the three remaining tests their fresh chance, and no more.
        again = check(tmp_path, "--test-type", "image-only", "--comfyui-url", failing.url, "--json", "--resume",
                      *prompt_args(6))
    assert again.returncode == 1
    assert [t["name"] for t in report_of(again)["tests"]] == ["image-4", "image-5", "image-6"]
    assert report_of(again)["progress"]["pending"] == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_every_run_cancels_its_prompts_and_resume_finishes(tmp_path, sig):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    args = ["--test-type", "image-only", *prompt_args(5)]
    progress = tmp_path / "state" / "check-progress.json"
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.05) as sim:
        sim.hold_sampling()  # the first prompt stays running until the end: no test can finish before the signal
        proc = subprocess.Popen(
            [sys.executable, "-m", "comfy_pipeline.cli", "check", "--state-dir", str(tmp_path / "state"),
             "--output-dir", str(tmp_path / "out"), "--comfyui-url", sim.url, *args],
            cwd=tmp_path, env=clean, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        # Wait until two runs are waiting on their prompts (one held on the GPU, the next queued behind it).
        runs_waiting = threading.Event()
        deadline = time.monotonic() + 240  # generous: a loaded machine starts Dagster slowly
        while time.monotonic() < deadline and proc.poll() is None:
            started = {line.split("|", 1)[0] for line in list(lines) if "|  [generated_image]" in line}
            queue = requests.get(f"{sim.url}/queue", timeout=5).json()
            if {"image-1", "image-2"} <= started and queue["queue_running"] and queue["queue_pending"]:
                runs_waiting.set()
                break
            time.sleep(0.05)
        if not runs_waiting.is_set():
            proc.kill()
            pytest.fail("the check never had two runs waiting on their prompts")
        proc.send_signal(sig)
        proc.wait(timeout=120)
        reader.join(timeout=30)
        stderr = "".join(lines)
        assert proc.returncode == 130, stderr
        assert "interrupted:" in stderr and "--resume" in stderr
        queue = requests.get(f"{sim.url}/queue", timeout=5).json()
        assert queue["queue_running"] == [] and queue["queue_pending"] == []  # nothing of ours left on the GPU
        assert not list((tmp_path / "out" / ".inflight").glob("*.jsonl"))  # and nothing left to sweep later
        recorded = set(json.loads(progress.read_text())["results"])
        assert recorded == set()  # the interrupted tests are not recorded as results

        sim.release_sampling()

        resumed = check(tmp_path, "--comfyui-url", sim.url, "--resume", "--json", *args)
    assert resumed.returncode == 0, resumed.stderr
    ran_now = {t["name"] for t in report_of(resumed)["tests"]}
    assert ran_now == {f"image-{i}" for i in range(1, 6)} - recorded
    assert report_of(resumed)["progress"]["status"] == "completed"


def test_prompts_queued_before_dagster_loads_are_adopted_by_their_runs_and_run_once(tmp_path):
    """The first tests' prompts are on the GPU before Dagster is imported; each test's run adopts its own (same
    prompt id, nothing posted twice), downloads its own image and hears its progress on its socket."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.2) as sim:
        sim.hold_sampling()  # until the third test's run waits on its prompt: whatever the machine's speed
        proc = subprocess.Popen(
            [sys.executable, "-m", "comfy_pipeline.cli", "check", "--state-dir", str(tmp_path / "state"),
             "--output-dir", str(tmp_path / "out"), "--comfyui-url", sim.url, "--test-type", "image-only",
             "--json", *prompt_args(4)],
            cwd=tmp_path, env=clean, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if any(line.startswith("image-3|  [generated_image]") for line in list(lines)):
                break
            time.sleep(0.05)
        sim.release_sampling()
        stdout = proc.stdout.read()  # the JSON report, at the end
        proc.wait(timeout=240)
        reader.join(timeout=30)
        started = sim.started_prompts()
    stderr = "".join(lines)
    assert proc.returncode == 0, stderr
    tests = json.loads(stdout)["tests"]
    assert all(t["success"] for t in tests)
    assert len(started) == 4 and len({s["prompt_id"] for s in started}) == 4  # four prompts, each run once
    for i, (test, ran) in enumerate(zip(tests, started)):
        assert f"overlap-prompt-{i}" in Path(test["outputs"][0]).name
        assert ran["filename_prefixes"] == [f"comfy_pipeline/{test['run_id'][:8]}/image_00"]  # the run's own graph
    # The third test's prompt was still waiting when its run started: its progress reached that run.
    assert any(line.startswith("image-3|") and "(KSampler) step" in line for line in stderr.splitlines())
    assert not list((tmp_path / "out" / ".inflight").glob("*.jsonl"))
