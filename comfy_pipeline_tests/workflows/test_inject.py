"""Injection: only the mapped inputs change, every value is checked first, nothing else moves."""

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfy_pipeline.workflows.workflow import WorkflowError, check_filename_prefix, load_workflow

Z = load_workflow("z_image_turbo_generation")
LTX = load_workflow("ltx2_image_to_video")
UPSCALE = load_workflow("image_upscale")
WORKFLOWS = {"z": Z, "ltx": LTX, "upscale": UPSCALE}
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def allowed_ints(spec):
    step, offset = spec.multiple_of or 1, 0
    if spec.rule:
        step, offset = (int(x) for x in spec.rule.split("n+"))
    first = spec.minimum + (offset - spec.minimum) % step
    return st.integers(0, (spec.maximum - first) // step).map(lambda n: first + n * step)


def valid_values(workflow):
    """A strategy of complete, valid parameter values for `workflow`."""
    fields = {}
    for name, spec in workflow.params.items():
        if spec.type == "int":
            fields[name] = allowed_ints(spec)
        elif spec.type == "float":
            fields[name] = st.floats(spec.minimum, spec.maximum, allow_nan=False)
        elif spec.choices is not None:
            fields[name] = st.sampled_from(spec.choices)
        elif spec.type == "image":
            fields[name] = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_ .-]{0,40}\.png", fullmatch=True)
        else:
            fields[name] = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=200).filter(
                str.strip
            )
    return st.fixed_dictionaries(fields)


def links(graph):
    return {(n, k): v for n, node in graph.items() for k, v in node["inputs"].items() if isinstance(v, list)}


@FAST
@given(data=st.data())
@pytest.mark.parametrize("key", sorted(WORKFLOWS))
def test_structure_is_preserved_and_only_mapped_inputs_change(key, data):
    workflow = WORKFLOWS[key]
    values = data.draw(valid_values(workflow))
    original = workflow.graph()
    graph = workflow.inject(values, filename_prefix="runs/abc/out")
    assert list(graph) == list(original)
    assert [n["class_type"] for n in graph.values()] == [n["class_type"] for n in original.values()]
    assert links(graph) == links(original)
    mapped = {t: name for name, spec in workflow.params.items() for t in spec.targets}
    for node_id, node in graph.items():
        assert set(node["inputs"]) == set(original[node_id]["inputs"])
        for input_name, value in node["inputs"].items():
            if (node_id, input_name) in mapped:
                assert value == values[mapped[(node_id, input_name)]]
            elif (node_id, input_name) == workflow.filename_prefix:
                assert value == "runs/abc/out"
            else:
                assert value == original[node_id]["inputs"][input_name]
    assert workflow.graph() == original


@FAST
@given(prompt=st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=2000)
       .filter(str.strip) | st.text(st.sampled_from("ab \n\t😀é中"), min_size=1).filter(str.strip))
def test_any_unicode_prompt_round_trips_exactly(prompt):
    for workflow, node in ((Z, "58"), (LTX, "92:3")):
        values = {"prompt": prompt, "image": "in.png"} if workflow is LTX else {"prompt": prompt}
        graph = workflow.inject(values, filename_prefix="p")
        sent = json.loads(json.dumps({"prompt": graph}))["prompt"]  # what goes over the wire
        key = "value" if node == "58" else "text"
        assert sent[node]["inputs"][key] == prompt


@FAST
@given(ch=st.characters(categories=("Cc",)).filter(lambda c: c not in "\n\t"), pos=st.integers(0, 5))
def test_control_characters_are_rejected(ch, pos):
    prompt = "a calm lake"[:pos] + ch + "a calm lake"[pos:]
    with pytest.raises(WorkflowError, match=r"parameter 'prompt'.*control character U\+"):
        Z.validate_values({"prompt": prompt})


@FAST
@given(data=st.data())
@pytest.mark.parametrize("key", ["ltx", "z"])  # the workflows with int parameters
def test_out_of_range_or_off_grid_ints_are_rejected_with_the_parameter_named(key, data):
    workflow = WORKFLOWS[key]
    name = data.draw(st.sampled_from([n for n, s in workflow.params.items() if s.type == "int"]))
    spec = workflow.params[name]
    too_big = st.integers(spec.maximum + 1, spec.maximum + 10**6)
    value = data.draw(too_big | st.integers(spec.minimum - 10**6, spec.minimum - 1))
    with pytest.raises(WorkflowError) as info:
        workflow.inject({name: value, "image": "in.png"} if workflow is LTX else {name: value}, filename_prefix="p")
    message = str(info.value)
    assert f"parameter {name!r}" in message and str(value) in message and workflow.name in message
    assert f"from {spec.minimum} to {spec.maximum}" in message


@FAST
@given(frames=st.integers(9, 257))
def test_ltx_frame_count_must_be_8n_plus_1(frames):
    if (frames - 1) % 8 == 0:
        assert LTX.validate_values({"frames": frames, "image": "x.png"})["frames"] == frames
    else:
        with pytest.raises(WorkflowError, match=r"'frames'.*8n\+1.*nearest allowed value is (\d+)") as info:
            LTX.validate_values({"frames": frames, "image": "x.png"})
        nearest = int(re.search(r"nearest allowed value is (\d+)", str(info.value)).group(1))
        assert (nearest - 1) % 8 == 0 and abs(nearest - frames) <= 4


@pytest.mark.parametrize(
    "values, expected",
    [
        ({"seed": True}, "is not an integer (bool)"),
        ({"steps": "8"}, "is not an integer (str)"),
        ({"width": 1000}, "a multiple of 16"),
        ({"width": 1024.5}, "is not an integer"),
        ({"prompt": ""}, "is empty"),
        ({"prompt": " \n\t "}, "is empty"),
        ({"prompt": "x" * 10001}, "10001 characters long"),
        ({"prompt": 5}, "is not text (int)"),
        ({"sampler": "euler"}, "has no parameter(s) 'sampler'; known parameters: height, prompt, seed, steps, width"),
    ],
)
def test_bad_values_for_z_image(values, expected):
    with pytest.raises(WorkflowError) as info:
        Z.inject(values, filename_prefix="p")
    assert expected in str(info.value) and "z_image_turbo_generation" in str(info.value)


@pytest.mark.parametrize(
    "values, expected",
    [
        ({}, "parameter 'image' is required"),
        ({"image": "../secret.png"}, "not a plain file name"),
        ({"image": "/etc/passwd"}, "not a plain file name"),
        ({"image": "a.png", "fps": 0}, "below the minimum 1"),
        ({"image": "a.png", "fps": 24.5}, "is not an integer"),
        ({"image": "a.png", "width": 1280 + 32}, "nearest allowed value is"),
    ],
)
def test_bad_values_for_ltx(values, expected):
    with pytest.raises(WorkflowError, match="ltx2_image_to_video") as info:
        LTX.inject(values, filename_prefix="p")
    assert expected in str(info.value)


def test_values_are_coerced_and_defaults_filled():
    values = Z.validate_values({"width": 512.0, "seed": 2**64 - 1})
    assert values == {**Z.defaults(), "width": 512, "seed": 2**64 - 1}
    assert type(values["width"]) is int
    assert LTX.validate_values({"image": "sub/in.png", "negative_prompt": ""})["negative_prompt"] == ""


def test_fps_reaches_every_node_that_carries_the_frame_rate():
    graph = LTX.inject({"image": "in.png", "fps": 24}, filename_prefix="p")
    assert graph["92:97"]["inputs"]["fps"] == 24
    assert graph["92:22"]["inputs"]["frame_rate"] == 24
    assert graph["92:51"]["inputs"]["frame_rate"] == 24


def test_one_value_per_seed_stage():
    graph = LTX.inject({"image": "in.png", "seed": 7, "seed_stage2": 8}, filename_prefix="p")
    assert graph["92:11"]["inputs"]["noise_seed"] == 7 and graph["92:67"]["inputs"]["noise_seed"] == 8


@pytest.mark.parametrize("prefix", ["comfy_pipeline/run-1/image_00", "a", "x.y-z_1/2"])
def test_good_filename_prefixes(prefix):
    assert Z.inject({}, filename_prefix=prefix)["9"]["inputs"]["filename_prefix"] == prefix


@pytest.mark.parametrize(
    "prefix",
    ["", "../x", "a/../b", "/abs/x", "a//b", "a/", "%date:yyyy%/x", "a\\b", "ä", ".hidden", "a b", "a\n", None, 5,
     "x" * 201],
)
def test_bad_filename_prefixes(prefix):
    with pytest.raises(WorkflowError, match="filename prefix"):
        Z.inject({}, filename_prefix=prefix)
    with pytest.raises(WorkflowError):
        check_filename_prefix(prefix)


def test_line_breaks_and_tabs_are_allowed():
    assert Z.validate_values({"prompt": "line one\n\tline two"})["prompt"] == "line one\n\tline two"


@pytest.mark.parametrize(
    "values, expected",
    [
        ({}, "parameter 'image' is required"),
        ({"image": "a.png", "scale_by": 4.5}, "above the maximum 4.0"),
        ({"image": "a.png", "scale_by": 0.1}, "below the minimum 0.25"),
        ({"image": "a.png", "scale_by": "2"}, "is not a number (str)"),
        ({"image": "a.png", "upscale_method": "bislerp"}, "one of 'nearest-exact', 'bilinear', 'area', 'bicubic', "
                                                          "'lanczos'"),
    ],
)
def test_bad_values_for_the_upscaler(values, expected):
    with pytest.raises(WorkflowError, match="image_upscale") as info:
        UPSCALE.inject(values, filename_prefix="p")
    assert expected in str(info.value)


def test_the_upscaler_takes_a_picked_method_and_any_scale_in_range():
    graph = UPSCALE.inject({"image": "in.png", "scale_by": 1.5, "upscale_method": "area"}, filename_prefix="p")
    assert graph["2"]["inputs"] == {"upscale_method": "area", "scale_by": 1.5, "image": ["1", 0]}
    assert graph["1"]["inputs"]["image"] == "in.png"
