"""A ComfyWorkflowComponent instance built in-process from its attributes, as a defs.yaml gives them: the asset it
makes, and the mistakes that stop it loading (each named, with what would be right)."""

import json
import shutil

import dagster as dg
import pytest

from comfy_pipeline.components import ComfyWorkflowComponent
from comfy_pipeline.definitions import shared_definitions
from comfy_pipeline.defs.resources import gpu_pool
from comfy_pipeline_tests.support.helpers import REPO_WORKFLOWS

HOLDS = "comfy_pipeline/holds"


def build(**attributes) -> dg.Definitions:
    component = ComfyWorkflowComponent.from_attributes_dict(attributes=attributes)
    return dg.component_defs(component=component, resources=shared_definitions().resources)


def load_error(**attributes) -> str:
    """The message a user sees when these attributes cannot make an asset (the test fails if they can)."""
    with pytest.raises(Exception) as failure:
        build(**attributes).get_assets_def(attributes["asset"]["key"])
    return "\n".join(str(e) for e in _chain(failure.value))


def _chain(error: BaseException):
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def test_an_instance_makes_one_asset_with_its_input_check_tags_pool_kinds_and_automation():
    defs = build(
        workflow="image_upscale",
        asset={"key": "sharp_image", "group_name": "examples", "kinds": ["comfyui", "image"],
               "description": "Bigger pictures.", "owners": ["team:art"],
               "automation_condition": "{{ dg.AutomationCondition.eager() }}"},
        input="generated_image",
        params={"scale_by": 1.5},
    )
    (assets,) = defs.assets
    spec = assets.specs_by_key[dg.AssetKey("sharp_image")]
    assert set(assets.keys) == {dg.AssetKey("sharp_image")}
    assert [dep.asset_key for dep in spec.deps] == [dg.AssetKey("generated_image")]
    assert [check.name for check in assets.check_specs] == ["image_quality"]
    assert spec.tags[HOLDS] == "images"
    assert {"comfyui", "image"} <= set(spec.kinds)
    assert spec.group_name == "examples" and spec.description == "Bigger pictures." and spec.owners == ["team:art"]
    assert assets.op.pool == gpu_pool()  # the server set's pool, as the shipped assets have
    assert spec.automation_condition is not None
    assert spec.automation_condition.get_label() == dg.AutomationCondition.eager().get_label()


def test_the_pool_and_the_check_name_can_be_chosen():
    defs = build(workflow="image_upscale", asset={"key": "sharp_image"}, input="generated_image",
                 pool="upscalers", check_name="upscale_ok")
    (assets,) = defs.assets
    assert assets.op.pool == "upscalers"
    assert [check.name for check in assets.check_specs] == ["upscale_ok"]


def test_a_text_to_image_instance_reads_prompts_and_holds_images():
    defs = build(workflow="smoke_image", asset={"key": "flat_image"}, input="prompt")
    (assets,) = defs.assets
    spec = assets.specs_by_key[dg.AssetKey("flat_image")]
    assert [dep.asset_key for dep in spec.deps] == [dg.AssetKey("prompt")]
    assert spec.tags[HOLDS] == "images" and [c.name for c in assets.check_specs] == ["image_quality"]


def test_a_video_instance_holds_videos_and_checks_video_quality():
    defs = build(workflow="smoke_video", asset={"key": "flat_clip"}, input="generated_image")
    (assets,) = defs.assets
    assert assets.specs_by_key[dg.AssetKey("flat_clip")].tags[HOLDS] == "videos"
    assert [c.name for c in assets.check_specs] == ["video_quality"]


def test_a_multi_part_input_key_is_written_with_a_slash():
    defs = build(workflow="image_upscale", asset={"key": "art/sharp_image"}, input="art/picture")
    (assets,) = defs.assets
    spec = assets.specs_by_key[dg.AssetKey(["art", "sharp_image"])]
    assert [dep.asset_key for dep in spec.deps] == [dg.AssetKey(["art", "picture"])]


def test_a_string_parameter_keeps_a_value_that_looks_like_a_number():
    # Dagster's templating turns "1234" into 1234 unless the field passes values through: a prompt stays text.
    component = ComfyWorkflowComponent.from_attributes_dict(attributes={
        "workflow": "z_image_turbo_generation", "asset": {"key": "numbered"}, "input": "prompt",
        "params": {"prompt": "1234", "steps": 4}})
    assert component.params == {"prompt": "1234", "steps": 4}
    assert isinstance(component.params["prompt"], str)
    build(workflow="z_image_turbo_generation", asset={"key": "numbered"}, input="prompt", params={"prompt": "1234"})


def test_an_unknown_parameter_is_named_with_the_known_ones():
    message = load_error(workflow="image_upscale", asset={"key": "sharp_image"}, input="generated_image",
                         params={"scale_bye": 2.0})
    assert "scale_bye" in message
    assert "scale_by" in message.replace("scale_bye", "") and "upscale_method" in message


def test_a_value_out_of_range_names_the_allowed_range():
    message = load_error(workflow="smoke_image", asset={"key": "flat_image"}, input="prompt", params={"width": 10})
    assert "width" in message and "64" in message and "4096" in message


def test_a_workflow_that_does_not_exist_is_named():
    message = load_error(workflow="no_such_workflow", asset={"key": "mystery"}, input="prompt")
    assert "no_such_workflow" in message


def test_a_workflow_without_a_kind_cannot_be_an_asset(tmp_path):
    for suffix in (".json", ".params.json"):
        shutil.copy(REPO_WORKFLOWS / f"smoke_image{suffix}", tmp_path / f"kindless{suffix}")
    mapping = json.loads((tmp_path / "kindless.params.json").read_text())
    del mapping["kind"]
    (tmp_path / "kindless.params.json").write_text(json.dumps(mapping))
    message = load_error(workflow=str(tmp_path / "kindless.json"), asset={"key": "kindless"}, input="prompt")
    assert "kind" in message and "text-to-image" in message  # says what is missing and what it may be


def test_an_unknown_quality_setting_is_named_with_the_known_ones():
    message = load_error(workflow="smoke_image", asset={"key": "flat_image"}, input="prompt",
                         quality={"image_min_byte": 100})
    assert "image_min_byte" in message and "image_min_bytes" in message.replace("image_min_byte ", "")


def test_the_uploaded_image_cannot_be_fixed_in_params():
    message = load_error(workflow="smoke_video", asset={"key": "flat_clip"}, input="generated_image",
                         params={"image": "example.png"})
    assert "'image'" in message and "generated_image" in message


def test_a_partitioned_instance_is_refused_rather_than_silently_unpartitioned():
    message = load_error(workflow="smoke_image", input="prompt", asset={
        "key": "daily_pictures", "partitions_def": {"type": "static", "partition_keys": ["a", "b"]}})
    assert "partitions_def" in message and "not supported" in message
