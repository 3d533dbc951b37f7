"""Fixtures, the suite's environment and its hooks. Plain helpers are in support/helpers.py."""

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import REPO_WORKFLOWS, ffmpeg_processes_since
from comfy_pipeline_tests.support.s3_server import S3Server, start_s3_server

# GPU steps retry transient server faults with a backoff of 10 s and more in production; in tests one quick
# retry proves the same behaviour. Read when a step fails (comfy_pipeline/settings.py); set here for the whole
# session so that the Dagster processes the tests start inherit them too.
os.environ.setdefault("COMFY_PIPELINE_STEP_RETRIES", "1")
os.environ.setdefault("COMFY_PIPELINE_RETRY_DELAY_S", "0.2")
# Inbox files written by a test are complete at once; the settle period has tests of its own.
os.environ.setdefault("COMFY_PIPELINE_INBOX_SETTLE_S", "0")


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Simulator]:
    """A fresh simulator per test (empty queue, history and cache), data in the test's tmp dir."""
    with Simulator(data_dir=tmp_path / "comfyui", image_seconds=0.05, video_seconds=0.2) as running:
        yield running


@pytest.fixture(scope="session")
def shared_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """One simulator for tests that only read or add state that does not disturb others."""
    data_dir = tmp_path_factory.mktemp("shared-comfyui")
    with Simulator(data_dir=data_dir, image_seconds=0.05, video_seconds=0.2) as running:
        yield running


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """An S3 API server on loopback (moto's server mode), shared by the session; each test takes its own bucket
    (`s3_server.new_bucket()`)."""
    server = start_s3_server(tmp_path_factory.mktemp("s3") / "moto.log")
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """This process's AWS settings pointed at the loopback S3 server (the standard variables)."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture
def instance():
    """A real, temporary Dagster instance (its own DAGSTER_HOME), removed afterwards."""
    import dagster as dg

    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A workflows folder with copies of the two real workflows and their maps, for tests that change them."""
    target = tmp_path / "workflows"
    target.mkdir()
    for path in REPO_WORKFLOWS.glob("*.json"):
        shutil.copy(path, target / path.name)
    return target


# -- the suite leaves no ffmpeg behind ------------------------------------------------------------------------

_SESSION_STARTED = time.time()


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
