"""`comfy-pipeline check --report` on a progress file of the wrong shape: exit 2 naming the file, never a traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from comfy_pipeline.cli.checkpoints import CheckpointError, CheckpointStore

GOOD = {"version": 1, "tests": ["a", "b"], "consecutive_failures": 0, "started_at": 1.0, "updated_at": 1.0,
        "results": {"a": {"success": True, "duration": 1.0, "details": {}, "finished_at": 1.0}}}

WRONG_SHAPES = {
    "a list": [],
    "tests not a list": {**GOOD, "tests": "a,b"},
    "a test name not a string": {**GOOD, "tests": [["a"], "b"]},
    "results a list": {**GOOD, "results": []},
    "a result not an object": {**GOOD, "results": {"a": 5}},
    "a result without success": {**GOOD, "results": {"a": {"duration": 1.0, "details": {}}}},
    "success a string": {**GOOD, "results": {"a": {"success": "yes", "duration": 1.0, "details": {}}}},
    "duration a string": {**GOOD, "results": {"a": {"success": True, "duration": "1s", "details": {}}}},
    "details a list": {**GOOD, "results": {"a": {"success": True, "duration": 1.0, "details": []}}},
    "a result for an unknown test": {**GOOD, "results": {"z": GOOD["results"]["a"]}},
    "consecutive_failures a string": {**GOOD, "consecutive_failures": "2"},
    "consecutive_failures a list": {**GOOD, "consecutive_failures": [1]},
    "no started_at": {k: v for k, v in GOOD.items() if k != "started_at"},
}


def report(state_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "COMFYUI_", "COMFY_PIPELINE_"))}
    return subprocess.run([sys.executable, "-m", "comfy_pipeline.cli", "check", "--report", "--state-dir",
                           str(state_dir)], env=env, capture_output=True, text=True, timeout=120)


def test_a_good_file_reports(tmp_path):
    (tmp_path / "check-progress.json").write_text(json.dumps(GOOD))
    proc = report(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Progress: 1/2 completed" in proc.stdout


@pytest.mark.parametrize("shape", sorted(WRONG_SHAPES))
def test_every_wrong_shape_is_refused_naming_the_file(tmp_path, shape):
    path = tmp_path / "check-progress.json"
    path.write_text(json.dumps(WRONG_SHAPES[shape]))
    with pytest.raises(CheckpointError, match=f"progress file {path} is unreadable"):
        CheckpointStore(path).format_report()
    with pytest.raises(CheckpointError, match="is unreadable"):
        CheckpointStore(path).begin(GOOD["tests"], resume=True)


@pytest.mark.parametrize("shape", ["a result not an object", "success a string", "a test name not a string"])
def test_check_report_exits_2_naming_the_file(tmp_path, shape):
    path = tmp_path / "check-progress.json"
    path.write_text(json.dumps(WRONG_SHAPES[shape]))
    proc = report(tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert str(path) in proc.stderr and "Traceback" not in proc.stderr
