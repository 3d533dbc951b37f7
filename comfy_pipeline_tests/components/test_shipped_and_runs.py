"""The shipped GPU assets are component instances (same keys, checks, deps and jobs), a failed upstream image is
skipped and named by the instance after it, and an eager instance follows its input. In-process Dagster on a
real temporary instance, against the simulator over HTTP."""

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

import comfy_pipeline.defs
from comfy_pipeline.components import ComfyWorkflowComponent
from comfy_pipeline.definitions import CODE_LOCATION_NAME, defs
from comfy_pipeline.defs.resources import SERVER_TAG, gpu_pool
from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import (
    REPO,
    execute,
    failure_text,
    items_of,
    materializations,
    run_config,
)

SMALL = {"width": 256, "height": 256, "frames": 9, "fps": 8}
DEFS = REPO / "comfy_pipeline" / "defs"
COMPONENT = "comfy_pipeline.components.ComfyWorkflowComponent"


@pytest.fixture
def sim(tmp_path):
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.05, video_seconds=0.1) as simulator:
        yield simulator


def keys(*names: str) -> set[dg.AssetKey]:
    return {dg.AssetKey(name) for name in names}


def test_the_shipped_gpu_assets_are_instances_of_the_component():
    tree = dg.ComponentTree(defs_module=comfy_pipeline.defs, project_root=REPO, code_location_name=CODE_LOCATION_NAME)
    instances = {c.asset.key.to_user_string(): c for c in tree.get_all_components(of_type=ComfyWorkflowComponent)}
    assert {"generated_image", "ltx2_video", "upscaled_image"} <= set(instances)
    for name, workflow in (("generated_image", "z_image_turbo_generation"), ("ltx2_video", "ltx2_image_to_video"),
                           ("upscaled_image", "image_upscale")):
        document = yaml.safe_load((DEFS / name / "defs.yaml").read_text(encoding="utf-8"))
        assert document["type"] == COMPONENT and instances[name].workflow == workflow

    shipped = {
        "generated_image": (["prompt"], ["image_quality"], "images"),
        "ltx2_video": (["generated_image"], ["video_quality"], "videos"),
        "upscaled_image": (["generated_image"], ["image_quality"], "images"),
    }
    for name, (deps, checks, holds) in shipped.items():
        assets = defs.resolve_assets_def(name)
        spec = assets.specs_by_key[dg.AssetKey(name)]
        assert [dep.asset_key.to_user_string() for dep in spec.deps] == deps
        assert [check.name for check in assets.check_specs] == checks
        assert spec.tags["comfy_pipeline/holds"] == holds
    assert defs.resolve_assets_def("prompt").specs_by_key[dg.AssetKey("prompt")].tags["comfy_pipeline/holds"] == (
        "prompts")

    def selected(job: str) -> set[dg.AssetKey]:
        return defs.resolve_job_def(job).asset_layer.executable_asset_keys

    assert selected("image_to_video_job") == keys("prompt", "generated_image", "ltx2_video", "validation_report")
    assert selected("image_generation_job") == keys("prompt", "generated_image", "validation_report")
    assert selected("video_generation_job") == keys("ltx2_video", "validation_report")
    assert dg.AssetKey("upscaled_image") in defs.resolve_all_asset_keys()  # the example, in no shipped job


def test_a_failed_upstream_image_is_skipped_and_named_and_the_last_step_fails(sim, tmp_path):
    out = tmp_path / "out"
    sim.set_fault("black-output", count=1)  # the first prompt's image comes back black, the second is good
    prompts = [{"text": "a night that went black", "seed": 1, **SMALL}, {"text": "a sunny meadow", "seed": 2, **SMALL}]
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            run_config=run_config(sim.url, out, prompts), instance=instance, raise_on_error=False,
            asset_selection=list(keys("prompt", "generated_image", "upscaled_image")))
    assert not result.success
    image_checks = {e.asset_key.to_user_string(): e.passed for e in result.get_asset_check_evaluations()}
    assert image_checks["generated_image"] is False
    failed_steps = {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE}
    assert failed_steps == {"upscaled_image"}  # the image step goes on with the good image; the last one says it

    black, good = items_of(materializations(result, "generated_image")[0])
    (upscaled,) = items_of(materializations(result, "upscaled_image")[0])  # recorded before the step failed
    assert Path(upscaled["path"]).is_file()
    assert upscaled["input_image"] == good["path"]  # made from the good image only
    said = failure_text(result)
    assert "a night that went black" in said or Path(black["path"]).name in said, said
    assert "a sunny meadow" not in said
    (report,) = out.rglob("reports/upscaled_image_items.json")  # its own items report, beside the run's others
    assert [item["path"] for item in json.loads(report.read_text())["items"]] == [upscaled["path"]]


def test_an_eager_instance_asks_for_a_run_once_its_input_is_materialized(sim, tmp_path):
    follower = ComfyWorkflowComponent.from_attributes_dict(attributes={
        "workflow": "image_upscale", "input": "generated_image",
        "asset": {"key": "follower", "automation_condition": "{{ dg.AutomationCondition.eager() }}"}})
    bystander = ComfyWorkflowComponent.from_attributes_dict(attributes={
        "workflow": "image_upscale", "input": "generated_image", "asset": {"key": "bystander"}})
    location = dg.Definitions.merge(defs, dg.component_defs(component=follower),
                                    dg.component_defs(component=bystander))
    watched = dg.AssetSelection.assets("follower", "bystander")
    with dg.instance_for_test() as instance:
        before = dg.evaluate_automation_conditions(defs=location, instance=instance, asset_selection=watched)
        assert before.total_requested == 0  # its input was never made

        made = execute("image_generation_job", instance,
                       run_config(sim.url, tmp_path / "out", [{"text": "a fox", "seed": 1, **SMALL}]))
        assert made.success, failure_text(made)
        after = dg.evaluate_automation_conditions(defs=location, instance=instance, asset_selection=watched,
                                                  cursor=before.cursor)
        assert after.get_num_requested(dg.AssetKey("follower")) == 1
        assert after.get_num_requested(dg.AssetKey("bystander")) == 0  # no automation_condition: left alone
        again = dg.evaluate_automation_conditions(defs=location, instance=instance, asset_selection=watched,
                                                  cursor=after.cursor)
        assert again.total_requested == 0  # once per new input, not on every tick


def test_the_automation_sensor_is_on_from_the_start_and_tags_its_runs_with_the_server_set():
    # Dagster's own default automation sensor starts stopped and tags nothing: an eager instance would never run
    # under a fresh daemon, and its runs would escape the run queue's limit per server set.
    sensor = defs.resolve_sensor_def("comfy_automation_sensor")
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.run_tags == {SERVER_TAG: gpu_pool()}
    assert {s.name for s in defs.sensors} & {"default_automation_condition_sensor"} == set()
