"""The real-server tier of the component: two model-free instances a user adds with a defs.yaml each, a
text-to-image one (smoke_image, from the `prompt` asset) and an image-to-image one taking its pictures (the
worked example image_upscale), materialized with `dg launch --assets` against a real ComfyUI, in a copy of the
project. Skipped unless COMFYUI_URL is set; run it against 0.33.0 and 0.8.0:

    COMFYUI_URL=http://127.0.0.1:8188 pytest -m real_comfyui comfy_pipeline_tests/system/test_real_components.py
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.instance.ref import InstanceRef
from PIL import Image

from comfy_pipeline.comfyui import ComfyUIClient
from comfy_pipeline_tests.support.helpers import BIN, REPO, dagster_env

URL = os.environ.get("COMFYUI_URL")
pytestmark = [
    pytest.mark.real_comfyui,
    pytest.mark.skipif(not URL, reason="set COMFYUI_URL to a real ComfyUI to run the real-server tier"),
]
LAUNCH_TIMEOUT = 900  # seconds: Dagster's start-up and a CPU server, on a busy machine
SCALE = 2.0
PROMPTS = [{"text": "a flat real-server picture", "width": 320, "height": 256, "seed": 1},
           {"text": "another one, taller", "width": 272, "height": 336, "seed": 2}]
FLAT = {"image_min_bytes": 100, "skip_checks": ["detail"]}  # smoke_image's pictures are one flat colour: tiny PNGs
INSTANCES = {
    "real_flat_image": {"workflow": "smoke_image", "input": "prompt", "quality": FLAT},
    "real_flat_upscaled": {"workflow": "image_upscale", "input": "real_flat_image", "quality": FLAT,
                           "params": {"scale_by": SCALE, "upscale_method": "bicubic"}},
}


def project_copy(tmp_path: Path) -> Path:
    """A copy of the project to add instances to: the test never writes into the repository.
    (A module-local stand-in until support/helpers.py has the shared `project_copy`.)"""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "workspace.yaml"):
        shutil.copy(REPO / name, project / name)
    for name in ("comfy_pipeline", "workflows"):
        shutil.copytree(REPO / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    return project


def add_instance(project: Path, key: str, attributes: dict) -> None:
    folder = project / "comfy_pipeline" / "defs" / key
    folder.mkdir()
    document = {"type": "comfy_pipeline.components.ComfyWorkflowComponent",
                "attributes": {**attributes, "asset": {"key": key, "group_name": "real_tier"}}}
    (folder / "defs.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def launch(project: Path, home: Path, out: Path, *assets: str, config: Path) -> subprocess.CompletedProcess:
    """`dg launch --assets ...` run in the copy as a user runs it there: `comfy_pipeline` imports from the copy
    (PYTHONPATH comes before the editable install), the instance in `home`, the real server at URL."""
    env = dagster_env(home, PYTHONPATH=str(project), COMFYUI_URL=URL, COMFY_PIPELINE_OUTPUT_DIR=str(out))
    return subprocess.run([str(BIN / "dg"), "launch", "--assets", ",".join(assets), "--config", str(config)],
                          cwd=project, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)


def materialized(instance: dg.DagsterInstance, run_id: str, key: str) -> tuple[dict, list[dict]]:
    """The metadata of `key`'s one materialization in the run, and its outputs' listing (items_json)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    (event,) = [r.event_log_entry.asset_materialization for r in records
                if r.event_log_entry.asset_materialization.asset_key == dg.AssetKey(key)]
    metadata = {name: value.value for name, value in event.metadata.items()}
    return metadata, json.loads(Path(metadata["items_json"]).read_text())["items"]


def check_verdicts(instance: dg.DagsterInstance, run_id: str) -> dict[tuple[str, str], bool]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    evaluations = [r.event_log_entry.dagster_event.event_specific_data for r in records]
    return {(e.asset_key.to_user_string(), e.check_name): e.passed for e in evaluations}


def test_a_text_to_image_and_an_image_to_image_instance_run_on_the_real_server(tmp_path):
    with ComfyUIClient(URL) as client:
        version = client.version()
    project = project_copy(tmp_path)
    for key, attributes in INSTANCES.items():
        add_instance(project, key, attributes)
    config = tmp_path / "prompts.yaml"
    config.write_text(yaml.safe_dump({"ops": {"prompt": {"config": {"prompts": PROMPTS}}}}))
    home, out = tmp_path / "dagster_home", tmp_path / "out"
    home.mkdir()

    proc = launch(project, home, out, "prompt", *INSTANCES, config=config)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags.get("comfy_pipeline/backend") == "comfyui"  # the real server, not the simulator
        flat_meta, flat_items = materialized(instance, run.run_id, "real_flat_image")
        upscaled_meta, upscaled_items = materialized(instance, run.run_id, "real_flat_upscaled")
        verdicts = check_verdicts(instance, run.run_id)
    assert verdicts == {("real_flat_image", "image_quality"): True, ("real_flat_upscaled", "image_quality"): True}
    for metadata, workflow, upstream in ((flat_meta, "smoke_image", "prompt"),
                                         (upscaled_meta, "image_upscale", "real_flat_image")):
        assert (metadata["backend"], metadata["comfyui_version"]) == ("comfyui", version)
        assert metadata["workflow"] == workflow
        assert (metadata["passed_outputs"], metadata["failed_outputs"], metadata["failed_prompts"]) == (2, 0, 0)
        assert metadata[f"input_{upstream}_run"] == run.run_id  # lineage: this run's prompts / pictures
        assert metadata[f"input_{upstream}_from"] == "this run"

    assert len(flat_items) == len(upscaled_items) == len(PROMPTS)
    pictures = {}
    for item in [*flat_items, *upscaled_items]:
        assert (item["backend"], item["comfyui_version"]) == ("comfyui", version)
        assert item["comfyui_url"].rstrip("/") == URL.rstrip("/")
        checks = {check["name"]: check["passed"] for check in item["checks"]}
        assert all(checks.values()) and "detail" not in checks, item["checks"]  # skip_checks [detail] honoured
        path = Path(item["path"])
        assert path.is_file() and path.is_relative_to(out) and path.suffix == ".png"
        with Image.open(path) as picture:
            assert picture.format == "PNG" and picture.size == (item["width"], item["height"])
            pictures[item["spec"]["seed"], item["workflow"]] = picture.convert("RGB")
    assert sorted(picture.size for (_, workflow), picture in pictures.items() if workflow == "smoke_image") == \
        sorted((spec["width"], spec["height"]) for spec in PROMPTS)
    for spec in PROMPTS:
        flat, upscaled = pictures[spec["seed"], "smoke_image"], pictures[spec["seed"], "image_upscale"]
        # Exactly scale_by times the size of its own input (round(side * scale_by) on the server) ...
        assert upscaled.size == (round(flat.width * SCALE), round(flat.height * SCALE))
        # ... and the same picture: the flat colour, within one level (bicubic's float rounding).
        (colour,) = {pixel for _, pixel in flat.getcolors(1 << 24)}
        assert all(abs(a - b) <= 1 for _, pixel in upscaled.getcolors(1 << 24) for a, b in zip(pixel, colour))
