"""README's commands, run exactly as a user types them, as subprocesses."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from comfy_pipeline.media import probe_image, probe_video
from comfy_pipeline.simulator import Simulator

BIN = Path(sys.executable).parent


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "COMFYUI_", "COMFY_PIPELINE_"))}
    env.update(extra)
    return env


def test_readme_main_command_runs_the_whole_pipeline_on_a_fresh_machine(tmp_path):
    # README: dagster job execute -m comfy_pipeline -j image_to_video_job   (nothing else set)
    proc = subprocess.run(
        [str(BIN / "dagster"), "job", "execute", "-m", "comfy_pipeline", "-j", "image_to_video_job"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    outputs = tmp_path / "comfy_outputs"
    (png,) = outputs.rglob("*.png")
    (mp4,) = outputs.rglob("*.mp4")
    (report,) = outputs.rglob("validation_report.json")
    assert (probe_image(png).width, probe_image(png).height) == (1024, 784)
    video = probe_video(mp4)
    assert (video.width, video.height, video.frame_count) == (1280, 704, 121)
    assert '"failed": 0' in report.read_text()
    assert "backend: simulator" in log
    assert str(png.name) in log  # the log says where the outputs are
    assert not list(tmp_path.glob(".tmp_dagster_home_*"))


def test_definitions_load_from_workspace_and_module(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    for target in (["-w", str(repo / "workspace.yaml")], ["-m", "comfy_pipeline"]):
        proc = subprocess.run(
            [str(BIN / "dagster"), "definitions", "validate", *target],
            cwd=repo, env=clean_env(), capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_terminating_a_run_cancels_its_prompt_on_the_server(tmp_path):
    image = tmp_path / "start.png"
    from PIL import Image

    Image.effect_noise((320, 240), 50).convert("RGB").save(image)
    config = tmp_path / "run.yaml"
    config.write_text(f"ops:\n  ltx2_video:\n    config:\n      input_images: ['{image}']\n      frames: 9\n")
    with Simulator(data_dir=tmp_path / "sim", video_seconds=120) as sim:
        proc = subprocess.Popen(
            [str(BIN / "dagster"), "job", "execute", "-m", "comfy_pipeline", "-j", "video_generation_job", "-c", str(config)],
            cwd=tmp_path, env=clean_env(COMFYUI_URL=sim.url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                if requests.get(f"{sim.url}/queue", timeout=5).json()["queue_running"]:
                    break
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.2)
            else:
                raise AssertionError("the prompt never started running on the simulator")
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode != 0
        # The interrupt lands at the next sampler step on the server, as on a real GPU.
        deadline = time.monotonic() + 20
        while (queue := requests.get(f"{sim.url}/queue", timeout=5).json())["queue_running"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert queue == {"queue_running": [], "queue_pending": []}
        history = requests.get(f"{sim.url}/history", timeout=5).json()
        (entry,) = history.values()
        assert entry["status"]["messages"][-1][0] == "execution_interrupted"


def test_readme_run_config_example_is_valid():
    import re

    import dagster as dg
    import yaml

    from comfy_pipeline.definitions import defs
    from comfy_pipeline.prompts import PromptSpec, check_specs

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (block,) = re.findall(r"```yaml\n# my_prompts.yaml\n(.*?)```", readme, re.S)
    config = yaml.safe_load(block)
    dg.validate_run_config(defs.resolve_job_def("image_to_video_job"), config)
    check_specs([PromptSpec(**p) for p in config["ops"]["prompt"]["config"]["prompts"]])
