"""`comfy-pipeline check` as a user runs it: subprocesses against a simulator on a real port."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import check, report_of

SMALL = ["--frames", "9"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with Simulator(data_dir=tmp_path_factory.mktemp("sim"), image_seconds=0.05, video_seconds=0.1) as simulator:
        yield simulator


def test_connection_only(sim, tmp_path):
    proc = check(tmp_path, "--test-type", "connection-only", "--comfyui-url", sim.url, "--json")
    assert proc.returncode == 0, proc.stderr
    report = report_of(proc)
    (test,) = report["tests"]
    assert test["name"] == "connection" and test["success"] and test["backend"] == "simulator"


def test_image_only_with_two_prompts_writes_the_report(sim, tmp_path):
    # Nothing queued ahead: each run queues its own prompt and hears its progress
    # (cli/test_check_overlapping_runs.py covers prompts queued ahead).
    proc = check(tmp_path, "--test-type", "image-only", "--comfyui-url", sim.url, "--json",
                 "--prompt", "a red fox", "--prompt", "a blue boat", "--seed", "5",
                 COMFY_PIPELINE_CHECK_QUEUE_AHEAD="0")
    assert proc.returncode == 0, proc.stderr
    report = report_of(proc)
    assert [t["name"] for t in report["tests"]] == ["image-1", "image-2"]
    for test in report["tests"]:
        assert test["success"] and len(test["outputs"]) == 1 and Path(test["outputs"][0]).is_file()
        assert {c["name"] for c in test["checks"]} == {"format", "file_size", "decodes", "dimensions",  # the file
                                                       "brightness", "detail"}  # the picture
        assert test["performance"]["execution"] > 0 and "queue_wait" in test["performance"]
    assert "node 57:3 (KSampler) step" in proc.stderr  # progress as it goes
    assert "image-1" in proc.stderr and "PASS" in proc.stderr  # the summary table
    assert list((tmp_path / "out" / "reports").glob("check_*.json"))


def test_video_only_needs_a_real_image(sim, tmp_path):
    missing = check(tmp_path, "--test-type", "video-only", "--comfyui-url", sim.url)
    assert missing.returncode == 2 and "needs --image" in missing.stderr and "Traceback" not in missing.stderr
    text = tmp_path / "photo.png"
    text.write_text("hello")
    bogus = check(tmp_path, "--test-type", "video-only", "--comfyui-url", sim.url, "--image", str(text))
    assert bogus.returncode == 2 and "photo.png" in bogus.stderr and "Traceback" not in bogus.stderr
    good = tmp_path / "start.png"
    Image.effect_noise((320, 240), 40).convert("RGB").save(good)
    ok = check(tmp_path, "--test-type", "video-only", "--comfyui-url", sim.url, "--image", str(good), "--json", *SMALL)
    assert ok.returncode == 0, ok.stderr
    (test,) = report_of(ok)["tests"]
    assert test["type"] == "video" and test["outputs"][0].endswith(".mp4")


def test_full_pipeline_on_the_embedded_simulator_says_so_loudly(tmp_path):
    proc = check(tmp_path, "--test-type", "full-pipeline", "--json", *SMALL)
    assert proc.returncode == 0, proc.stderr
    assert "EMBEDDED SIMULATOR" in proc.stderr
    (test,) = report_of(proc)["tests"]
    assert sorted(Path(p).suffix for p in test["outputs"]) == [".mp4", ".png"]
    assert report_of(proc)["backend"] == ["simulator"]


def test_unreachable_server_exits_2_fast_with_one_clear_line(tmp_path):
    started = time.monotonic()
    proc = check(tmp_path, "--comfyui-url", "http://user:s3cret-pass@127.0.0.1:9")
    assert proc.returncode == 2
    assert time.monotonic() - started < 20
    assert "cannot reach ComfyUI at http://***@127.0.0.1:9" in proc.stderr
    assert "s3cret-pass" not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr


def test_bad_values_are_usage_errors(sim, tmp_path):
    frames = check(tmp_path, "--comfyui-url", sim.url, "--frames", "100")
    assert frames.returncode == 2 and "frames" in frames.stderr and "8n+1" in frames.stderr
    empty = check(tmp_path, "--comfyui-url", sim.url, "--prompt", "  ")
    assert empty.returncode == 2 and "empty" in empty.stderr
    (tmp_path / "p.json").write_text('{"image_generation": [')
    broken = check(tmp_path, "--comfyui-url", sim.url, "--prompts-file", str(tmp_path / "p.json"))
    assert broken.returncode == 2 and "invalid JSON at line 1" in broken.stderr


def test_failures_exit_1_and_the_circuit_breaker_stops_after_three(tmp_path):
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.01) as failing:
        failing.set_fault("execution-error")
        prompts = [arg for i in range(5) for arg in ("--prompt", f"prompt {i}")]
        proc = check(tmp_path, "--test-type", "image-only", "--comfyui-url", failing.url, "--json", *prompts)
    assert proc.returncode == 1
    report = report_of(proc)
    assert [t["success"] for t in report["tests"]] == [False, False, False]
    assert "circuit breaker" in proc.stderr
    assert report["tests"][0]["errors"] and "failed in node" in report["tests"][0]["errors"][0]
    assert report["progress"]["pending"] == 2


def test_resume_after_a_killed_check_skips_finished_tests(tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "COMFYUI_", "COMFY_PIPELINE_"))}
    prompts = ["--prompt", "one", "--prompt", "two", "--prompt", "three"]
    progress = tmp_path / "state" / "check-progress.json"
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.05) as sim:
        sim.hold_sampling()  # the "GPU" makes exactly one image: one test can finish before the kill, no more
        sim.release_sampling(1)
        args = [sys.executable, "-m", "comfy_pipeline.cli", "check", "--state-dir", str(tmp_path / "state"),
                "--output-dir", str(tmp_path / "out"), "--test-type", "image-only", "--comfyui-url", sim.url,
                *prompts]
        proc = subprocess.Popen(args, cwd=tmp_path, env=clean, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 240  # generous: a loaded machine starts Dagster slowly
            while time.monotonic() < deadline and proc.poll() is None:
                if progress.exists() and json.loads(progress.read_text())["results"]:
                    break
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        done_before = set(json.loads(progress.read_text())["results"])
        assert len(done_before) == 1

        sim.release_sampling()
        resumed = check(tmp_path, "--test-type", "image-only", "--comfyui-url", sim.url, "--resume", "--json",
                        *prompts)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming: 1 test(s) already finished" in resumed.stderr
    ran_now = {t["name"] for t in report_of(resumed)["tests"]}
    assert ran_now == {"image-1", "image-2", "image-3"} - done_before

    summary = check(tmp_path, "--report")
    assert summary.returncode == 0 and "3/3" in summary.stdout and "100" in summary.stdout


def test_full_pipeline_preflights_both_workflows_and_prints_every_problem_before_any_gpu_time(tmp_path):
    with Simulator(data_dir=tmp_path / "sim", models={}) as bare:  # a server with no model files at all
        proc = check(tmp_path, "--test-type", "full-pipeline", "--comfyui-url", bare.url, "--prompt", "a fox",
                     *SMALL, "--json")
        started = bare.started_prompts()
    assert proc.returncode == 1, proc.stderr
    assert started == []  # not even the image: the video workflow's problems are known up front
    for workflow, model, folder in (("z_image_turbo_generation", "z_image_turbo_bf16.safetensors", "diffusion_models"),
                                    ("ltx2_image_to_video", "ltx-2-spatial-upscaler-x2-1.0.safetensors",
                                     "latent_upscale_models")):
        assert f"pre-flight of {workflow} on {bare.url} failed" in proc.stderr
        assert f"model file '{model}' is not in folder '{folder}'" in proc.stderr
    (test,) = report_of(proc)["tests"]
    assert "missing model: 3" in test["errors"][0] and "nothing was submitted" in test["errors"][0]


def test_the_model_free_workflows_smoke_test_a_server_without_models(tmp_path):
    with Simulator(data_dir=tmp_path / "sim", models={}, image_seconds=0.05, video_seconds=0.1) as bare:
        proc = check(tmp_path, "--test-type", "full-pipeline", "--comfyui-url", bare.url, "--prompt", "smoke",
                     "--workflows", "smoke_image,smoke_video", "--image-min-bytes", "100", "--video-min-bytes", "100",
                     *SMALL, "--json")
    assert proc.returncode == 0, proc.stderr
    (test,) = report_of(proc)["tests"]
    assert test["success"] and len(test["outputs"]) == 2
    assert all(c["passed"] for c in test["checks"])
    # The smoke pictures are flat and still on purpose: their workflows skip those checks, and only those.
    names = {c["name"] for c in test["checks"]}
    assert {"brightness", "start_frame"} <= names and not {"detail", "motion", "blank_frames"} & names
