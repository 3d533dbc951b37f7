"""Figures for what grows with the work (`comfy-pipeline bench --scale`).

- Client cost per prompt, 100 and 1,000 image prompts through `run_batch`. The client runs in its own child
  process (one per size, `python -m comfy_pipeline.cli.bench.scale ...`), so it shares no interpreter lock with
  the simulator it talks to; the simulator runs here, with a 1 ms GPU time and 256x256 images, so the client's
  share dominates. Ours is the client's CPU time (user + system) during the batch per prompt; the baseline is
  one bare `GET /system_stats` round trip with `requests` in the same child, as the machine's yardstick.
  (wall - server busy) / prompts, the time per prompt the server had nothing to do, is in the details.
- Peak RSS of that child (VmHWM) at 10, 100 and 1,000 prompts: the figure is the growth from 10 to 1,000.
- Dagster event-log rows and metadata bytes per prompt: a real run of image_generation_job on a temporary
  SQLite instance with 10 and with 100 prompts; every event-log record of the run is counted, and the metadata
  of every materialization and asset check evaluation is serialised as Dagster stores it.
- The check runner's GPU utilisation: `comfy-pipeline check --test-type image-only` as a subprocess against a
  simulator here (1.0 s per image), from spawning the process to its exit, ours (overlapping runs) against
  the same command with one run at a time.
- Throughput with 2 servers against 1: not measured yet; it lands with multi-server support (see
  BENCHMARKS.md), as a function here returning one more Figure.
"""

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from comfy_pipeline.cli.bench.memory import status_kb
from comfy_pipeline.cli.bench.report import AT_LEAST, AT_MOST, RATIO_AT_MOST, Figure

MB = 1024**2
TINY_GPU_S = 0.001
SMALL_IMAGE = {"width": 256, "height": 256}  # the workflow's smallest size: the simulator renders it quickly
CHECK_IMAGE_S = 1.0
ROUND_TRIPS = 200


@dataclass(frozen=True)
class ScalePlan:
    client_sizes: tuple[int, ...]  # prompts per child; the first is the RSS reference, the others get cost figures
    event_sizes: tuple[int, int]  # prompts in the small and the large Dagster run
    check_prompts: int


FULL_SCALE = ScalePlan(client_sizes=(10, 100, 1000), event_sizes=(10, 100), check_prompts=10)
QUICK_SCALE = ScalePlan(client_sizes=(10, 50), event_sizes=(4, 12), check_prompts=4)


# --- client cost and memory ----------------------------------------------------------------------------


def client_figures(plan: ScalePlan, workdir: Path) -> list[Figure]:
    from comfy_pipeline.simulator import Simulator

    runs = {}
    for size in plan.client_sizes:
        with Simulator(data_dir=workdir / f"sim-{size}", image_seconds=TINY_GPU_S) as sim:  # fresh: no cache
            child = _child(sim.url, size, workdir / f"out-{size}")
            busy = sum(max(0.0, min(e, child["end"]) - max(s, child["start"])) for s, e in sim.busy_intervals())
        runs[size] = {**child, "busy": busy}
    figures = []
    for size in plan.client_sizes[1:]:
        run = runs[size]
        idle = (run["end"] - run["start"] - run["busy"]) / size
        figures.append(Figure(
            f"client_cost_per_prompt_ms_{size}", f"client CPU per prompt, {size} image prompts", "ms",
            "one bare GET /system_stats round trip (requests), same process", 50.0, AT_MOST,
            run["cpu"] / size * 1000, run["round_trip"] * 1000,
            {"prompts": size, "gpu_seconds": TINY_GPU_S, "size": "256x256",
             "wall_s": round(run["end"] - run["start"], 3),
             "server_busy_s": round(run["busy"], 3), "client_cpu_s": round(run["cpu"], 3),
             "server_idle_per_prompt_ms": round(idle * 1000, 2)},
        ))
    small, large = plan.client_sizes[0], plan.client_sizes[-1]
    figures.append(Figure(
        "peak_rss_growth_mb", f"peak RSS growth, {small} -> {large} prompts", "MB",
        f"peak RSS of the {small}-prompt child", 64.0, AT_MOST,
        (runs[large]["hwm_kb"] - runs[small]["hwm_kb"]) / 1024, runs[small]["hwm_kb"] / 1024,
        {"peak_rss_mb": {str(n): round(r["hwm_kb"] / 1024, 1) for n, r in runs.items()}},
    ))
    return figures


def _child(url: str, size: int, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "comfy_pipeline.cli.bench.scale", url, str(size), str(out)],
                          capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {size}-prompt client subprocess failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def _client_batch(url: str, size: int, out: Path) -> dict:
    """In the child: `size` image prompts through run_batch; times are time.monotonic(), which is system-wide
    on Linux, so the parent can compare them with the simulator's busy intervals."""
    import requests

    from comfy_pipeline import settings
    from comfy_pipeline.batch.runner import Job, run_batch
    from comfy_pipeline.workflows.workflow import load_workflow

    workflow = load_workflow("z_image_turbo_generation")
    session = requests.Session()
    session.trust_env = False
    trips = []
    for _ in range(ROUND_TRIPS):
        started = time.monotonic()
        session.get(f"{url}/system_stats", timeout=30).raise_for_status()
        trips.append(time.monotonic() - started)
    session.close()
    jobs = [Job(f"p{i}", workflow, {"prompt": f"scale prompt {i}: a harbour at dawn", "seed": i, **SMALL_IMAGE},
                f"bench/scale/{size}/image_{i:04d}", out, f"image_{i:04d}") for i in range(size)]
    with settings.make_client(url, creds=settings.NO_CREDENTIALS) as client:
        cpu_before, start = os.times(), time.monotonic()
        results = run_batch(client, jobs, prompt_timeout=600.0)
        end, cpu_after = time.monotonic(), os.times()
    failed = [f"{r.job.key}: {r.error}" for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} of {size} prompts failed: {failed[:3]}")
    cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    return {"start": start, "end": end, "cpu": cpu, "round_trip": statistics.median(trips),
            "hwm_kb": status_kb("VmHWM")}


# --- Dagster event log and metadata --------------------------------------------------------------------


def event_log_figures(plan: ScalePlan, workdir: Path) -> list[Figure]:
    small, large = (_event_log_run(n, workdir / f"events-{n}") for n in plan.event_sizes)
    growing = sorted(
        ((key, small["by_key"].get(key, 0), size) for key, size in large["by_key"].items()),
        key=lambda row: row[2] - row[1], reverse=True,
    )[:6]
    details = {
        "prompts": [small["prompts"], large["prompts"]], "rows": [small["rows"], large["rows"]],
        "metadata_bytes": [small["bytes"], large["bytes"]],
        "largest_growth": [{"entry": k, "bytes_small": a, "bytes_large": b} for k, a, b in growing],
    }
    return [
        Figure("event_log_rows_per_prompt", f"Dagster event-log rows per prompt, {large['prompts']} prompts", "rows",
               f"the same with {small['prompts']} prompts", 1.0, RATIO_AT_MOST,
               large["rows"] / large["prompts"], small["rows"] / small["prompts"], details),
        # Bounded metadata costs less per prompt the more prompts a run has: at most half as much here.
        Figure("metadata_bytes_per_prompt", f"materialization + check metadata per prompt, {large['prompts']} prompts",
               "bytes", f"the same with {small['prompts']} prompts", 0.5, RATIO_AT_MOST,
               large["bytes"] / large["prompts"], small["bytes"] / small["prompts"], details),
    ]


def _event_log_run(prompts: int, workdir: Path) -> dict:
    import contextlib

    import dagster as dg
    from dagster._serdes import serialize_value

    from comfy_pipeline.definitions import defs
    from comfy_pipeline.simulator import Simulator

    job = defs.resolve_job_def("image_generation_job")
    home = workdir / "dagster_home"
    home.mkdir(parents=True)
    specs = [{"text": f"scale prompt {i}: a harbour at dawn", "seed": i, **SMALL_IMAGE} for i in range(prompts)]
    with Simulator(data_dir=workdir / "sim", image_seconds=TINY_GPU_S) as sim:
        config = {"resources": {"comfy": {"config": {"url": sim.url, "output_dir": str(workdir / "out")}},
                                "quality": {"config": {"image_min_bytes": 0}}},
                  "ops": {"prompt": {"config": {"prompts": specs}}}}
        with (dg.DagsterInstance.local_temp(tempdir=str(home)) as instance,
              open(workdir / "dagster-console.log", "w") as console, contextlib.redirect_stderr(console)):
            result = image_job_run(job, config, instance)
            records = instance.all_logs(result.run_id)
    by_key: dict[str, int] = {}
    for record in records:
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            owner, metadata = event.asset_key.to_user_string(), event.event_specific_data.materialization.metadata
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            data = event.event_specific_data
            owner, metadata = f"{data.asset_key.to_user_string()}:{data.check_name}", data.metadata
        else:
            continue
        for key, value in metadata.items():
            by_key[f"{owner}.{key}"] = by_key.get(f"{owner}.{key}", 0) + len(serialize_value(value))
    return {"prompts": prompts, "rows": len(records), "bytes": sum(by_key.values()), "by_key": by_key}


def image_job_run(job, config: dict, instance):
    result = job.execute_in_process(run_config=config, instance=instance, raise_on_error=False)
    if not result.success:
        failures = [e.message for e in result.all_events if e.is_failure]
        raise RuntimeError(f"image_generation_job failed: {failures[:2]}")
    return result


# --- the check runner ----------------------------------------------------------------------------------


def check_utilisation(plan: ScalePlan, workdir: Path) -> Figure:
    ours = _check_run(plan.check_prompts, workdir / "ours", runs_in_flight=None)
    serial = _check_run(plan.check_prompts, workdir / "serial", runs_in_flight=1)
    return Figure(
        "check_gpu_utilisation", f"check GPU utilisation, {plan.check_prompts} prompts x {CHECK_IMAGE_S:g} s, "
        "start-up included", "busy/wall", "the same check, one run at a time, nothing queued ahead", 0.90, AT_LEAST,
        ours["busy"] / ours["wall"], serial["busy"] / serial["wall"],
        {"prompts": plan.check_prompts, "image_seconds": CHECK_IMAGE_S,
         **{f"{k}_ours": v for k, v in _breakdown(ours).items()},
         **{f"{k}_one_at_a_time": v for k, v in _breakdown(serial).items()}},
    )


def _breakdown(run: dict) -> dict:
    """Where the wall time went: before the first prompt ran, between the first and last, after the last."""
    return {"wall_s": round(run["wall"], 3), "busy_s": round(run["busy"], 3),
            "until_first_prompt_s": round(run["first"], 3), "after_last_prompt_s": round(run["tail"], 3),
            "utilisation_first_to_last_prompt": round(run["busy"] / (run["wall"] - run["first"] - run["tail"]), 3)}


def _check_run(prompts: int, workdir: Path, runs_in_flight: int | None) -> dict:
    from comfy_pipeline.simulator import Simulator

    workdir.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "COMFYUI_", "COMFY_PIPELINE_"))}
    if runs_in_flight is not None:  # the baseline: one run at a time, each queueing its own prompts
        env["COMFY_PIPELINE_CHECK_RUNS_IN_FLIGHT"] = str(runs_in_flight)
        env["COMFY_PIPELINE_CHECK_QUEUE_AHEAD"] = "0"
    args = [arg for i in range(prompts) for arg in ("--prompt", f"check prompt {i}: a harbour at dawn")]
    with Simulator(data_dir=workdir / "sim", image_seconds=CHECK_IMAGE_S) as sim:
        start = time.monotonic()
        done = subprocess.run(
            [_comfy_pipeline(), "check", "--test-type", "image-only", "--comfyui-url", sim.url,
             "--state-dir", str(workdir / "state"), "--output-dir", str(workdir / "out"), *args],
            cwd=workdir, env=env, capture_output=True, text=True, timeout=600, check=False,
        )
        end = time.monotonic()
        intervals = sim.busy_intervals()
    if done.returncode != 0:
        raise RuntimeError(f"comfy-pipeline check failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    busy = sum(max(0.0, min(e, end) - max(s, start)) for s, e in intervals)
    return {"wall": end - start, "busy": busy, "first": intervals[0][0] - start, "tail": end - intervals[-1][1]}


def _comfy_pipeline() -> str:
    script = Path(sys.executable).with_name("comfy-pipeline")
    return str(script) if script.exists() else "comfy-pipeline"


def main(argv: list[str]) -> int:
    url, size, out = argv
    print(json.dumps(_client_batch(url, int(size), Path(out))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
