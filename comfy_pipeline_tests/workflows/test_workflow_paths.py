"""Where a workflow may come from: a path given on the command line is the user's own file and works wherever it
is; what run config names stays inside the workflows folders, of which COMFY_PIPELINE_WORKFLOWS_DIR may list
several (separated by ':')."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import requests

from comfy_pipeline.workflows.workflow import (
    ENV_DIR,
    WorkflowError,
    list_workflows,
    load_user_workflow,
    load_workflow,
    workflows_dirs,
)

REPO_WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
BIN = Path(sys.executable).parent


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "COMFYUI_", "COMFY_PIPELINE_"))}
    env.update(extra)
    return env


def own_workflow(folder: Path, name: str = "my_flat_image", source: str = "smoke_image") -> Path:
    """A workflow file of the user's own: a copy of a shipped one under another name, its map beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_WORKFLOWS / f"{source}.json", folder / f"{name}.json")
    shutil.copy(REPO_WORKFLOWS / f"{source}.params.json", folder / f"{name}.params.json")
    return folder / f"{name}.json"


# --- the workflows folders ----------------------------------------------------------------------------------


def test_the_variable_lists_several_folders_searched_in_order(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    own_workflow(first, "shared", "smoke_image")
    own_workflow(second, "shared", "smoke_video")
    own_workflow(second, "only_second")
    monkeypatch.setenv(ENV_DIR, f"{first}{os.pathsep}{os.pathsep}{second}{os.pathsep}")  # empty parts ignored
    assert workflows_dirs() == [first, second]
    assert list_workflows() == ["only_second", "shared"]
    assert load_workflow("shared").path == (first / "shared.json").resolve()  # the first folder wins
    assert load_workflow("only_second").path.parent == second.resolve()
    assert load_workflow(second / "shared.json").kind == "image-to-video"  # a path inside either folder
    message = str(pytest.raises(WorkflowError, load_workflow, "nowhere").value)
    assert str(first) in message and str(second) in message and "only_second, shared" in message


def test_run_config_paths_outside_every_folder_are_refused(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    own_workflow(first)
    second.mkdir()
    outside = own_workflow(tmp_path / "elsewhere")
    monkeypatch.setenv(ENV_DIR, f"{first}{os.pathsep}{second}")
    message = str(pytest.raises(WorkflowError, load_workflow, outside).value)
    assert "outside the workflows folders" in message and str(second.resolve()) in message
    assert ENV_DIR in message and "check --workflows" in message  # what to do instead
    (second / "link.json").symlink_to(outside)
    assert "outside the workflows folders" in str(pytest.raises(WorkflowError, load_workflow, "link").value)


def test_a_missing_folder_in_the_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_DIR, f"{REPO_WORKFLOWS}{os.pathsep}{tmp_path / 'typo'}")
    message = str(pytest.raises(WorkflowError, load_workflow, "smoke_image").value)
    assert f"workflows folder {tmp_path / 'typo'} does not exist" in message


# --- the command line: the user's own file ---------------------------------------------------------------------


def test_a_path_on_the_command_line_loads_wherever_it_is(tmp_path, monkeypatch):
    mine = own_workflow(tmp_path / "elsewhere")
    with pytest.raises(WorkflowError, match="outside the workflows folder"):
        load_workflow(mine)  # as run config: refused
    assert load_user_workflow(mine).path == mine.resolve()
    monkeypatch.chdir(tmp_path)
    assert load_user_workflow("elsewhere/my_flat_image.json").name == "my_flat_image"
    assert load_user_workflow("elsewhere/my_flat_image").name == "my_flat_image"  # .json may be left out
    assert load_user_workflow("smoke_video").path.parent == REPO_WORKFLOWS.resolve()  # a name: the folders
    own_workflow(tmp_path, "smoke_video", "smoke_image")  # ... first, even with a file of that name here
    assert load_user_workflow("smoke_video").path.parent == REPO_WORKFLOWS.resolve()
    own_workflow(tmp_path, "only_here")
    assert load_user_workflow("only_here").path == (tmp_path / "only_here.json").resolve()  # else NAME.json here
    for bad, fragment in [
        ("elsewhere", "not found"),  # a bare name is a workflow name, even with a folder of that name here
        ("elsewhere/my_flat_image.params.json", "is not a workflow file"),
        ("elsewhere/", "is a folder"),
    ]:
        assert fragment in str(pytest.raises(WorkflowError, load_user_workflow, bad).value)


def test_a_user_file_still_needs_its_map_beside_it(tmp_path):
    mine = own_workflow(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "my_flat_image.params.json").unlink()
    assert "has no parameter map" in str(pytest.raises(WorkflowError, load_user_workflow, mine).value)


def test_validate_workflow_takes_a_file_outside_the_folders(tmp_path):
    mine = own_workflow(tmp_path / "elsewhere")
    proc = subprocess.run(
        [sys.executable, "-m", "comfy_pipeline.cli", "validate-workflow", str(mine), "--offline", "--json"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["ok"] is True


def test_check_runs_its_tests_with_a_file_outside_the_folders(tmp_path):
    mine = own_workflow(tmp_path / "elsewhere")
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [str(BIN / "comfy-pipeline"), "check", "--test-type", "image-only", "--workflows", str(mine),
         "--image-min-bytes", "100", "--json"],
        cwd=work, env=clean_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert [test["success"] for test in report["tests"]] == [True]
    # The run made its image with the user's workflow (the items report names it), not a shipped one.
    (items,) = (work / "comfy_outputs" / "runs").rglob("generated_image_items.json")
    assert "my_flat_image" in items.read_text()


def test_help_texts_say_where_workflows_may_come_from():
    from comfy_pipeline.defs.config import ImageConfig, VideoConfig

    for command in (["validate-workflow", "--help"], ["check", "--help"]):
        proc = subprocess.run([sys.executable, "-m", "comfy_pipeline.cli", *command], env=clean_env(),
                              capture_output=True, text=True, timeout=60)
        text = " ".join(proc.stdout.split())
        assert ENV_DIR in text and "workflow file" in text and ".params.json beside it" in text, command
    for config in (ImageConfig, VideoConfig):
        description = config.model_fields["workflow"].description
        assert ENV_DIR in description and "A file elsewhere is refused" in description


# --- run config: only the workflows folders --------------------------------------------------------------------


def test_a_run_config_path_outside_the_folders_fails_the_step_before_the_server(simulator, instance, tmp_path):
    from comfy_pipeline.definitions import defs

    mine = own_workflow(tmp_path / "elsewhere")
    config = {
        "resources": {"comfy": {"config": {"url": simulator.url, "output_dir": str(tmp_path / "out")}}},
        "ops": {"generated_image": {"config": {"workflow": str(mine)}}},
    }
    result = defs.resolve_job_def("image_generation_job").execute_in_process(
        run_config=config, instance=instance, raise_on_error=False
    )
    assert not result.success
    failures = [event for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert [event.step_key for event in failures] == ["generated_image"]
    data = failures[0].step_failure_data
    said = (data.user_failure_data.description if data.user_failure_data else None) or data.error.message
    assert "outside the workflows folder" in said and str(mine) in said
    assert requests.get(f"{simulator.url}/history", timeout=10).json() == {}  # nothing reached the server
