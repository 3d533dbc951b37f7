"""`comfy-pipeline check` keeps the GPU fed: once a first prompt has succeeded, every remaining image test's prompt
is queued ahead (not only the breaker's three), while a broken setup still gets nothing more than before.
The simulator's sampling is held and released by the test, so every wait is on a state, never on time."""

import os
import subprocess
import sys
import threading
import time

import requests

from comfy_pipeline.comfyui.schema import OFFICIAL_MODELS
from comfy_pipeline.simulator import Simulator

ENV_PREFIXES = ("DAGSTER_", "COMFYUI_", "COMFY_PIPELINE_", "TEST_TIMEOUT")


def spawn_check(tmp_path, url: str, *args: str) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    return subprocess.Popen(
        [sys.executable, "-m", "comfy_pipeline.cli", "check", "--state-dir", str(tmp_path / "state"),
         "--output-dir", str(tmp_path / "out"), "--comfyui-url", url, *args],
        cwd=tmp_path, env=clean, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def prompts(count: int) -> list[str]:
    return [arg for i in range(count) for arg in ("--prompt", f"ahead prompt {i}")]


def on_server(url: str) -> int:
    queue = requests.get(f"{url}/queue", timeout=10).json()
    return len(queue["queue_running"]) + len(queue["queue_pending"])


def test_after_the_first_success_every_test_is_queued_ahead_before_its_run_starts(tmp_path):
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.05) as sim:
        sim.hold_sampling()
        sim.release_sampling(1)  # the first prompt succeeds; every later one is held on the "GPU"
        proc = spawn_check(tmp_path, sim.url, "--test-type", "image-only", *prompts(6))
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        try:
            # Five left after the first: with prompt 2 held, only queueing ahead can put 3 to 6 on the server (the
            # runs of tests 4 to 6 cannot start: three runs are in flight, two of them waiting on held prompts).
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and proc.poll() is None and on_server(sim.url) < 5:
                time.sleep(0.05)
            assert on_server(sim.url) == 5, "".join(lines)
            assert len(sim.started_prompts()) == 2  # the first one done, the second held
        finally:
            sim.release_sampling()
            proc.wait(timeout=240)
            reader.join(timeout=30)
        started = sim.started_prompts()
    assert proc.returncode == 0, "".join(lines)
    assert len(started) == 6 and len({s["prompt_id"] for s in started}) == 6  # each adopted, none posted twice


def test_a_failed_video_preflight_queues_nothing_ahead_for_the_pipeline_tests(tmp_path):
    image_only = {folder: [f for f in files if not f.startswith(("ltx", "gemma"))]
                  for folder, files in OFFICIAL_MODELS.items()}
    with Simulator(data_dir=tmp_path / "sim", models=image_only) as sim:
        proc = spawn_check(tmp_path, sim.url, "--test-type", "full-pipeline", "--frames", "9", *prompts(2))
        _, stderr = proc.communicate(timeout=240)
        started = sim.started_prompts()
    assert proc.returncode == 1, stderr
    assert "pre-flight of" in stderr and "failed" in stderr
    assert started == []  # the pipeline tests cannot run: none of their images was made for nothing
