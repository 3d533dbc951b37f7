"""Loading workflows and their parameter maps: every bad file and bad map gives an error saying what to fix."""

import json
import os
import shutil
from pathlib import Path

import pytest

from comfy_pipeline.workflows.workflow import (
    ENV_DIR,
    MAX_FILE_BYTES,
    OutputSpec,
    WorkflowError,
    list_workflows,
    load_workflow,
    workflows_dir,
)
from comfy_pipeline_tests.support.helpers import REPO_WORKFLOWS, TEMPLATES

Z = "z_image_turbo_generation"
LTX = "ltx2_image_to_video"


def edit_map(folder: Path, name: str, change) -> None:
    path = folder / f"{name}.params.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def load_error(name, folder: Path) -> str:
    with pytest.raises(WorkflowError) as info:
        load_workflow(name, directory=folder)
    return str(info.value)


def test_both_workflows_load_with_their_maps():
    assert {Z, LTX} <= set(list_workflows())
    z = load_workflow(Z)
    assert z.kind == "text-to-image" and dict(z.outputs)["9"].kind == "image"
    assert z.filename_prefix == ("9", "filename_prefix")
    assert set(z.params) == {"prompt", "seed", "steps", "width", "height"}
    assert z.params["width"].multiple_of == 16 and z.defaults()["height"] == 784
    ltx = load_workflow(LTX)
    assert ltx.kind == "image-to-video" and ltx.outputs["75"].kind == "video"
    assert ltx.params["frames"].rule == "8n+1" and ltx.params["image"].required
    assert ltx.params["fps"].targets == (("92:97", "fps"), ("92:22", "frame_rate"), ("92:51", "frame_rate"))
    assert len(z.sha256) == 64 and z.sha256 != ltx.sha256


def test_the_model_free_upscaler_loads_with_its_map():
    upscale = load_workflow("image_upscale")
    assert upscale.kind == "image-to-image" and dict(upscale.outputs) == {"9": OutputSpec("9", "image")}
    assert upscale.filename_prefix == ("9", "filename_prefix")
    assert upscale.defaults() == {"image": "example.png", "scale_by": 2.0, "upscale_method": "lanczos"}
    assert upscale.params["image"].type == "image" and upscale.params["image"].required
    assert [s.type for s in upscale.params.values()].count("image") == 1  # image-to-image: one uploaded input
    # A string filling a combo input takes the node's options (ImageScaleBy's upscale_method) and nothing else.
    assert upscale.params["upscale_method"].choices == ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
    assert upscale.params["scale_by"].choices is None and upscale.params["image"].choices is None


def test_a_string_parameter_on_a_combo_must_default_to_one_of_its_options(folder):
    def bislerp(m):
        m["parameters"]["upscale_method"]["default"] = "bislerp"
    edit_map(folder, "image_upscale", bislerp)
    graph = json.loads((folder / "image_upscale.json").read_text())
    graph["2"]["inputs"]["upscale_method"] = "bislerp"
    (folder / "image_upscale.json").write_text(json.dumps(graph))
    message = load_error("image_upscale", folder)
    assert "default of parameter 'upscale_method' is not allowed" in message and "'lanczos'" in message


def test_a_free_text_string_has_no_choices_and_a_model_combo_is_left_to_preflight(folder):
    def add(m):
        m["parameters"]["unet"] = {"type": "string", "targets": [{"node": "57:28", "input": "unet_name"}],
                                   "default": "z_image_turbo_bf16.safetensors"}
        m["parameters"]["sampler"] = {"type": "string", "targets": [{"node": "57:3", "input": "sampler_name"}],
                                      "default": "res_multistep"}
    edit_map(folder, Z, add)
    z = load_workflow(Z, directory=folder)
    assert z.params["prompt"].choices is None
    # Which model files a server has is its business (pre-flight asks it): the bundled list binds nothing.
    assert z.validate_values({"unet": "my_own_finetune.safetensors"})["unet"] == "my_own_finetune.safetensors"
    assert "euler" in z.params["sampler"].choices  # a fixed combo binds
    with pytest.raises(WorkflowError, match="'sampler' = 'eulr' is not one of the node's options"):
        z.validate_values({"sampler": "eulr"})


def test_ranges_are_narrowed_by_the_node_schema(folder):
    # The map allows any seed up to 2**70; RandomNoise's schema stops at 2**64 - 1.
    edit_map(folder, LTX, lambda m: m["parameters"]["seed"].update(maximum=2**70))
    assert load_workflow(LTX, directory=folder).params["seed"].maximum == 2**64 - 1


def test_names_paths_and_the_env_variable(folder, monkeypatch):
    assert load_workflow(Z, directory=folder).path == (folder / f"{Z}.json").resolve()
    assert load_workflow(f"{Z}.json", directory=folder).name == Z
    assert load_workflow(folder / f"{Z}.json", directory=folder).name == Z
    monkeypatch.chdir(folder.parent)
    assert load_workflow(f"workflows/{Z}.json", directory=folder).name == Z  # a path from the current directory
    monkeypatch.setenv(ENV_DIR, str(folder))
    assert workflows_dir() == folder
    (folder / "extra.json").write_text((folder / f"{Z}.json").read_text())
    assert list_workflows() == ["extra", "image_upscale", LTX, "smoke_image", "smoke_video", Z]
    assert load_workflow(LTX).path.parent == folder.resolve()


def test_unknown_name_lists_what_is_there(folder):
    message = load_error("nope", folder)
    assert "not found" in message and Z in message and LTX in message


def test_a_parameter_map_is_not_a_workflow(folder):
    assert "parameter map" in load_error(f"{Z}.params.json", folder)


@pytest.mark.parametrize("name", ["../x", "../workflows/" + Z, "sub/../" + Z, "..", "../../etc/passwd"])
def test_traversal_names_are_rejected(folder, name):
    assert "'..'" in load_error(name, folder)


def test_absolute_path_outside_the_folder_is_rejected(folder, tmp_path):
    outside = tmp_path / "outside.json"
    shutil.copy(folder / f"{Z}.json", outside)
    shutil.copy(folder / f"{Z}.params.json", tmp_path / "outside.params.json")
    assert "outside the workflows folder" in load_error(outside, folder)
    assert "outside the workflows folder" in load_error(tmp_path / "missing.json", folder)


def test_symlink_escape_is_rejected(folder, tmp_path):
    outside = tmp_path / "secret.json"
    outside.write_text(json.dumps({"1": {"class_type": "SaveImage", "inputs": {}}}))
    (folder / "evil.json").symlink_to(outside)
    assert "outside the workflows folder" in load_error("evil", folder)


def test_symlinked_map_escape_is_rejected(folder, tmp_path):
    outside = tmp_path / "map.json"
    shutil.move(folder / f"{Z}.params.json", outside)
    (folder / f"{Z}.params.json").symlink_to(outside)
    assert "outside the workflows folder" in load_error(Z, folder)


def test_oversize_file_is_rejected(folder):
    with open(folder / "huge.json", "wb") as f:
        f.write(b"{" + b" " * MAX_FILE_BYTES + b"}")
    assert "larger than" in load_error("huge", folder)


def test_malformed_json_reports_line_and_column(folder):
    (folder / "broken.json").write_text('{\n  "1": {"class_type": "SaveImage",\n    "inputs": {,}\n}\n')
    message = load_error("broken", folder)
    assert "not valid JSON" in message and "line 3, column 16" in message


def test_not_utf8_is_rejected(folder):
    (folder / "latin1.json").write_bytes('{"1": "caf\xe9"}'.encode("latin-1"))
    assert "not UTF-8" in load_error("latin1", folder)


def test_ui_format_is_rejected_with_export_advice(folder):
    shutil.copy(TEMPLATES / "image_z_image_turbo.templates-json-0.1.50.json", folder / "ui.json")
    message = load_error("ui", folder)
    assert "UI format" in message and "Export (API)" in message


@pytest.mark.parametrize(
    "graph, expected",
    [
        ({"prompt": {"1": {"class_type": "SaveImage", "inputs": {}}}}, "wrapped"),
        ([1, 2], "JSON object"),
        ({}, "JSON object"),
        ({"1": {"inputs": {}}}, "node '1' needs a 'class_type'"),
        ({"1": {"class_type": "SaveImage", "inputs": []}}, "node '1' needs"),
    ],
)
def test_graphs_that_are_not_api_format(folder, graph, expected):
    (folder / "bad.json").write_text(json.dumps(graph))
    assert expected in load_error("bad", folder)


def test_missing_map_is_a_clear_error(folder):
    (folder / f"{Z}.params.json").unlink()
    message = load_error(Z, folder)
    assert "no parameter map" in message and f"{Z}.params.json" in message


def test_map_naming_a_missing_node(folder):
    edit_map(folder, Z, lambda m: m["parameters"]["seed"]["targets"].__setitem__(0, {"node": "99", "input": "seed"}))
    message = load_error(Z, folder)
    assert "'seed'" in message and "node '99'" in message and "not in the workflow" in message


def test_map_naming_a_missing_input(folder):
    edit_map(folder, LTX, lambda m: m["parameters"]["fps"]["targets"].append({"node": "92:97", "input": "framerate"}))
    message = load_error(LTX, folder)
    assert "'fps'" in message and "'framerate'" in message and "92:97" in message and "CreateVideo" in message


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda p: p.update(targets=[{"node": "57:27", "input": "text"}], type="string"), "is a link"),
        (lambda p: p.update(default=5), "make the map and the workflow agree"),
        (lambda p: p.update(maximun=5), "unknown key(s) ['maximun']"),
        (lambda p: p.update(type="integer"), "use one of"),
        (lambda p: p.update(rule="8x+1"), "'An+B'"),
        (lambda p: p.update(minimum=10), "default of parameter 'seed' is not allowed"),
        (lambda p: p.update(type="string"), "but node 57:3 (KSampler) input 'seed' is INT"),
        (lambda p: p.update(targets=[]), "has no targets"),
        (lambda p: p.update(multiple_of=0), "positive integer"),
        (lambda p: p.update(maximum="big"), "must be a number"),
    ],
)
def test_bad_parameter_specs(folder, change, expected):
    edit_map(folder, Z, lambda m: change(m["parameters"]["seed"]))
    assert expected in load_error(Z, folder)


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda m: m.update(outputs={"99": {"kind": "image"}}), "output node '99' is not in the workflow"),
        (lambda m: m.update(outputs={"9": {"kind": "gif"}}), "kind 'gif'"),
        (lambda m: m.update(outputs={}), "needs an 'outputs' object"),
        (lambda m: m.update(filename_prefix={"node": "9", "input": "prefix"}), "input 'prefix' of node 9"),
        (lambda m: m.pop("parameters"), "needs a 'parameters' object"),
    ],
)
def test_bad_map_structure(folder, change, expected):
    edit_map(folder, Z, change)
    assert expected in load_error(Z, folder)


def test_graph_is_a_fresh_copy_and_the_loaded_graph_never_changes():
    workflow = load_workflow(Z)
    first = workflow.graph()
    first["57:3"]["inputs"]["seed"] = 99
    first.pop("9")
    assert workflow.graph()["57:3"]["inputs"]["seed"] == 0 and "9" in workflow.graph()
    workflow.inject({"seed": 5}, filename_prefix="x")
    assert workflow.graph()["57:3"]["inputs"]["seed"] == 0


def test_missing_folder_is_a_clear_error(tmp_path):
    assert "does not exist" in load_error(Z, tmp_path / "nowhere")


def test_workflows_dir_defaults_to_the_repository(monkeypatch):
    monkeypatch.delenv(ENV_DIR, raising=False)
    assert workflows_dir() == REPO_WORKFLOWS
    assert os.path.isfile(workflows_dir() / f"{Z}.params.json")
