"""Ctrl-C (SIGINT) or SIGTERM while a prompt's output is downloading: the interrupted process deletes its own
partial `.part` file before it exits, instead of leaving it for the next run to sweep (kill -9 still leaves it
to the next run). A real process runs a batch as the Dagster asset does (run_batch under interrupt_flag) against
the simulator, through a proxy on loopback whose /view trickles; the signal comes once the `.part` exists."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from comfy_pipeline_tests.support.hostile_server import HostileServer, forward_to

BATCH = """
import sys
from pathlib import Path
from comfy_pipeline.batch.interrupts import interrupt_flag
from comfy_pipeline.batch.runner import Job, run_batch
from comfy_pipeline.comfyui import ComfyUIClient
from comfy_pipeline.workflows.workflow import load_workflow

url, dest = sys.argv[1], Path(sys.argv[2])
job = Job("p0", load_workflow("z_image_turbo_generation"), {"prompt": "a fox", "seed": 1, "width": 256,
          "height": 256}, "test/interrupted", dest, "fox")
with ComfyUIClient(url) as client, interrupt_flag() as stop:
    run_batch(client, [job], prompt_timeout=120, stop=stop)
print("the download finished", flush=True)
"""


def trickling_view(stop: threading.Event):
    """GET /view: a 1 MB image announced, then one byte every 0.2 s (the download takes days)."""

    def answer(handler) -> None:
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "image/png")
            handler.send_header("Content-Length", "1000000")
            handler.end_headers()
            while not stop.wait(0.2):
                handler.wfile.write(b"x")
                handler.wfile.flush()
        except OSError:
            pass  # the client went away

    return answer


def parts(folder) -> list:
    return sorted(p.name for p in folder.glob(".*.part")) if folder.exists() else []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_download_deletes_its_partial_file(simulator, tmp_path, sig):
    dest = tmp_path / "images"
    dest.mkdir()
    stop = threading.Event()
    proxy = HostileServer({"/view": trickling_view(stop)}, fallback=forward_to(simulator.url, lambda item: item))
    with proxy:
        process = subprocess.Popen([sys.executable, "-c", BATCH, proxy.url, str(dest)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            deadline = time.monotonic() + 120  # generous: starting Python and running the prompt under load
            while not parts(dest) and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if not parts(dest):
                process.kill()
                pytest.fail(f"no download started within 120 s:\n{process.communicate()[1][-2000:]}")
            process.send_signal(sig)
            _, stderr = process.communicate(timeout=60)
        finally:
            stop.set()
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode != 0, "the run must end as interrupted"
    assert parts(dest) == [], f"the interrupted run left {parts(dest)}\n{stderr[-2000:]}"
    assert list(dest.iterdir()) == []
