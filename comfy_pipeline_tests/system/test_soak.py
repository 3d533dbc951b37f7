"""Soak: 50 prompts through the Dagster jobs against a simulator injecting seeded random faults.

Every prompt must end in a known state with a clear reason, no run may hang, no partial file may be left, the
server's queue must end empty, and no prompt may run to completion twice. A table of outcome x fault is printed
(`pytest -s` shows it).
"""

import re
import time
from collections import Counter

import dagster as dg
import pytest
import requests

from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import (
    execute,
    failure_text,
    items_of,
    materializations,
)

# slow tier (pytest -m slow; CI runs every tier): 50 prompts with random faults
pytestmark = pytest.mark.slow

SEED = 20261121
PROMPT_FAULTS = {
    "execution-error": 0.08, "drop-ws": 0.1, "restart": 0.05, "corrupt-output": 0.06, "hostile-filename": 0.04,
}
REQUEST_FAULTS = {"http-500": 0.01}
# (job, prompts per run): 8 image runs and 2 image-to-video runs, 50 prompts in all.
RUNS = [("image_generation_job", 5)] * 8 + [("image_to_video_job", 5)] * 2
RUN_TIME_LIMIT = 40.0  # seconds; a hang would be the 900 s prompt timeout
# What a failed prompt's line must say: one of the clear reasons the pipeline gives.
CLEAR_REASONS = {
    "execution error": r"failed in node \S+ \(\w+\): RuntimeError: CUDA error",
    "forgotten twice": r"the server probably restarted and forgot it\. It had already been submitted again once",
    "unsafe output name": r"answered HTTP 400 for output '\.\./\.\./",
    "HTTP 500": r"with HTTP 500 \('500 Internal Server Error",
}


def _outcomes(result, job: str, size: int) -> list[str]:
    """One outcome per prompt of a run."""
    failed: dict[tuple[str, int], str] = {}
    for line in failure_text(result).splitlines():
        match = re.match(r"(prompt|video) (\d+) \('.*?'\): (.*)", line)
        if match and re.match(r"\S+\.(png|jpe?g|webp|mp4|webm): ", match[3]):  # an output that failed a check
            failed[(match[1], int(match[2]))] = "failed check, file kept"
        elif match:
            reason = next((name for name, pattern in CLEAR_REASONS.items() if re.search(pattern, line)), None)
            failed[(match[1], int(match[2]))] = f"failed: {reason}" if reason else f"UNCLEAR: {match[3][:200]}"
    stages = [("prompt", "generated_image")] + ([("video", "ltx2_video")] if job == "image_to_video_job" else [])
    outcomes = []
    for i in range(size):
        outcome = "validated"
        for key, asset in stages:
            if (key, i) in failed:
                outcome = failed[(key, i)]
                break
            done = materializations(result, asset)
            if not done:  # every prompt of the run failed at this stage
                outcome = "UNCLEAR: stage recorded nothing"
                break
            items = {item["job"]: item for item in items_of(done[0])}
            if f"{key} {i}" not in items:
                outcome = f"UNCLEAR: {key} {i} neither failed nor recorded"
                break
            if not all(c["passed"] for c in items[f"{key} {i}"]["checks"]):
                outcome = "failed check, file kept"
                break
        outcomes.append(outcome)
    return outcomes


def test_soak_50_prompts_with_random_faults(tmp_path):
    out = tmp_path / "out"
    rows: list[tuple[str, str]] = []  # (outcome, faults) per prompt
    started_all = time.monotonic()
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.05, video_seconds=0.1, fault_seed=SEED) as sim, \
            dg.instance_for_test() as instance:
        for kind, rate in {**PROMPT_FAULTS, **REQUEST_FAULTS}.items():
            sim.set_fault(kind, rate=rate)
        runs = []
        for n, (job, size) in enumerate(RUNS):
            prompts = [{"text": f"soak run {n} prompt {i}", "width": 512, "height": 384, "seed": 1000 * n + i,
                        "frames": 9, "fps": 8} for i in range(size)]
            config = {
                "resources": {"comfy": {"config": {"url": sim.url, "output_dir": str(out), "prompt_timeout": 30.0,
                                                   "server_down_timeout": 5.0}}},
                "ops": {"prompt": {"config": {"prompts": prompts}}},
            }
            started = time.monotonic()
            result = execute(job, instance, config)
            elapsed = time.monotonic() - started
            assert elapsed < RUN_TIME_LIMIT, f"run {n} took {elapsed:.0f} s"
            runs.append((job, size, result))
        sim.clear_faults()
        started_prompts = sim.started_prompts()
        queue = requests.get(f"{sim.url}/queue", timeout=5).json()
        hits = sim.fault_hits()

    faults_of: dict[str, list[str]] = {}
    for entry in started_prompts:
        for prefix in entry["filename_prefixes"]:
            faults_of.setdefault(prefix, []).extend(entry["faults"])
    for prefix in faults_of:  # a second start only after a restart abandoned the first; never two full runs
        ends = [e["ended"] for e in started_prompts if prefix in e["filename_prefixes"]]
        assert len(ends) <= 2 and sum(end is not None for end in ends) <= 1, (prefix, ends)
    for job, size, result in runs:
        tag = result.run_id[:8]
        for i, outcome in enumerate(_outcomes(result, job, size)):
            prefixes = [f"comfy_pipeline/{tag}/image_{i:02d}", f"comfy_pipeline/{tag}/video_{i:02d}"]
            faults = sorted({f for p in prefixes for f in faults_of.get(p, [])})
            rows.append((outcome, "+".join(faults) or "none"))

    _print_table(rows, hits, time.monotonic() - started_all)
    assert len(rows) == 50
    assert not [o for o, _ in rows if o.startswith("UNCLEAR")], rows
    for outcome, faults in rows:  # the faults that always fail a prompt did fail it (unless a restart re-drew)
        if "restart" not in faults:
            if "execution-error" in faults:
                assert outcome == "failed: execution error", faults
            elif "hostile-filename" in faults:
                assert outcome == "failed: unsafe output name", faults
            if "corrupt-output" in faults:
                assert outcome != "validated", faults  # a truncated file is never passed as good
    assert sum(o == "validated" for o, _ in rows) >= 5
    assert {"drop-ws", "restart", "execution-error", "corrupt-output"} <= set(hits)
    assert queue == {"queue_running": [], "queue_pending": []}
    leftovers = [p for p in out.rglob("*") if p.is_file() and (p.suffix == ".part" or p.name.startswith("."))]
    assert leftovers == []


def _print_table(rows: list[tuple[str, str]], hits: dict[str, int], seconds: float) -> None:
    counts = Counter(rows)
    outcomes = sorted({o for o, _ in rows})
    faults = sorted({f for _, f in rows}, key=lambda f: (f != "none", f))
    width = max(len(o) for o in outcomes)
    print(f"\nsoak: {len(rows)} prompts in {seconds:.0f} s; fault hits {dict(sorted(hits.items()))}")
    print("outcome".ljust(width) + "".join(f" | {f}" for f in faults) + " | total")
    for outcome in outcomes:
        cells = [str(counts[(outcome, f)]).rjust(len(f)) for f in faults]
        total = sum(counts[(outcome, f)] for f in faults)
        print(outcome.ljust(width) + "".join(f" | {c}" for c in cells) + f" | {total}")
