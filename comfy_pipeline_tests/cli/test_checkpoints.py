"""Progress of a multi-test run: written as each test finishes, resumable after a kill, with a circuit breaker."""

import json
import subprocess
import sys
import textwrap

import pytest

from comfy_pipeline.cli.checkpoints import CheckpointError, CheckpointStore

TESTS = ["image: a red fox", "image: a lighthouse", "video: a red fox"]


def test_fresh_run_records_each_result_on_disk_at_once(tmp_path):
    path = tmp_path / "state" / "check-progress.json"
    store = CheckpointStore(path)
    assert store.begin(TESTS, resume=False) == TESTS

    store.record(TESTS[0], success=True, duration=1.25, details={"outputs": [tmp_path / "fox.png"]})
    on_disk = json.loads(path.read_text())
    assert on_disk["tests"] == TESTS
    assert on_disk["results"][TESTS[0]]["success"] is True
    assert on_disk["results"][TESTS[0]]["details"] == {"outputs": [str(tmp_path / "fox.png")]}
    assert [p.name for p in path.parent.iterdir()] == ["check-progress.json"]  # no temp file left behind


def test_resume_skips_finished_tests_passed_or_failed(tmp_path):
    path = tmp_path / "check-progress.json"
    first = CheckpointStore(path)
    first.begin(TESTS, resume=False)
    first.record(TESTS[0], success=True, duration=1.0, details={})
    first.record(TESTS[1], success=False, duration=2.0, details={"error": "timeout"})

    again = CheckpointStore(path)
    assert again.begin(TESTS, resume=True) == [TESTS[2]]
    again.record(TESTS[2], success=True, duration=3.0, details={})
    report = again.report()
    assert (report["completed"], report["passed"], report["failed"], report["pending"]) == (3, 2, 1, 0)
    assert report["status"] == "completed"
    failed = {"name": TESTS[1], "status": "failed", "duration": 2.0, "details": {"error": "timeout"}}
    assert report["tests"][1] == failed

    # Without resume, everything runs again and the old results are gone.
    fresh = CheckpointStore(path)
    assert fresh.begin(TESTS, resume=False) == TESTS
    assert fresh.report()["completed"] == 0


def test_resume_after_a_killed_run(tmp_path):
    path = tmp_path / "check-progress.json"
    # A run in another process records one result and is killed in the middle of the second test.
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from comfy_pipeline.cli.checkpoints import CheckpointStore
        store = CheckpointStore(Path({str(path)!r}))
        store.begin({TESTS!r}, resume=False)
        store.record({TESTS[0]!r}, success=True, duration=0.5, details={{"outputs": ["fox.png"]}})
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert killed.returncode == -9, killed.stderr

    store = CheckpointStore(path)
    assert store.begin(TESTS, resume=True) == TESTS[1:]
    assert store.report()["tests"][0]["details"] == {"outputs": ["fox.png"]}


def test_resume_with_other_tests_is_refused(tmp_path):
    path = tmp_path / "check-progress.json"
    CheckpointStore(path).begin(TESTS, resume=False)
    differ = r"cannot resume: the tests differ .* \(new: image: a cat; missing: video: a red fox\)"
    with pytest.raises(CheckpointError, match=differ):
        CheckpointStore(path).begin(TESTS[:2] + ["image: a cat"], resume=True)
    # Same tests in another order are the same run.
    assert CheckpointStore(path).begin(list(reversed(TESTS)), resume=True) == list(reversed(TESTS))


def test_resume_without_earlier_progress_runs_everything(tmp_path):
    assert CheckpointStore(tmp_path / "none.json").begin(TESTS, resume=True) == TESTS


def test_unreadable_progress_file(tmp_path):
    path = tmp_path / "check-progress.json"
    path.write_text("{ not json")
    unreadable = "progress file .* is unreadable .*delete it, or start over without --resume"
    with pytest.raises(CheckpointError, match=unreadable):
        CheckpointStore(path).begin(TESTS, resume=True)
    assert CheckpointStore(path).begin(TESTS, resume=False) == TESTS  # a fresh run replaces it


def test_circuit_breaker_opens_after_three_consecutive_failures(tmp_path):
    names = [f"test {i}" for i in range(6)]
    store = CheckpointStore(tmp_path / "p.json")
    store.begin(names, resume=False)
    store.record("test 0", success=False, duration=1, details={})
    store.record("test 1", success=False, duration=1, details={})
    store.record("test 2", success=True, duration=1, details={})  # a success resets the count
    assert store.consecutive_failures == 0 and not store.breaker_open
    for name in ("test 3", "test 4"):
        store.record(name, success=False, duration=1, details={})
        assert not store.breaker_open
    store.record("test 5", success=False, duration=1, details={})
    assert store.consecutive_failures == 3 and store.breaker_open

    names.append("test 6")
    store = CheckpointStore(tmp_path / "q.json")
    store.begin(names, resume=False)
    for name in names[:3]:
        store.record(name, success=False, duration=1, details={})
    report = store.report()
    assert report["status"] == "stopped by circuit breaker" and report["breaker_open"]
    assert "stopped after 3 consecutive failures" in store.format_report()

    # Resuming after the cause is fixed gives the remaining tests a fresh chance.
    resumed = CheckpointStore(tmp_path / "q.json")
    assert resumed.begin(names, resume=True) == names[3:]
    assert resumed.consecutive_failures == 0 and not resumed.breaker_open


def test_report_and_success_rate(tmp_path):
    path = tmp_path / "p.json"
    store = CheckpointStore(path)
    store.begin(TESTS, resume=False)
    assert store.report()["success_rate"] is None and store.report()["status"] == "not started"
    store.record(TESTS[0], success=True, duration=1.0, details={})
    store.record(TESTS[1], success=True, duration=2.5, details={})

    report = store.report()
    assert report["success_rate"] == 100.0 and report["status"] == "in progress" and report["pending"] == 1
    text = store.format_report()
    assert text.startswith("Progress: 2/3 completed\n  Passed: 2\n  Failed: 0\n")
    assert "Success Rate: 100%" in text
    assert "  [ok]   image: a lighthouse: passed (2.5 s)" in text
    assert "  [ .. ] video: a red fox: pending" in text

    store.record(TESTS[2], success=False, duration=4.0, details={"error": "no frames"})
    # A report from the file alone, as `check --report` does it in a later process.
    later = CheckpointStore(path).report()
    assert later["success_rate"] == 66.7 and later["failed"] == 1 and later["status"] == "completed"
    assert "1 of 3 tests failed" in CheckpointStore(path).format_report()


def test_misuse_is_explained(tmp_path):
    store = CheckpointStore(tmp_path / "p.json")
    with pytest.raises(CheckpointError, match="call begin"):
        store.record("x", success=True, duration=1, details={})
    with pytest.raises(CheckpointError, match="no progress recorded yet"):
        store.report()
    with pytest.raises(CheckpointError, match="repeated: a"):
        store.begin(["a", "b", "a"], resume=False)
    store.begin(["a"], resume=False)
    with pytest.raises(CheckpointError, match="test 'b' is not part of this run"):
        store.record("b", success=True, duration=1, details={})
