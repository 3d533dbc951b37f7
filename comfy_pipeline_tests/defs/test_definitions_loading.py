"""The code location is `defs/` as Dagster's loader finds it, plus the shared resources: a file that
`dg scaffold defs` writes into `defs/` joins it without an edit to definitions.py."""

import importlib
import json
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

import comfy_pipeline.defs

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ASSETS = {"prompt", "generated_image", "ltx2_video", "validation_report", "upscaled_image"}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "COMFYUI_", "COMFY_PIPELINE_"))}
    env.update(extra)
    return env


def copy_project(dest: Path) -> Path:
    for name in ("pyproject.toml", "README.md", "workspace.yaml"):
        shutil.copy(REPO / name, dest / name)
    for name in ("comfy_pipeline", "workflows"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def run(*command: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{' '.join(command)}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow  # slow tier: a copy of the project loaded by dg
def test_an_asset_file_scaffolded_into_defs_joins_the_code_location(tmp_path):
    project = copy_project(tmp_path)
    run(str(BIN / "dg"), "scaffold", "defs", "dagster.asset", "extra_asset.py", cwd=project)
    assert (project / "comfy_pipeline" / "defs" / "extra_asset.py").is_file()
    definitions = "comfy_pipeline/definitions.py"
    assert (project / definitions).read_text() == (REPO / definitions).read_text()  # not edited
    listed = json.loads(run(str(BIN / "dg"), "list", "defs", "--json", cwd=project).stdout)
    assert {a["asset_key"] for a in listed["assets"]} == ASSETS | {"extra_asset"}
    assert {r["name"] for r in listed["resources"]} == {"comfy", "quality", "io_manager"}
    # Dagster's classic command line loads the same code location, the new asset included.
    validated = run(str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml", cwd=project)
    assert "Validation successful" in validated.stdout + validated.stderr
    loaded = run(
        sys.executable, "-c",
        "import comfy_pipeline; from comfy_pipeline.definitions import defs; "
        "print(comfy_pipeline.__file__); print(sorted(k.to_user_string() for k in defs.resolve_all_asset_keys()))",
        cwd=project,
    ).stdout.splitlines()
    assert loaded[0].startswith(str(project))  # the copy was loaded, not the installed project
    assert "extra_asset" in loaded[1]


def test_no_module_in_defs_holds_a_definitions_object():
    # The loader takes a module's Definitions object *instead of* the rest of that module: one would hide assets.
    for info in pkgutil.walk_packages(comfy_pipeline.defs.__path__, prefix="comfy_pipeline.defs."):
        module = importlib.import_module(info.name)
        held = [name for name, value in vars(module).items() if isinstance(value, dg.Definitions)]
        assert not held, f"{info.name} holds a Definitions object at module scope: {held}"


def test_the_code_location_is_the_defs_folder_plus_the_shared_resources():
    from comfy_pipeline.definitions import defs, defs_folder_definitions

    folder = defs_folder_definitions()
    assert {k.to_user_string() for k in defs.resolve_all_asset_keys()} == ASSETS
    assert {key.to_user_string() for asset in folder.assets for key in asset.keys} == ASSETS
    assert {job.name for job in folder.jobs} >= {"image_to_video_job", "image_generation_job",
                                                 "video_generation_job", "comfyui_connection_job"}
    assert {s.name for s in folder.sensors} == {"prompt_inbox_sensor", "failure_log_sensor", "comfy_automation_sensor"}
    assert {s.name for s in folder.schedules} == {"daily_image_to_video_schedule"}
    assert set(defs.resources) == {"comfy", "quality", "io_manager"}
    assert set(defs.loggers) == {"console", "progress"}
    assert defs.resolve_job_def("image_to_video_job").executor_def is dg.in_process_executor


@pytest.mark.slow  # slow tier: a copy of the project loaded by dg
def test_the_package_alone_loads_as_an_installed_wheel_would(tmp_path):
    # A wheel puts the package in site-packages with no pyproject.toml above it (dg.load_from_defs_folder needs one).
    shutil.copytree(REPO / "comfy_pipeline", tmp_path / "comfy_pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    # ... and the workflows inside it, where pyproject's force-include puts them: the instances load them.
    shutil.copytree(REPO / "workflows", tmp_path / "comfy_pipeline" / "_bundled_workflows")
    assert not any((folder / "pyproject.toml").exists() for folder in [tmp_path, *tmp_path.parents])
    loaded = run(
        sys.executable, "-c",
        "import comfy_pipeline; from comfy_pipeline.definitions import defs; print(comfy_pipeline.__file__); "
        "print(sorted(k.to_user_string() for k in defs.resolve_all_asset_keys()))",
        cwd=tmp_path,
    ).stdout.splitlines()
    assert loaded[0].startswith(str(tmp_path))
    assert loaded[1] == str(sorted(ASSETS))
