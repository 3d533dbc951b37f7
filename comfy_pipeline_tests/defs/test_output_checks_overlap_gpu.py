"""Checks overlap GPU time: each output is checked and previewed as soon as it is home, while the server works on
the next prompt, not after the whole batch."""

import time

import dagster as dg

from comfy_pipeline.batch import step
from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import execute, run_config

SMALL = {"width": 256, "height": 256}


def test_each_image_is_checked_while_the_next_one_is_on_the_gpu(tmp_path, monkeypatch):
    started: list[float] = []
    real_inspect = step.inspect_image

    def recording_inspect(*args, **kwargs):
        started.append(time.monotonic())
        return real_inspect(*args, **kwargs)

    monkeypatch.setattr(step, "inspect_image", recording_inspect)
    prompts = [{"text": f"a slow lighthouse {i}", "seed": i, **SMALL} for i in range(3)]
    with Simulator(data_dir=tmp_path / "sim", image_seconds=1.0) as sim, dg.instance_for_test() as instance:
        result = execute("image_generation_job", instance, run_config(sim.url, tmp_path / "out", prompts))
        busy = sim.busy_intervals()
    assert result.success
    assert len(started) == 3 and len(busy) == 3
    gpu_done = max(end for _, end in busy)
    # The first two images were checked while the GPU was still busy with the later prompts.
    assert sorted(started)[0] < busy[1][1] and sorted(started)[1] < gpu_done
