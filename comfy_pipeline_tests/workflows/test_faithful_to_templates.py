"""Our workflow files are the official templates, flattened the way ComfyUI's "Export (API)" does.

The UI-format templates (templates-json 0.1.50, the version ComfyUI 0.33.0 ships) are flattened by
`ui_flatten` and compared node by node with workflows/*.json: ids, class types, titles, every input value
and every link. The only differences allowed are the deliberate ones listed here.
"""

import json

import pytest

from comfy_pipeline.comfyui.schema import (
    load_bundled_object_info,
    object_info_with_models,
)
from comfy_pipeline.comfyui.validation import validate_prompt
from comfy_pipeline.workflows.workflow import load_workflow
from comfy_pipeline_tests.support.helpers import TEMPLATES
from comfy_pipeline_tests.support.ui_flatten import flatten, widget_inputs

Z_IMAGE_PROMPT = ("Latina female with thick wavy hair, harbor boats and pastel houses behind. "
                  "Breezy seaside light, warm tones, cinematic close-up. ")

# Deliberate differences from the template, as (node, input) -> (template value, our value).
CHANGED = {
    "z_image_turbo_generation": {
        # The prompt comes from node 58 (the seed design's injection point) instead of the inner widget.
        ("57:27", "text"): (Z_IMAGE_PROMPT, ["58", 0]),
        # The seed design's default size.
        ("57:13", "height"): (1024, 784),
    },
    "ltx2_image_to_video": {
        # Stage 1 runs at half size in 32-pixel latent blocks, so the model turns 720 into 704 anyway;
        # 704 is the nearest multiple of 64, which the height parameter requires.
        ("102", "resize_type.height"): (720, 704),
    },
}
ADDED_NODES = {
    "z_image_turbo_generation": {
        "58": {"inputs": {"value": Z_IMAGE_PROMPT}, "class_type": "PrimitiveStringMultiline",
               "_meta": {"title": "Prompt"}},
    },
    "ltx2_image_to_video": {},
}
TEMPLATE_OF = {
    "z_image_turbo_generation": "image_z_image_turbo.templates-json-0.1.50.json",
    "ltx2_image_to_video": "video_ltx2_i2v.templates-json-0.1.50.json",
}


def flattened_template(name: str) -> dict:
    ui = json.loads((TEMPLATES / TEMPLATE_OF[name]).read_text(encoding="utf-8"))
    return flatten(ui, load_bundled_object_info())


@pytest.mark.parametrize("name", sorted(TEMPLATE_OF))
def test_workflow_is_the_flattened_template(name):
    ours = load_workflow(name).graph()
    official = flattened_template(name)
    added = ADDED_NODES[name]
    assert set(ours) == set(official) | set(added), "node ids differ from the template"
    for node_id, node in added.items():
        assert ours[node_id] == node
    changed = CHANGED[name]
    for node_id, node in official.items():
        mine = ours[node_id]
        assert mine["class_type"] == node["class_type"], node_id
        assert mine["_meta"] == node["_meta"], node_id
        assert set(mine["inputs"]) == set(node["inputs"]), f"inputs of {node_id}"
        for input_name, value in node["inputs"].items():
            if (node_id, input_name) in changed:
                template_value, our_value = changed[(node_id, input_name)]
                assert value == template_value, f"the template changed at {node_id}.{input_name}"
                assert mine["inputs"][input_name] == our_value
            else:
                assert mine["inputs"][input_name] == value, f"{node_id}.{input_name}"
                assert type(mine["inputs"][input_name]) is type(value), f"{node_id}.{input_name}"


def test_flattening_follows_the_frontend_rules():
    """Spot checks of the rules themselves, from docs/PROTOCOL.md §10/§11, so the helper cannot drift."""
    z = flattened_template("z_image_turbo_generation")
    assert "35" not in z and "57" not in z  # the note and the subgraph instance are not nodes of the API graph
    assert z["57:3"]["inputs"]["seed"] == 0 and "control_after_generate" not in z["57:3"]["inputs"]
    assert z["9"]["inputs"]["images"] == ["57:8", 0]  # a link out of the subgraph goes to the inner node
    ltx = flattened_template("ltx2_image_to_video")
    assert "92:109" not in ltx and "92:110" not in ltx  # bypassed camera LoRAs are dropped ...
    assert ltx["92:47"]["inputs"]["model"] == ["92:1", 0]  # ... and wired through
    assert ltx["92:68"]["inputs"]["model"] == ["92:1", 0]
    assert ltx["92:106"]["inputs"]["image"] == ["102", 0]  # a subgraph input linked outside
    assert ltx["92:62"]["inputs"]["value"] == 121  # a subgraph input not linked outside: its widget value
    assert ltx["75"]["inputs"]["format.codec"] == "auto"  # dynamic-combo children
    assert ltx["102"]["inputs"]["resize_type.width"] == 1280
    assert ltx["98"]["inputs"] == {"image": "freckled_curly_girl.png", "upload": "image"}


def test_widget_naming_follows_object_info_order():
    info = load_bundled_object_info()
    named = widget_inputs("KSampler", [7, "randomize", 8, 1, "euler", "simple", 1], info)
    assert named == {"seed": 7, "steps": 8, "cfg": 1, "sampler_name": "euler", "scheduler": "simple", "denoise": 1}


@pytest.mark.parametrize("name", sorted(TEMPLATE_OF))
def test_workflow_validates_against_the_bundled_schema(name):
    outcome = validate_prompt(load_workflow(name).graph(), load_bundled_object_info())
    assert outcome.error is None and outcome.node_errors == {}
    assert outcome.good_outputs == list(load_workflow(name).outputs)


@pytest.mark.parametrize("name", sorted(TEMPLATE_OF))
def test_a_server_without_models_rejects_only_the_model_files(name):
    """The bar of docs/PROTOCOL.md §11: on a stock 0.33.0 without models, only model files (and LoadImage's
    file) fail."""
    outcome = validate_prompt(load_workflow(name).graph(), object_info_with_models({}), image_exists=lambda n: False)
    kinds = {(node["class_type"], e["type"]) for node in outcome.node_errors.values() for e in node["errors"]}
    assert outcome.node_errors
    for class_type, kind in kinds:
        assert kind == "value_not_in_list" or (class_type, kind) == ("LoadImage", "custom_validation_failed")
