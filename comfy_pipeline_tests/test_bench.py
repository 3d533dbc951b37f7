"""`comfy-pipeline bench --quick --json`, run once as a user would. Not a timed test: the values are only
checked to be real measurements (finite, positive), never against the targets."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
FIGURES = {
    "notice_latency_median_ms", "notice_latency_p95_ms", "gpu_utilisation", "job_overhead_s",
    "download_peak_memory_mb", "video_validation_s", "definitions_validate_s",
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "comfy-pipeline"), "bench", "--quick", "--json"],
        cwd=tmp_path_factory.mktemp("bench"), capture_output=True, text=True, timeout=240,
    )


def test_quick_bench_reports_every_figure_as_a_real_measurement(quick_run):
    assert quick_run.returncode in (0, 1), quick_run.stderr[-2000:]
    report = json.loads(quick_run.stdout)
    assert report["quick"] is True and report["machine"]["cpus"] >= 1
    figures = {f["key"]: f for f in report["figures"]}
    assert set(figures) == FIGURES
    for key, figure in figures.items():
        assert figure["error"] is None, (key, figure["error"])
        for column in ("ours", "baseline", "ratio"):
            value = figure[column]
            assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, column, value)
        assert figure["baseline_is"] and figure["unit"] and figure["label"]
        if key == "notice_latency_p95_ms":
            assert figure["target"] is None and figure["passed"] is None  # shown, no target
        else:
            assert figure["target"] > 0 and isinstance(figure["passed"], bool)


def test_exit_code_says_whether_every_target_was_met(quick_run):
    report = json.loads(quick_run.stdout)
    missed = sorted(f["key"] for f in report["figures"] if f["passed"] is False)
    assert sorted(report["missed"]) == missed
    assert report["passed"] is (not missed)
    if missed:
        assert quick_run.returncode == 1
        assert f"target missed: {', '.join(report['missed'])}" in quick_run.stderr
    else:
        assert quick_run.returncode == 0


def test_usage_error_exits_2():
    proc = subprocess.run([str(BIN / "comfy-pipeline"), "bench", "--fast"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unrecognized arguments: --fast" in proc.stderr
