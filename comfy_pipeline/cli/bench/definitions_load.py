"""`dagster definitions validate -w workspace.yaml`: our code location vs a one-asset project made here.

Both run as the same command in a fresh process, alternating in ABBA order (ours, one-asset, one-asset, ours,
...) so that neither always goes first into a cold disk cache and a busy moment on the machine hits both
alike; the figure is the ratio of the medians.
"""

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from comfy_pipeline.cli.bench.report import RATIO_AT_MOST, Figure

ONE_ASSET = '''import dagster as dg


@dg.asset
def one() -> int:
    return 1


defs = dg.Definitions(assets=[one])
'''


def _workspace(folder: Path, module: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "workspace.yaml").write_text(
        f"load_from:\n  - python_module:\n      module_name: {module}\n      working_directory: .\n"
    )
    return folder


def _dagster() -> list[str]:
    script = Path(sys.executable).with_name("dagster")
    return [str(script)] if script.exists() else [shutil.which("dagster") or "dagster"]


def _validate_seconds(folder: Path, env: dict[str, str]) -> float:
    start = time.monotonic()
    done = subprocess.run([*_dagster(), "definitions", "validate", "-w", "workspace.yaml"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError(f"`dagster definitions validate` failed in {folder}: {done.stderr.strip()[-500:]}")
    return seconds


def definitions_validate(repeats: int, workdir: Path) -> Figure:
    ours = _workspace(workdir / "ours", "comfy_pipeline.definitions")
    one = _workspace(workdir / "one_asset", "one_asset")
    (one / "one_asset.py").write_text(ONE_ASSET)
    home = workdir / "dagster_home"
    home.mkdir()
    # No COMFYUI_* settings: the definitions load the same way on every machine.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMFYUI_", "COMFY_PIPELINE_"))}
    env["DAGSTER_HOME"] = str(home)
    folders = {"ours": ours, "one": one}
    times: dict[str, list[float]] = {"ours": [], "one": []}
    for repeat in range(repeats):
        for name in ("ours", "one") if repeat % 2 == 0 else ("one", "ours"):
            times[name].append(_validate_seconds(folders[name], env))
    return Figure(
        "definitions_validate_s", "dagster definitions validate", "s", "a one-asset Dagster project",
        1.3, RATIO_AT_MOST, statistics.median(times["ours"]), statistics.median(times["one"]),
        {"repeats": repeats, "seconds_ours": [round(t, 3) for t in times["ours"]],
         "seconds_one_asset": [round(t, 3) for t in times["one"]]},
    )
