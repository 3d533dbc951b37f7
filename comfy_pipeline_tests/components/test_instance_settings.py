"""What an instance's defs.yaml and its run config change in a run: its own quality settings, fixed parameters,
and images given in run config instead of an upstream asset. In-process Dagster on a temporary instance, against
the simulator over HTTP."""

from pathlib import Path

import dagster as dg
import pytest
from PIL import Image

from comfy_pipeline.components import ComfyWorkflowComponent
from comfy_pipeline.definitions import defs
from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import failure_text, items_of, materializations, run_config

SMALL = {"width": 256, "height": 256}


@pytest.fixture
def sim(tmp_path):
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.05, video_seconds=0.1) as simulator:
        yield simulator


def with_instance(**attributes) -> dg.Definitions:
    """The code location plus one more instance, as a defs.yaml in defs/ would add it."""
    component = ComfyWorkflowComponent.from_attributes_dict(attributes=attributes)
    return dg.Definitions.merge(defs, dg.component_defs(component=component))


def materialize(location: dg.Definitions, config: dict, *keys: str):
    with dg.instance_for_test() as instance:
        return location.resolve_implicit_global_asset_job_def().execute_in_process(
            run_config=config, instance=instance, raise_on_error=False,
            asset_selection=[dg.AssetKey(key) for key in keys])


def test_fixed_params_and_the_instances_own_quality_settings_apply_to_its_outputs(sim, tmp_path):
    location = with_instance(workflow="image_upscale", input="generated_image", asset={"key": "small_copy"},
                             params={"scale_by": 0.25}, quality={"image_min_bytes": 10 * 1024 * 1024})
    config = run_config(sim.url, tmp_path / "out", [{"text": "a heron in reeds", "seed": 5, **SMALL}])
    result = materialize(location, config, "prompt", "generated_image", "small_copy")
    verdicts = {e.asset_key.to_user_string(): e.passed for e in result.get_asset_check_evaluations()}
    assert verdicts == {"generated_image": True, "small_copy": False}  # only this asset asks for 10 MB files
    (item,) = items_of(materializations(result, "small_copy")[0])
    assert Image.open(item["path"]).size == (64, 64)  # scale_by 0.25 of 256
    assert item["requested_size"] == "any"  # the upscaler has no size parameter: its input decides
    (image,) = items_of(materializations(result, "generated_image")[0])
    assert image["requested_size"] == "256x256"
    assert "smaller than 10.0 MB" in failure_text(result), failure_text(result)


def test_images_given_in_run_config_feed_an_image_to_image_instance_without_its_upstream(sim, tmp_path):
    start = tmp_path / "start.png"
    Image.effect_noise((300, 200), 60).convert("RGB").save(start)
    config = run_config(sim.url, tmp_path / "out",
                        upscaled_image={"config": {"input_images": [str(start)], "prompt": "a noisy start"}})
    result = materialize(defs, config, "upscaled_image")
    assert result.success, failure_text(result)
    (item,) = items_of(materializations(result, "upscaled_image")[0])
    assert Path(item["path"]).is_file() and Image.open(item["path"]).size == (600, 400)  # the shipped 2x


def test_run_config_may_swap_in_a_workflow_of_the_same_kind_only(sim, tmp_path):
    prompts = [{"text": "a grey wall", "seed": 1, **SMALL}]
    smoke = run_config(sim.url, tmp_path / "smoke", prompts, generated_image={"config": {"workflow": "smoke_image"}})
    smoke["resources"]["quality"] = {"config": {"image_min_bytes": 100}}  # a flat picture is a few hundred bytes
    swapped = materialize(defs, smoke, "prompt", "generated_image")
    assert swapped.success, failure_text(swapped)
    (item,) = items_of(materializations(swapped, "generated_image")[0])
    assert item["workflow"] == "smoke_image"
    video = run_config(sim.url, tmp_path / "video", prompts, generated_image={"config": {"workflow": "smoke_video"}})
    refused = materialize(defs, video, "prompt", "generated_image")
    assert not refused.success
    assert ("workflow 'smoke_video' is image-to-video, but this step runs text-to-image workflows"
            in failure_text(refused)), failure_text(refused)
    assert not list((tmp_path / "video").glob("runs/*/images/*"))  # refused before anything was queued
