"""`comfy-pipeline validate-workflow`, run as a real subprocess: exit 0 would run, 1 would not, 2 cannot check."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import free_port

Z = "z_image_turbo_generation"


def run_cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYUI_") and k != "COMFY_PIPELINE_WORKFLOWS_DIR"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "comfy_pipeline.cli", "validate-workflow", *args],
                          capture_output=True, text=True, env=env, timeout=60)


def variant(folder: Path, name: str, change) -> None:
    """A copy of the Z-Image workflow (and its map) called `name`, changed by `change(graph)`."""
    graph = json.loads((folder / f"{Z}.json").read_text())
    change(graph)
    (folder / f"{name}.json").write_text(json.dumps(graph))
    shutil.copy(folder / f"{Z}.params.json", folder / f"{name}.params.json")


def test_the_shipped_workflows_pass_offline():
    for name in (Z, "ltx2_image_to_video", "image_upscale"):
        result = run_cli(name)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "OK, it would run" in result.stdout and "bundled schema" in result.stdout


def test_json_output(folder):
    variant(folder, "wrong_unet", lambda g: g["57:28"]["inputs"].update(unet_name="z_image_turbo_fp8.safetensors"))
    result = run_cli("wrong_unet", "--json", env_extra={"COMFY_PIPELINE_WORKFLOWS_DIR": str(folder)})
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["workflow"] == "wrong_unet"
    [problem] = report["problems"]
    assert problem["kind"] == "missing_model" and problem["node_id"] == "57:28"
    assert "z_image_turbo_fp8.safetensors" in problem["message"]
    assert "z_image_turbo_bf16.safetensors" in problem["hint"]  # what the server does have


def test_unknown_node_exits_1_and_names_the_pack(folder):
    variant(folder, "needs_vhs", lambda g: g["9"].update(class_type="VHS_VideoCombine"))
    result = run_cli("needs_vhs", env_extra={"COMFY_PIPELINE_WORKFLOWS_DIR": str(folder)})
    assert result.returncode == 1
    assert "[missing_node] node 9 (VHS_VideoCombine)" in result.stdout
    assert "ComfyUI-VideoHelperSuite" in result.stdout


def test_a_workflow_that_cannot_be_loaded_exits_2_without_a_traceback(folder):
    (folder / "ui.json").write_text(json.dumps({"nodes": [], "links": []}))
    env = {"COMFY_PIPELINE_WORKFLOWS_DIR": str(folder)}
    result = run_cli("ui", "--json", env_extra=env)
    assert result.returncode == 2 and "Export (API)" in result.stderr
    assert json.loads(result.stdout) == {"ok": False, "error": result.stderr.split(": ", 1)[1].strip()}
    result = run_cli("../etc/passwd", env_extra=env)
    assert result.returncode == 2 and "'..'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_unreachable_server_exits_2_and_keeps_credentials_out():
    env = {"COMFYUI_URL": f"http://user:s3cret@127.0.0.1:{free_port()}"}
    result = run_cli(Z, env_extra=env)
    assert result.returncode == 2
    assert "not reachable" in result.stderr and "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr + result.stdout
    assert run_cli(Z, "--offline", env_extra=env).returncode == 0


def test_against_a_live_server(simulator, tmp_path):
    result = run_cli("ltx2_image_to_video", "--comfyui-url", simulator.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert simulator.url in result.stdout
    with Simulator(data_dir=tmp_path / "bare", models={}) as bare:  # a server without the model files
        result = run_cli(Z, "--json", env_extra={"COMFYUI_URL": bare.url})
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert {(p["node_id"], p["kind"]) for p in report["problems"]} == {
        ("57:28", "missing_model"), ("57:30", "missing_model"), ("57:29", "missing_model")}
    vae = next(p for p in report["problems"] if p["node_id"] == "57:29")
    assert "ComfyUI/models/vae/" in vae["hint"] and "pixel_space" in vae["hint"]
