"""Throughput with two ComfyUI servers against one: the same batch through `run_batch`, given one simulator or two.

Each simulator is its own GPU (one prompt at a time, `IMAGE_SECONDS` each), so the ideal ratio is 2.0; what is
lost below it is our dispatching, waiting and downloading."""

import time
from contextlib import ExitStack
from pathlib import Path

from comfy_pipeline import settings
from comfy_pipeline.batch.runner import Job, run_batch
from comfy_pipeline.cli.bench.report import RATIO_AT_LEAST, Figure
from comfy_pipeline.simulator import Simulator
from comfy_pipeline.workflows.workflow import load_workflow

PROMPTS = 16
IMAGE_SECONDS = 0.5


def two_servers_figure(workdir: Path, prompts: int = PROMPTS) -> Figure:
    found = server_throughput(workdir, prompts)
    return Figure(
        "two_server_throughput", f"throughput, {prompts} image prompts x {IMAGE_SECONDS:g} s on 2 servers", "prompts/s",
        "the same batch on 1 server", 1.8, RATIO_AT_LEAST, found["two_servers_per_s"], found["one_server_per_s"],
        {k: v for k, v in found.items() if not k.endswith("_per_s")},
    )


def server_throughput(workdir: Path, prompts: int = PROMPTS, image_seconds: float = IMAGE_SECONDS) -> dict:
    """Prompts per second on one server and on two, their ratio, and how the two servers shared the batch."""
    one = _batch(1, prompts, image_seconds, workdir / "one_server")
    two = _batch(2, prompts, image_seconds, workdir / "two_servers")
    return {
        "prompts": prompts, "image_seconds": image_seconds,
        "one_server_per_s": round(prompts / one["wall"], 3), "two_servers_per_s": round(prompts / two["wall"], 3),
        "ratio": round(one["wall"] / two["wall"], 3),
        "wall_s": {"one_server": round(one["wall"], 3), "two_servers": round(two["wall"], 3)},
        "prompts_per_server": two["per_server"],
    }


def _batch(servers: int, prompts: int, image_seconds: float, workdir: Path) -> dict:
    workflow = load_workflow("z_image_turbo_generation")
    jobs = [Job(f"p{i}", workflow, {"prompt": f"benchmark prompt {i}: two harbours", "seed": i, "width": 512,
                                    "height": 512},
                f"bench/servers{servers}/image_{i:03d}", workdir / "out", f"image_{i:03d}") for i in range(prompts)]
    with ExitStack() as stack:
        sims = [stack.enter_context(Simulator(data_dir=workdir / f"sim{n}", image_seconds=image_seconds))
                for n in range(servers)]
        clients = [stack.enter_context(settings.make_client(sim.url, creds=settings.NO_CREDENTIALS)) for sim in sims]
        start = time.monotonic()
        results = run_batch(clients, jobs)
        wall = time.monotonic() - start
    failed = [f"{r.job.key}: {r.error}" for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"the {servers}-server batch failed: {failed[:3]}")
    return {"wall": wall, "per_server": [sum(r.server == c.url for r in results) for c in clients]}
