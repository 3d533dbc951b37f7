"""`comfy-pipeline bench --quick --scale --json`, run once as a user would. Not a timed test: the values are only
checked to be real measurements (finite, positive), never against the targets."""

import json
import math
import subprocess

import pytest

from comfy_pipeline_tests.support.helpers import BIN

# slow tier (pytest -m slow; CI runs every tier): runs the quick benchmark
# Generous timeout: the bench measures real runs, which a busy machine makes several times slower.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

FIGURES = {
    "notice_latency_median_ms", "notice_latency_p95_ms", "gpu_utilisation", "job_overhead_s",
    "download_peak_memory_mb", "upload_peak_memory_mb", "video_validation_s", "definitions_validate_s",
    "content_validation_video_s", "content_validation_image_s",
    # --scale, with --quick's sizes
    "check_gpu_utilisation", "client_cost_per_prompt_ms_50", "peak_rss_growth_mb", "event_log_rows_per_prompt",
    "metadata_bytes_per_prompt", "two_server_throughput",
}
GROWTH = {"peak_rss_growth_mb"}  # a difference of two peaks: may be 0 or a little below


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "comfy-pipeline"), "bench", "--quick", "--scale", "--json"],
        cwd=tmp_path_factory.mktemp("bench"), capture_output=True, text=True, timeout=1200,
    )


def test_quick_bench_reports_every_figure_as_a_real_measurement(quick_run):
    assert quick_run.returncode in (0, 1), quick_run.stderr[-2000:]
    report = json.loads(quick_run.stdout)
    assert report["quick"] is True and report["scale"] is True and report["machine"]["cpus"] >= 1
    assert report["skipped"] == {}  # moto is installed with .[dev]: the S3 upload figure is measured
    figures = {f["key"]: f for f in report["figures"]}
    assert set(figures) == FIGURES
    for key, figure in figures.items():
        assert figure["error"] is None, (key, figure["error"])
        for column in ("ours", "baseline", "ratio"):
            value = figure[column]
            assert isinstance(value, (int, float)) and math.isfinite(value), (key, column, value)
            assert value > 0 or (key in GROWTH and column != "baseline"), (key, column, value)
        load = figure["load_average_1m"]  # every figure says what the machine was doing meanwhile
        assert load["before"] >= 0 and load["after"] >= 0, (key, load)
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


def test_scale_figures_say_how_they_were_measured(quick_run):
    figures = {f["key"]: f for f in json.loads(quick_run.stdout)["figures"]}
    check = figures["check_gpu_utilisation"]["details"]
    for run in ("ours", "one_at_a_time"):  # start-up is part of the wall time, and shown on its own
        assert check[f"until_first_prompt_s_{run}"] > 0 and check[f"wall_s_{run}"] > check[f"busy_s_{run}"]
    events = figures["metadata_bytes_per_prompt"]["details"]
    assert events["prompts"] == [4, 12] and all(n > 0 for n in events["rows"] + events["metadata_bytes"])
    assert events["largest_growth"] and all("entry" in row for row in events["largest_growth"])
    assert set(figures["peak_rss_growth_mb"]["details"]["peak_rss_mb"]) == {"10", "50"}
    servers = figures["two_server_throughput"]  # both servers took part, and the batch was shared
    assert sum(servers["details"]["prompts_per_server"]) == 8 and min(servers["details"]["prompts_per_server"]) > 0


def test_the_table_shows_each_figures_load_average():
    from comfy_pipeline.cli.bench.report import Figure, table

    figure = Figure("x", "a figure", "s", "a baseline", 1.0, "at_most", 0.5, 1.0, load=(0.25, 1.5))
    text = table([figure])
    assert "load 1m" in text.splitlines()[0] and "0.25-1.50" in text.splitlines()[2]
