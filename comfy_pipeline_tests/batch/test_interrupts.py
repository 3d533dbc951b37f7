"""A terminated run stops its batch and cancels its prompts, even when the interrupt exception got lost."""

import os
import signal
import threading
import time
import weakref

import pytest
import requests

from comfy_pipeline.batch import outputs
from comfy_pipeline.batch.interrupts import interrupt_flag
from comfy_pipeline.batch.runner import BatchInterrupted, Job, run_batch
from comfy_pipeline.comfyui.client import ComfyUIClient
from comfy_pipeline.simulator import Simulator
from comfy_pipeline.workflows.workflow import load_workflow
from comfy_pipeline_tests.support.helpers import wait_until


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowing is the point
def test_flag_is_set_even_when_the_interrupt_exception_is_swallowed():
    class Holder:
        pass

    def raise_inside_gc_callback():
        # Dagster's handler raises wherever the main thread is; inside a weakref callback Python only prints
        # "Exception ignored" -- exactly how a terminated run could keep waiting on the GPU server.
        holder = Holder()
        ref = weakref.ref(holder, lambda _ref: os.kill(os.getpid(), signal.SIGINT))
        del holder
        return ref

    with interrupt_flag() as flag:
        try:
            raise_inside_gc_callback()
            # The handler runs on the main thread at its next check: in the callback (swallowed) or in this
            # wait (raised here); either way it sets the flag before raising, so the wait ends as soon as it ran.
            flag.wait(60)
        except KeyboardInterrupt:
            pass
        assert flag.is_set()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.fixture
def slow_sim(tmp_path):
    with Simulator(data_dir=tmp_path / "sim", image_seconds=60, video_seconds=60) as sim:
        yield sim


def test_stop_cancels_running_and_queued_prompts_and_raises(slow_sim, tmp_path):
    workflow = load_workflow("z_image_turbo_generation")
    folder = outputs.kind_dir(tmp_path / "out", "images")
    jobs = [
        Job(f"p{i}", workflow, {"prompt": f"prompt {i}", "seed": i, "width": 256, "height": 256},
            f"test/stop_{i}", folder, f"p{i}")
        for i in range(3)
    ]
    stop = threading.Event()
    with ComfyUIClient(slow_sim.url) as client:

        def stop_once_running():
            wait_until(lambda: requests.get(f"{slow_sim.url}/queue", timeout=5).json()["queue_running"], 120)
            stop.set()

        threading.Thread(target=stop_once_running, daemon=True).start()
        started = time.monotonic()
        with pytest.raises(BatchInterrupted):
            run_batch(client, jobs, max_in_flight=3, prompt_timeout=1200, stop=stop)
        assert time.monotonic() - started < 40  # not the 60 s of simulated GPU time, nor the prompt timeout

    # the interrupt lands at the next sampler step (7.5 s apart)
    idle = {"queue_running": [], "queue_pending": []}
    assert wait_until(lambda: requests.get(f"{slow_sim.url}/queue", timeout=5).json() == idle, 60)
    history = requests.get(f"{slow_sim.url}/history", timeout=5).json()
    assert [entry["status"]["messages"][-1][0] for entry in history.values()] == ["execution_interrupted"]
    assert not list(folder.iterdir())
