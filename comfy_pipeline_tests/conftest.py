"""Shared fixtures: a real ComfyUI simulator on an ephemeral loopback port, and the captured real-server cases."""

import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from comfy_pipeline.media.binaries import ffmpeg_path
from comfy_pipeline.simulator import Simulator

# GPU steps retry transient server faults with a backoff of 10 s and more in production; in tests one quick
# retry proves the same behaviour. Read when a step fails (comfy_pipeline/settings.py); set here for the whole
# session so that the Dagster processes the tests start inherit them too.
os.environ.setdefault("COMFY_PIPELINE_STEP_RETRIES", "1")
os.environ.setdefault("COMFY_PIPELINE_RETRY_DELAY_S", "0.2")
# Inbox files written by a test are complete at once; the settle period has tests of its own.
os.environ.setdefault("COMFY_PIPELINE_INBOX_SETTLE_S", "0")

CAPTURES = Path(__file__).parent / "fixtures" / "captures"


def load_capture(name: str) -> dict:
    """A request/response pair recorded from a real ComfyUI 0.33.0 (copied from the reference captures)."""
    return json.loads((CAPTURES / f"{name}.json").read_text(encoding="utf-8"))


def wait_for_history(simulator: Simulator, prompt_id: str, timeout: float = 20) -> dict:
    """Poll GET /history/{id} until the entry is there (it is `{}` while pending or running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = requests.get(f"{simulator.url}/history/{prompt_id}", timeout=10).json()
        if entry:
            return entry[prompt_id]
        time.sleep(0.02)
    raise AssertionError(f"prompt {prompt_id} did not finish within {timeout} s")


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Simulator]:
    """A fresh simulator per test (empty queue, history and cache), data in the test's tmp dir."""
    with Simulator(data_dir=tmp_path / "comfyui", image_seconds=0.05, video_seconds=0.2) as running:
        yield running


@pytest.fixture(scope="session")
def shared_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """One simulator for tests that only read or add state that does not disturb others."""
    with Simulator(data_dir=tmp_path_factory.mktemp("shared-comfyui"), image_seconds=0.05, video_seconds=0.2) as running:
        yield running


@pytest.fixture
def instance():
    """A real, temporary Dagster instance (its own DAGSTER_HOME), removed afterwards."""
    import dagster as dg

    with dg.instance_for_test() as inst:
        yield inst


def free_port() -> int:
    """A TCP port on loopback that nothing listens on (for "server down" cases and servers started by tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 5.0) -> bool:
    """Poll `predicate` every 50 ms until it is true or `timeout` seconds have passed; its last answer."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


REPO_WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A workflows folder with copies of the two real workflows and their maps, for tests that change them."""
    target = tmp_path / "workflows"
    target.mkdir()
    for path in REPO_WORKFLOWS.glob("*.json"):
        shutil.copy(path, target / path.name)
    return target


def decode_data_uri(markdown: str) -> tuple:
    """The image of a `![preview](data:image/jpeg;base64,...)` preview, and the length of its base64."""
    import base64
    import io

    from PIL import Image

    prefix = "![preview](data:image/jpeg;base64,"
    assert markdown.startswith(prefix) and markdown.endswith(")")
    encoded = markdown[len(prefix) : -1]
    img = Image.open(io.BytesIO(base64.b64decode(encoded, validate=True)))
    img.load()
    return img, len(encoded)


# -- the suite leaves no ffmpeg behind ------------------------------------------------------------------------

_SESSION_STARTED = time.time()


def ffmpeg_processes_since(started: float) -> list[str]:
    """ffmpeg/ffprobe processes of this Python environment started since `started` and still alive (a leak: a
    kill that missed them). Other environments' ffmpeg (another checkout's tests) are not ours to judge."""
    import psutil

    found = []
    for proc in psutil.process_iter(["name", "create_time", "cmdline"]):
        try:
            command = " ".join(proc.info["cmdline"] or [])
            ours = sys.prefix in command or os.path.dirname(ffmpeg_path()) in command
            if proc.info["name"] in ("ffmpeg", "ffprobe") and proc.info["create_time"] >= started - 1 and ours:
                found.append(f"{proc.pid}: {command[:200]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if any ffmpeg the tests started is still running (and end it, so CI does not hang)."""
    time.sleep(0.5)  # a process killed a moment ago may still be exiting
    leaked = ffmpeg_processes_since(_SESSION_STARTED)
    if leaked:
        import psutil

        for line in leaked:
            try:
                psutil.Process(int(line.split(":")[0])).kill()
            except psutil.Error:
                pass
        print("\nffmpeg processes left running by the tests:\n  " + "\n  ".join(leaked), file=sys.stderr)
        session.exitstatus = 1
