"""An instance materialized as a user does it, in a copy of the project: alone with `dg launch --assets` (from
the latest upstream images, with lineage and its check in the instance) and inside a job of the user's own."""

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.instance.ref import InstanceRef
from PIL import Image

from comfy_pipeline.defs.io_manager import LATEST, THIS_RUN
from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import in_project, output_of, project_copy

PROMPT = {"text": "a harbour at noon", "width": 320, "height": 256, "seed": 3}


@pytest.fixture
def sim(tmp_path):
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.05, video_seconds=0.1) as simulator:
        yield simulator


def prompts_config(tmp_path: Path, prompts: list[dict]) -> str:
    path = tmp_path / "prompts.yaml"
    path.write_text(yaml.safe_dump({"ops": {"prompt": {"config": {"prompts": prompts}}}}))
    return str(path)


def run_of(instance: dg.DagsterInstance, run_id: str, asset: str) -> tuple[dict, list[dict], dict[str, bool]]:
    """The materialization metadata of `asset` in run `run_id`, its outputs' listing and its checks' verdicts."""
    found = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    (event,) = [r.event_log_entry.asset_materialization for r in found
                if r.event_log_entry.asset_materialization.asset_key == dg.AssetKey(asset)]
    meta = {k: v.value for k, v in event.metadata.items()}
    items = json.loads(Path(meta["items_json"]).read_text())["items"]
    checks = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    verdicts = {}
    for record in checks:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if evaluation.asset_key == dg.AssetKey(asset):
            verdicts[evaluation.check_name] = evaluation.passed
    return meta, items, verdicts


def latest_run_id(home: Path) -> str:
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        return instance.get_runs(limit=1)[0].run_id


@pytest.mark.slow  # slow tier: dagster and dg in a copy of the project
def test_dg_launch_materializes_an_instance_alone_from_the_latest_images_with_lineage(sim, tmp_path):
    project = project_copy(tmp_path)
    instance_file = project / "comfy_pipeline" / "defs" / "upscaled_image" / "defs.yaml"
    document = yaml.safe_load(instance_file.read_text(encoding="utf-8"))
    document["attributes"]["params"] = {**(document["attributes"].get("params") or {}), "scale_by": 0.5}
    instance_file.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    home = tmp_path / "home"

    images = in_project(project, "dagster", "job", "execute", "-m", "comfy_pipeline.definitions",
                        "-j", "image_generation_job", "-c", prompts_config(tmp_path, [PROMPT]),
                        home=home, COMFYUI_URL=sim.url)
    assert images.returncode == 0, output_of(images)
    image_run = latest_run_id(home)
    launched = in_project(project, "dg", "launch", "--assets", "upscaled_image", home=home, COMFYUI_URL=sim.url)
    assert launched.returncode == 0, output_of(launched)
    upscale_run = latest_run_id(home)
    assert upscale_run != image_run

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        _, (image,), _ = run_of(instance, image_run, "generated_image")
        meta, (upscaled,), checks = run_of(instance, upscale_run, "upscaled_image")
    assert meta["input_generated_image_run"] == image_run  # lineage: which run's images it scaled
    assert meta["input_generated_image_from"] == LATEST
    assert checks == {"image_quality": True}
    path = Path(upscaled["path"])
    assert path.is_file() and path.suffix == ".png" and path.is_relative_to(tmp_path / "out")
    assert upscaled["input_image"] == image["path"]
    assert Image.open(image["path"]).size == (320, 256)
    assert Image.open(path).size == (160, 128)  # scale_by 0.5 from the copy's defs.yaml


USER_JOBS = '''
import dagster as dg

upscale_job = dg.define_asset_job("upscale_job", selection=["prompt", "generated_image", "upscaled_image"])
'''


@pytest.mark.slow  # slow tier: dagster in a copy of the project
def test_an_instance_runs_in_a_job_the_user_defines_in_python(sim, tmp_path):
    project = project_copy(tmp_path)
    (project / "comfy_pipeline" / "defs" / "my_jobs.py").write_text(USER_JOBS, encoding="utf-8")
    home = tmp_path / "home"
    prompts = [PROMPT, {**PROMPT, "text": "a lighthouse at dusk", "seed": 4}]
    proc = in_project(project, "dagster", "job", "execute", "-m", "comfy_pipeline.definitions", "-j", "upscale_job",
                      "-c", prompts_config(tmp_path, prompts), home=home, COMFYUI_URL=sim.url)
    assert proc.returncode == 0, output_of(proc)
    run_id = latest_run_id(home)
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        assert instance.get_run_by_id(run_id).job_name == "upscale_job"
        _, images, image_checks = run_of(instance, run_id, "generated_image")
        meta, upscaled, checks = run_of(instance, run_id, "upscaled_image")
    assert image_checks == {"image_quality": True} and checks == {"image_quality": True}
    assert meta["input_generated_image_run"] == run_id and meta["input_generated_image_from"] == THIS_RUN
    assert [Image.open(item["path"]).size for item in upscaled] == [(640, 512), (640, 512)]  # the shipped 2x
    assert [item["input_image"] for item in upscaled] == [item["path"] for item in images]
