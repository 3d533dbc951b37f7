"""Pre-flight: the problems a server would reject a graph for, each with a hint, before anything is queued."""

import json

import pytest

from comfy_pipeline.comfyui.schema import (
    OFFICIAL_MODELS,
    load_bundled_object_info,
    object_info_with_models,
)
from comfy_pipeline.workflows.preflight import KINDS, preflight
from comfy_pipeline.workflows.workflow import load_workflow

Z = "z_image_turbo_generation"
LTX = "ltx2_image_to_video"


def graph(name: str) -> dict:
    return load_workflow(name).graph()


def only(report, kind):
    problems = [p for p in report.problems if p.kind == kind]
    assert problems, report.format()
    return problems


@pytest.mark.parametrize("name", [Z, LTX])
def test_both_workflows_pass_against_the_bundled_schema(name):
    report = preflight(graph(name), load_bundled_object_info(), workflow=name)
    assert report.ok, report.format()
    assert report.to_dict() == {"workflow": name, "source": "bundled schema", "ok": True, "incomplete": False,
                                "problems": []}
    assert "OK" in report.format()


def test_missing_model_names_folder_file_download_and_what_the_server_has():
    models = {**OFFICIAL_MODELS, "diffusion_models": ["flux1-dev.safetensors", "wan2.2.safetensors"]}
    report = preflight(graph(Z), object_info_with_models(models), workflow=Z, source="http://gpu:8188")
    [problem] = report.problems
    assert (problem.kind, problem.node_id, problem.class_type, problem.input_name) == (
        "missing_model", "57:28", "UNETLoader", "unet_name")
    assert "z_image_turbo_bf16.safetensors" in problem.message and "diffusion_models" in problem.message
    assert "ComfyUI/models/diffusion_models/" in problem.hint
    assert "https://huggingface.co/Comfy-Org/z_image_turbo/" in problem.hint
    assert "flux1-dev.safetensors, wan2.2.safetensors" in problem.hint
    text = report.format()
    assert "would NOT run" in text and "http://gpu:8188" in text and "57:28" in text


def test_a_server_without_any_models_lists_every_missing_model_file():
    report = preflight(graph(LTX), object_info_with_models({}), workflow=LTX)
    missing = {(p.node_id, p.input_name) for p in only(report, "missing_model")}
    assert missing == {("92:1", "ckpt_name"), ("92:48", "ckpt_name"), ("92:60", "ckpt_name"),
                       ("92:60", "text_encoder"), ("92:68", "lora_name"), ("92:76", "model_name")}
    assert all("no usable file" in p.hint for p in report.problems)
    assert {p.kind for p in report.problems} == {"missing_model"}


def test_every_unknown_node_class_is_listed_with_the_pack_that_provides_it():
    g = graph(Z)
    g["57:11"]["class_type"] = "VHS_VideoCombine"
    g["57:33"]["class_type"] = "SomethingNobodyKnows"
    report = preflight(g, load_bundled_object_info(), workflow=Z)
    problems = only(report, "missing_node")
    assert sorted((p.node_id, p.class_type) for p in problems) == [
        ("57:11", "VHS_VideoCombine"), ("57:33", "SomethingNobodyKnows")]
    assert report.incomplete
    hints = {p.class_type: p.hint for p in problems}
    assert "ComfyUI-VideoHelperSuite" in hints["VHS_VideoCombine"]
    assert "ComfyUI-Manager" in hints["SomethingNobodyKnows"]
    assert "checked once every node type is installed" in report.format()


def test_unknown_node_and_broken_link_problems_carry_a_class_type_only_when_known():
    g = graph(Z)
    g["57:11"]["class_type"] = "VHS_VideoCombine"
    g["57:3"]["inputs"]["model"] = ["57:11", 3]  # an unknown class: its outputs are unknown, not broken
    assert [p.kind for p in preflight(g, load_bundled_object_info()).problems] == ["missing_node"]


def test_a_core_node_missing_on_an_old_server_means_update_comfyui():
    info = load_bundled_object_info()
    del info["CreateVideo"]
    [problem] = preflight(graph(LTX), info).problems
    assert problem.kind == "missing_node" and problem.node_id == "92:97" and "update ComfyUI" in problem.hint


def test_invalid_values():
    g = graph(Z)
    g["57:3"]["inputs"]["steps"] = 0
    g["57:3"]["inputs"]["sampler_name"] = "warp_drive"
    report = preflight(g, load_bundled_object_info())
    problems = {p.input_name: p for p in only(report, "invalid_value")}
    assert set(problems) == {"steps", "sampler_name"}
    assert "warp_drive" in problems["sampler_name"].message


def test_every_dangling_link_is_listed():
    """The server stops a branch at its first broken link; pre-flight lists them all."""
    g = graph(Z)
    g["57:8"]["inputs"]["vae"] = ["999", 0]  # a node that is not there
    g["57:11"]["inputs"]["model"] = ["57:28", 5]  # an output that is not there
    g["57:3"]["inputs"]["positive"] = [27, 0]  # an int id: the server fails with a KeyError
    report = preflight(g, load_bundled_object_info())
    problems = {(p.node_id, p.input_name): p for p in only(report, "broken_link")}
    assert set(problems) == {("57:8", "vae"), ("57:11", "model"), ("57:3", "positive")}
    assert "not in the workflow" in problems[("57:8", "vae")].message
    assert "has 1 output(s)" in problems[("57:11", "model")].message
    assert "must be strings" in problems[("57:3", "positive")].message
    assert all("re-export" in p.hint for p in report.problems) and report.incomplete


def test_type_mismatch_is_a_broken_link():
    g = graph(Z)
    g["57:33"]["inputs"]["conditioning"] = ["57:13", 0]  # LATENT into CONDITIONING
    [problem] = preflight(g, load_bundled_object_info()).problems
    assert (problem.kind, problem.node_id, problem.input_name) == ("broken_link", "57:33", "conditioning")
    assert "LATENT" in problem.message


def test_missing_input():
    g = graph(Z)
    del g["57:27"]["inputs"]["clip"]
    [problem] = only(preflight(g, load_bundled_object_info()), "missing_input")
    assert (problem.node_id, problem.input_name) == ("57:27", "clip")


def test_load_image_file_is_checked_only_when_asked():
    g = load_workflow(LTX).inject({"image": "not_uploaded.png"}, filename_prefix="x")
    assert preflight(g, load_bundled_object_info()).ok
    report = preflight(g, load_bundled_object_info(), image_exists=lambda name: False)
    [problem] = report.problems
    assert problem.kind == "invalid_value" and problem.node_id == "98" and "Upload" in problem.hint


def test_a_graph_without_outputs_or_class_types():
    g = graph(Z)
    del g["9"]
    [problem] = preflight(g, load_bundled_object_info()).problems
    assert problem.kind == "other" and "output" in problem.hint
    [problem] = preflight({"1": {"inputs": {}}}, load_bundled_object_info()).problems
    assert problem.kind == "other" and "class_type" in problem.message
    assert not preflight({}, load_bundled_object_info()).ok


def test_report_is_json_ready():
    report = preflight(graph(LTX), object_info_with_models({}), workflow=LTX, source="x")
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and data["workflow"] == LTX
    assert set(data["problems"][0]) == {"kind", "node_id", "class_type", "input_name", "message", "hint"}
    assert {p["kind"] for p in data["problems"]} <= set(KINDS)
