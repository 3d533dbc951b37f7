"""`comfy-pipeline bench [--json] [--quick] [--scale] [--s3-endpoint URL]`: the performance figures, ours next to
the baseline's.

Every figure carries the 1-minute load average before and after its measurement.

Exit code 0 when every target is met, 1 when one is missed (or could not be measured), 2 on usage errors.
"""

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from comfy_pipeline.cli.bench.report import Figure


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure notice latency, GPU utilisation, overheads and memory against in-process simulators",
        description="Run the pipeline and a seed-style baseline side by side against simulators on loopback "
        "with fixed simulated GPU times, and compare them with the targets (see BENCHMARKS.md).",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    parser.add_argument("--quick", action="store_true",
                        help="fewer prompts and a 64 MiB download and upload instead of 1 GiB (well under a "
                        "minute)")
    parser.add_argument("--s3-endpoint", metavar="URL",
                        help="measure the S3 upload figure against this S3 API server (credentials from the AWS "
                        "chain; the bench makes a bucket there and removes it) instead of a moto server it starts "
                        "on loopback")
    parser.add_argument("--scale", action="store_true",
                        help="also the figures at scale: client cost per prompt (100 and 1,000 prompts), peak RSS "
                        "from 10 to 1,000 prompts, Dagster event-log rows and metadata per prompt, the GPU "
                        "utilisation of `comfy-pipeline check`, and throughput with 2 servers against 1 (about 2 "
                        "more minutes; less with --quick)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: every other `comfy-pipeline` command stays fast.
    from comfy_pipeline.cli.bench import measurements, scale, servers, validation
    from comfy_pipeline.cli.bench.definitions_load import definitions_validate
    from comfy_pipeline.cli.bench.memory import download_memory, upload_memory
    from comfy_pipeline.cli.bench.report import as_json, machine, table
    from comfy_pipeline.cli.bench.s3_target import MOTO_MISSING, bench_bucket, moto_available

    plan = measurements.QUICK if args.quick else measurements.FULL
    host = machine()
    started = time.monotonic()
    figures: list[Figure] = []
    video: list[Path | None] = []
    skipped: dict[str, str] = {}

    def pipeline() -> list[Figure]:
        figures, made = measurements.pipeline_figures(plan, work / "pipeline")
        video.append(made)
        return figures

    with tempfile.TemporaryDirectory(prefix="comfy-bench-") as tmp:
        work = Path(tmp)
        _measure(figures, "dagster definitions validate",
                 lambda: [definitions_validate(plan.validate_repeats, work / "defs")], ["definitions_validate_s"])
        _measure(figures, "download memory", lambda: [download_memory(plan.download_bytes, work / "memory")],
                 ["download_peak_memory_mb"])
        if args.s3_endpoint or moto_available():
            def upload() -> list[Figure]:
                with bench_bucket(work / "s3", args.s3_endpoint) as target:
                    return [upload_memory(plan.upload_bytes, work / "s3", target)]

            _measure(figures, "S3 upload memory", upload, ["upload_peak_memory_mb"])
        else:  # moto is a dev dependency: without it this one figure is left out, the others still count
            skipped["upload_peak_memory_mb"] = MOTO_MISSING
            print(f"bench: S3 upload memory skipped: {MOTO_MISSING}", file=sys.stderr, flush=True)
        _measure(figures, "notice latency, GPU utilisation, image_to_video_job overhead", pipeline,
                 ["notice_latency_median_ms", "notice_latency_p95_ms", "gpu_utilisation", "job_overhead_s"])
        _measure(figures, "video validation",
                 lambda: [measurements.video_validation(video[0] if video else None, plan.video_repeats)],
                 ["video_validation_s"])
        _measure(figures, "validation with content checks",
                 lambda: validation.validation_figures(work / "validation", plan.video_repeats),
                 ["content_validation_video_s", "content_validation_image_s"])
        if args.scale:
            sizes = scale.QUICK_SCALE if args.quick else scale.FULL_SCALE
            _measure(figures, "check GPU utilisation", lambda: [scale.check_utilisation(sizes, work / "check")],
                     ["check_gpu_utilisation"])
            _measure(figures, "client cost and memory at scale", lambda: scale.client_figures(sizes, work / "client"),
                     [*(f"client_cost_per_prompt_ms_{n}" for n in sizes.client_sizes[1:]), "peak_rss_growth_mb"])
            _measure(figures, "Dagster event log and metadata per prompt",
                     lambda: scale.event_log_figures(sizes, work / "events"),
                     ["event_log_rows_per_prompt", "metadata_bytes_per_prompt"])
            _measure(figures, "throughput with 2 servers against 1",
                     lambda: [servers.two_servers_figure(work / "servers", 8 if args.quick else servers.PROMPTS)],
                     ["two_server_throughput"])
    report = as_json(figures, quick=args.quick, seconds=time.monotonic() - started, host=host)
    report["scale"] = args.scale
    report["skipped"] = skipped
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(table(figures))
        print(f"\n{'quick' if args.quick else 'full'} run{' with --scale' if args.scale else ''}, "
              f"{report['seconds']} s on {host['cpus']} CPUs, Python {host['python']}, load average at start "
              f"{host['load_average_at_start']}")
        for key, why in skipped.items():
            print(f"skipped {key}: {why}")
    if report["missed"]:
        print(f"bench: target missed: {', '.join(report['missed'])}", file=sys.stderr)
        return 1
    return 0


def _measure(figures: list[Figure], what: str, measure: Callable[[], list[Figure]], keys: list[str]) -> None:
    """Run one measurement; if it breaks, its figures are reported as errors and the others still run."""
    from comfy_pipeline.cli.bench.report import load_1m

    print(f"bench: {what} ...", file=sys.stderr, flush=True)
    started, load_before = time.monotonic(), load_1m()
    try:
        measured = measure()
    except Exception as exc:  # one broken measurement must not hide the others
        message = f"{type(exc).__name__}: {exc}"
        measured = [Figure(key, key, "-", "-", error=message) for key in keys]
    load_after = load_1m()
    for figure in measured:
        figure.load = (load_before, load_after)  # what else the machine was doing: the figures depend on it
    figures.extend(measured)
    print(f"bench: {what}: {time.monotonic() - started:.1f} s (load average {load_before} -> {load_after})",
          file=sys.stderr, flush=True)
