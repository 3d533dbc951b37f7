"""The acceptance line of issue 2: `comfy-pipeline simulator --port N` runs a workflow for a plain
requests + websocket-client script exactly as a real ComfyUI would (the script knows nothing of this project)."""

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import websocket
from PIL import Image

from comfy_pipeline_tests.support.helpers import REPO_WORKFLOWS


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command() -> list[str]:
    installed = shutil.which("comfy-pipeline", path=str(Path(sys.executable).parent))
    if installed:
        return [installed, "simulator"]
    return [sys.executable, "-m", "comfy_pipeline.simulator"]


class Server:
    def __init__(self, *arguments: str):
        self.port = free_port()
        self.process = subprocess.Popen(
            [*command(), "--port", str(self.port), "--image-seconds", "0.2", *arguments],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.banner = self.process.stdout.readline()  # printed once it listens
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        finally:
            self.process.stdout.close()
            self.process.stderr.close()


@pytest.fixture
def server():
    running = Server()
    exited = running.process.poll() is not None
    assert running.url in running.banner, running.process.stderr.read() if exited else running.banner
    yield running
    if running.process.poll() is None:
        running.stop()


def test_a_plain_script_runs_a_workflow_like_against_real_comfyui(server: Server, tmp_path: Path) -> None:
    base, client_id = server.url, str(uuid.uuid4())
    assert "simulator" in requests.get(f"{base}/system_stats", timeout=5).json()["devices"][0]["name"]
    workflow = json.loads((REPO_WORKFLOWS / "z_image_turbo_generation.json").read_text())
    workflow["58"]["inputs"]["value"] = "a red bicycle leaning on a wall"
    workflow["57:13"]["inputs"].update(width=512, height=384)

    ws = websocket.WebSocket()
    ws.connect(f"ws://127.0.0.1:{server.port}/ws?clientId={client_id}", timeout=20)
    reply = requests.post(f"{base}/prompt", json={"prompt": workflow, "client_id": client_id}, timeout=10)
    prompt_id = reply.json()["prompt_id"]
    seen, progress = [], 0
    while True:
        message = ws.recv()
        if not isinstance(message, str):
            continue
        message = json.loads(message)
        seen.append(message["type"])
        progress += message["type"] == "progress"
        data = message["data"]
        if message["type"] == "executing" and data["node"] is None and data["prompt_id"] == prompt_id:
            break
    ws.close()
    assert seen[0] == "status" and "execution_success" in seen and progress == 8  # KSampler's 8 steps

    entry = requests.get(f"{base}/history/{prompt_id}", timeout=10).json()[prompt_id]
    for node_output in entry["outputs"].values():
        for image in node_output["images"]:
            data = requests.get(f"{base}/view", params=image, timeout=10).content
            (tmp_path / image["filename"]).write_bytes(data)
            with Image.open(io.BytesIO(data)) as picture:
                assert picture.size == (512, 384)
    assert list(tmp_path.glob("z-image-turbo_*.png"))
    assert server.stop() == 0


def test_faults_from_the_command_line_and_loopback_default() -> None:
    server = Server("--fault", "http-500:1")
    try:
        assert server.url in server.banner
        reply = requests.get(f"{server.url}/queue", timeout=5)
        assert (reply.status_code, reply.text) == (500, "500 Internal Server Error\n\nServer got itself in trouble")
        # Bound to 127.0.0.1 only: another address of this machine (even 127.0.0.2) is refused.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", server.port), timeout=5).close()
    finally:
        assert server.stop() == 0


def test_content_faults_from_the_command_line() -> None:
    server = Server("--fault", "black-output:1", "--fault", "silent-output:0")
    try:
        assert server.url in server.banner, server.process.stderr.read()
        workflow = json.loads((REPO_WORKFLOWS / "z_image_turbo_generation.json").read_text())
        workflow["57:13"]["inputs"].update(width=128, height=96)
        prompt_id = requests.post(f"{server.url}/prompt", json={"prompt": workflow}, timeout=10).json()["prompt_id"]
        entry, deadline = {}, time.monotonic() + 60
        while not entry.get("status", {}).get("completed") and time.monotonic() < deadline:
            time.sleep(0.1)
            entry = requests.get(f"{server.url}/history/{prompt_id}", timeout=10).json().get(prompt_id, {})
        (image,) = [image for output in entry["outputs"].values() for image in output["images"]]
        data = requests.get(f"{server.url}/view", params=image, timeout=10).content
        with Image.open(io.BytesIO(data)) as picture:
            assert picture.size == (128, 96) and picture.convert("RGB").getextrema() == ((0, 0),) * 3
    finally:
        assert server.stop() == 0


def test_bad_command_lines_say_what_to_fix() -> None:
    result = subprocess.run([*command(), "--fault", "gremlins"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 2 and "unknown fault kind 'gremlins'" in result.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([*command(), "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in result.stderr
