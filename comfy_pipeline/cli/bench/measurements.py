"""The pipeline figures, ours and the baseline's, each against its own fresh simulator on loopback.

Server-side times come from the simulator (`busy_intervals()`: when its worker started and finished each
prompt); client-side times are time.monotonic() in this same process, so the two compare directly.
"""

import contextlib
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests

from comfy_pipeline.batch.runner import Job, run_batch
from comfy_pipeline.cli.bench.baseline import (
    CLIENT_DESCRIPTION as SEED_CLIENT,
)
from comfy_pipeline.cli.bench.baseline import (
    VALIDATOR_DESCRIPTION as SEED_VALIDATOR,
)
from comfy_pipeline.cli.bench.baseline import (
    BaselineClient,
    validate_image,
    validate_video,
)
from comfy_pipeline.cli.bench.report import AT_LEAST, AT_MOST, Figure
from comfy_pipeline.comfyui.client import ComfyUIClient, PromptResult
from comfy_pipeline.media import check_video, probe_video
from comfy_pipeline.simulator import Simulator
from comfy_pipeline.workflows.workflow import load_workflow

IMAGE_SECONDS = 1.0  # simulated GPU time of one Z-Image-Turbo prompt (about an H100's)
VIDEO_SECONDS = 2.0  # simulated GPU time of one LTX-2 prompt in the job run (its overhead is what counts)
PROMPT_TIMEOUT = 600.0
# The prompt of the job run, given to the baseline too. Default sizes: 1024x784 image, 121 frames at 25 fps.
JOB_PROMPT = {"text": "A lighthouse on a cliff at dusk, waves below", "motion_prompt": "Slow push-in, waves rolling",
              "seed": 1}


@dataclass(frozen=True)
class Plan:
    batch_prompts: int  # prompts in our run_batch batch (the figure: 20)
    baseline_prompts: int  # prompts the baseline runs one after the other (each costs it ~5 s)
    job_runs: int  # image_to_video_job runs of ours, each on a fresh simulator and instance (median)
    download_bytes: int
    upload_bytes: int  # the S3 upload figure's file (a stand-in for a big video)
    video_repeats: int
    validate_repeats: int  # of each `dagster definitions validate`
    # The baseline's two runs are ~90% asleep in its 5 s polls: --quick runs them at the same time (on
    # separate simulators, before ours start) to stay well under a minute.
    baselines_together: bool


FULL = Plan(batch_prompts=20, baseline_prompts=20, job_runs=3, download_bytes=1024**3, upload_bytes=1024**3,
            video_repeats=5, validate_repeats=5, baselines_together=False)
QUICK = Plan(batch_prompts=4, baseline_prompts=2, job_runs=1, download_bytes=64 * 1024**2,
             upload_bytes=64 * 1024**2, video_repeats=3, validate_repeats=2, baselines_together=True)


class NoticingClient(ComfyUIClient):
    """Our client, unchanged, noting when each wait() returns: the moment the pipeline knows a prompt is done."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.noticed: dict[str, float] = {}

    def wait(self, prompt_id: str, timeout: float, on_progress=None, **kwargs) -> PromptResult:
        result = super().wait(prompt_id, timeout, on_progress, **kwargs)
        self.noticed[prompt_id] = time.monotonic()
        return result


def pipeline_figures(plan: Plan, workdir: Path) -> tuple[list[Figure], Path | None]:
    """Notice latency (median, p95), GPU utilisation and job overhead, ours and the baseline's; also returns the
    MP4 of our job run, for the video validation figure."""
    if plan.baselines_together:
        with ThreadPoolExecutor(2) as pool:
            batch = pool.submit(_baseline_batch, plan.baseline_prompts, workdir / "batch-baseline")
            job = pool.submit(_baseline_job, workdir / "job-baseline")
            base_batch, base_job = batch.result(), job.result()
    else:
        base_batch = _baseline_batch(plan.baseline_prompts, workdir / "batch-baseline")
        base_job = _baseline_job(workdir / "job-baseline")
    ours_batch = _ours_batch(plan.batch_prompts, workdir / "batch-ours")
    ours_jobs = [_ours_job(workdir / f"job-ours-{i}") for i in range(plan.job_runs)]
    return [*_batch_figures(plan, ours_batch, base_batch), _job_figure(ours_jobs, base_job)], ours_jobs[0]["video"]


def _batch_figures(plan: Plan, ours: dict, base: dict) -> list[Figure]:
    common = {"image_seconds": IMAGE_SECONDS, "prompts_ours": plan.batch_prompts,
              "prompts_baseline": plan.baseline_prompts}
    return [
        Figure("notice_latency_median_ms", "completion-notice latency, median", "ms", SEED_CLIENT, 20.0, AT_MOST,
               _ms(statistics.median(ours["latencies"])), _ms(statistics.median(base["latencies"])),
               {**common, "latencies_ours_ms": _all_ms(ours["latencies"]),
                "latencies_baseline_ms": _all_ms(base["latencies"])}),
        Figure("notice_latency_p95_ms", "completion-notice latency, p95", "ms", SEED_CLIENT, None, AT_MOST,
               _ms(_p95(ours["latencies"])), _ms(_p95(base["latencies"])), dict(common)),
        Figure("gpu_utilisation", "GPU utilisation over the batch", "busy/wall", SEED_CLIENT, 0.95, AT_LEAST,
               ours["busy"] / ours["wall"], base["busy"] / base["wall"],
               {**common, "wall_s_ours": round(ours["wall"], 3), "busy_s_ours": round(ours["busy"], 3),
                "wall_s_baseline": round(base["wall"], 3), "busy_s_baseline": round(base["busy"], 3)}),
    ]


def _job_figure(ours: list[dict], base: dict) -> Figure:
    overheads = [run["wall"] - run["busy"] for run in ours]
    return Figure(
        "job_overhead_s", "image_to_video_job overhead (wall - server busy)", "s", SEED_CLIENT, 1.5, AT_MOST,
        statistics.median(overheads), base["wall"] - base["busy"],
        {"image_seconds": IMAGE_SECONDS, "video_seconds": VIDEO_SECONDS, "runs_ours": len(ours),
         "overhead_s_ours": [round(o, 3) for o in overheads], "wall_s_ours": [round(r["wall"], 3) for r in ours],
         "busy_s_ours": [round(r["busy"], 3) for r in ours], "wall_s_baseline": round(base["wall"], 3),
         "busy_s_baseline": round(base["busy"], 3)},
    )


def _image_graphs(count: int, tag: str) -> list[tuple[dict, str]]:
    """(values, filename prefix) of `count` distinct Z-Image prompts (distinct seeds: nothing comes from a cache)."""
    return [({"prompt": f"benchmark prompt {i}: a harbour at dawn", "seed": i}, f"bench/{tag}/image_{i:02d}")
            for i in range(count)]


def _ours_batch(count: int, workdir: Path) -> dict:
    workflow = load_workflow("z_image_turbo_generation")
    with Simulator(data_dir=workdir / "sim", image_seconds=IMAGE_SECONDS) as sim, NoticingClient(sim.url) as client:
        jobs = [Job(f"p{i}", workflow, values, prefix, workdir / "out", f"image_{i:02d}")
                for i, (values, prefix) in enumerate(_image_graphs(count, "ours"))]
        start = time.monotonic()
        results = run_batch(client, jobs, prompt_timeout=PROMPT_TIMEOUT)
        end = time.monotonic()
        failed = [f"{r.job.key}: {r.error}" for r in results if not r.ok]
        if failed:
            raise RuntimeError(f"our batch failed: {failed[:3]}")
        finished = _finish_times(sim)
        latencies = [client.noticed[r.prompt_id] - finished[r.prompt_id] for r in results]
        return {"latencies": latencies, "wall": end - start, "busy": _busy_within(sim, start, end)}


def _baseline_batch(count: int, workdir: Path) -> dict:
    workflow = load_workflow("z_image_turbo_generation")
    (workdir / "out").mkdir(parents=True)
    with Simulator(data_dir=workdir / "sim", image_seconds=IMAGE_SECONDS) as sim:
        client = BaselineClient(sim.url)
        noticed = {}
        start = time.monotonic()
        for values, prefix in _image_graphs(count, "baseline"):
            prompt_id, noticed[prompt_id], _ = client.run(workflow.inject(values, filename_prefix=prefix),
                                                          workdir / "out")
        end = time.monotonic()
        client.close()
        finished = _finish_times(sim)
        return {"latencies": [noticed[p] - finished[p] for p in noticed], "wall": end - start,
                "busy": _busy_within(sim, start, end)}


def _ours_job(workdir: Path) -> dict:
    """One image_to_video_job run, in-process on a temporary instance, against a fresh simulator."""
    import dagster as dg  # here: `comfy-pipeline` itself must start without loading Dagster

    from comfy_pipeline.definitions import defs

    job = defs.resolve_job_def("image_to_video_job")
    out, home = workdir / "out", workdir / "dagster_home"
    home.mkdir(parents=True)
    with Simulator(data_dir=workdir / "sim", image_seconds=IMAGE_SECONDS, video_seconds=VIDEO_SECONDS) as sim:
        config = {"resources": {"comfy": {"config": {"url": sim.url, "output_dir": str(out)}}},
                  "ops": {"prompt": {"config": {"prompts": [JOB_PROMPT]}}}}
        # Dagster's console log goes to a file instead of the bench's output; it is still written, as in a run.
        with (dg.DagsterInstance.local_temp(tempdir=str(home)) as instance,
              open(workdir / "dagster-console.log", "w") as console, contextlib.redirect_stderr(console)):
            start = time.monotonic()
            result = job.execute_in_process(run_config=config, instance=instance, raise_on_error=False)
            end = time.monotonic()
        if not result.success:
            failures = [e.message for e in result.all_events if e.is_failure]
            raise RuntimeError(f"image_to_video_job failed: {failures[:2]}")
        return {"wall": end - start, "busy": _busy_within(sim, start, end), "video": next(out.rglob("*.mp4"), None)}


def _baseline_job(workdir: Path) -> dict:
    """The same image -> upload -> video chain, the seed's way."""
    image_workflow = load_workflow("z_image_turbo_generation")
    video_workflow = load_workflow("ltx2_image_to_video")
    (workdir / "out").mkdir(parents=True)
    with Simulator(data_dir=workdir / "sim", image_seconds=IMAGE_SECONDS, video_seconds=VIDEO_SECONDS) as sim:
        client = BaselineClient(sim.url)
        start = time.monotonic()
        image_values = {"prompt": JOB_PROMPT["text"], "seed": JOB_PROMPT["seed"]}
        _, _, images = client.run(image_workflow.inject(image_values, filename_prefix="bench/baseline/image"),
                                  workdir / "out")
        if not validate_image(images[0]):
            raise RuntimeError(f"the baseline's image {images[0]} did not validate")
        video_values = {"prompt": JOB_PROMPT["motion_prompt"], "seed": JOB_PROMPT["seed"],
                        "image": client.upload_image(images[0])}
        _, _, videos = client.run(video_workflow.inject(video_values, filename_prefix="bench/baseline/video"),
                                  workdir / "out")
        if not validate_video(videos[0]):
            raise RuntimeError(f"the baseline's video {videos[0]} did not validate")
        end = time.monotonic()
        client.close()
        return {"wall": end - start, "busy": _busy_within(sim, start, end)}


def video_validation(video: Path | None, repeats: int) -> Figure:
    """check_video on the job run's LTX-2 MP4, median of `repeats`; the baseline validator on the same file."""
    if video is None:
        raise RuntimeError("the image_to_video_job run made no MP4 to validate")
    info = probe_video(video)
    expected = {"width": info.width, "height": info.height, "frames": 121, "fps": 25}
    ours = []
    for _ in range(repeats):
        start = time.monotonic()
        checks = check_video(video, **expected)
        ours.append(time.monotonic() - start)
        failed = [c.message for c in checks if not c.passed]
        if failed:
            raise RuntimeError(f"the simulator's video did not pass check_video: {failed}")
    base = []
    for _ in range(repeats):
        start = time.monotonic()
        validate_video(video)
        base.append(time.monotonic() - start)
    return Figure(
        "video_validation_s", f"validate a {info.frame_count}-frame {info.width}x{info.height} MP4, median", "s",
        SEED_VALIDATOR, 0.5, AT_MOST, statistics.median(ours), statistics.median(base),
        {"repeats": repeats, "frames": info.frame_count, "size": f"{info.width}x{info.height}",
         "bytes": video.stat().st_size, "checks": [c.name for c in checks]},
    )


def _finish_times(sim: Simulator) -> dict[str, float]:
    """prompt_id -> time.monotonic() when the server finished it. The history is kept in finishing order, like
    busy_intervals(), so the two line up."""
    order = list(requests.get(f"{sim.url}/history", timeout=30).json())
    busy = sim.busy_intervals()
    if len(order) != len(busy):
        raise RuntimeError(f"the simulator ran {len(busy)} prompts but has {len(order)} in its history")
    return {prompt_id: end for prompt_id, (_, end) in zip(order, busy)}


def _busy_within(sim: Simulator, start: float, end: float) -> float:
    return sum(max(0.0, min(e, end) - max(s, start)) for s, e in sim.busy_intervals())


def _p95(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def _ms(seconds: float) -> float:
    return seconds * 1000


def _all_ms(values: list[float]) -> list[float]:
    return [round(v * 1000, 2) for v in values]
