"""README's commands, run exactly as a user types them, as subprocesses."""

import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from comfy_pipeline.media import probe_image, probe_video
from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import BIN, REPO, clean_env, free_port, stop_group, wait_until


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
    if "Use 'dg " in log:  # Dagster's SupersessionWarning advises `dg`: README's setup must have installed it
        assert (BIN / "dg").exists()


def test_definitions_load_from_workspace_and_module(tmp_path):
    for target in (["-w", str(REPO / "workspace.yaml")], ["-m", "comfy_pipeline"]):
        proc = subprocess.run(
            [str(BIN / "dagster"), "definitions", "validate", *target],
            cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=120,
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
            [str(BIN / "dagster"), "job", "execute", "-m", "comfy_pipeline", "-j", "video_generation_job",
             "-c", str(config)],
            cwd=tmp_path, env=clean_env(COMFYUI_URL=sim.url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
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
        queue_url = f"{sim.url}/queue"
        while (queue := requests.get(queue_url, timeout=5).json())["queue_running"] and time.monotonic() < deadline:
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
    from comfy_pipeline.workflows.prompts import PromptSpec, check_specs

    readme = (REPO / "README.md").read_text()
    (block,) = re.findall(r"```yaml\n# my_prompts.yaml\n(.*?)```", readme, re.S)
    config = yaml.safe_load(block)
    dg.validate_run_config(defs.resolve_job_def("image_to_video_job"), config)
    check_specs([PromptSpec(**p) for p in config["ops"]["prompt"]["config"]["prompts"]])


def run_dg(*args: str, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "dg"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # slow tier: dg in subprocesses
def test_dg_checks_and_lists_the_definitions():
    # README: dg check defs / dg list defs, from the project folder after the one setup command
    checked = run_dg("check", "defs", cwd=REPO, env=clean_env(), timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    listed = run_dg("list", "defs", "--json", cwd=REPO, env=clean_env(), timeout=120)
    assert listed.returncode == 0, listed.stderr
    import json

    found = json.loads(listed.stdout)
    groups = {a["asset_key"]: a["group_name"] for a in found["assets"]}
    # the pipeline, and the worked example of README "Add your own workflow" in a group of its own
    assert groups == {"prompt": "comfy", "generated_image": "comfy", "ltx2_video": "comfy",
                      "validation_report": "comfy", "upscaled_image": "examples"}
    assert {"image_to_video_job", "image_generation_job", "video_generation_job"} <= {j["name"] for j in found["jobs"]}


@pytest.mark.slow  # slow tier: dg in subprocesses
def test_dg_launch_runs_the_main_job_and_single_assets(tmp_path):
    # README: dg launch --job image_to_video_job   (the current form of the main command)
    env = clean_env(DAGSTER_HOME=str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    proc = run_dg("launch", "--job", "image_to_video_job", "--target-path", str(REPO), cwd=tmp_path, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    (mp4,) = (tmp_path / "comfy_outputs").rglob("*.mp4")
    assert probe_video(mp4).frame_count == 121
    assert "SupersessionWarning" not in log
    # dg launch --assets ltx2_video: the latest images, animated again in a run of their own
    proc = run_dg("launch", "--assets", "ltx2_video", "--target-path", str(REPO), cwd=tmp_path, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert len(list((tmp_path / "comfy_outputs").rglob("*.mp4"))) == 2


@pytest.mark.slow  # slow tier: dg in subprocesses
def test_dg_dev_serves_the_code_location(tmp_path):
    # README: dg dev   (webserver + daemon; the schedule and sensors run)
    port = free_port()
    env = clean_env(DAGSTER_HOME=str(tmp_path / "home"), COMFY_PIPELINE_OUTPUT_DIR=str(tmp_path / "out"))
    (tmp_path / "home").mkdir()
    proc = subprocess.Popen(
        [str(BIN / "dg"), "dev", "--target-path", str(REPO), "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    query = '{ repositoriesOrError { ... on RepositoryConnection { nodes { name jobs { name } } } } }'
    try:
        def jobs() -> set[str]:
            try:
                answer = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=5).json()
            except requests.RequestException:
                return set()
            nodes = answer["data"]["repositoriesOrError"].get("nodes") or []
            return {job["name"] for node in nodes for job in node["jobs"]}

        assert wait_until(lambda: "image_to_video_job" in jobs(), timeout=120), "dg dev never served the jobs"
    finally:
        stop_group(proc, grace=30)
