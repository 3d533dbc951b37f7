"""The official workflows on every ComfyUI from 0.8.0 to 0.33.x: version-dependent inputs follow the server's
/object_info, a mismatch that remains is named as one, and both unknown-node answers are understood."""

import copy

import pytest

from comfy_pipeline.comfyui.errors import WorkflowValidationError
from comfy_pipeline.comfyui.rejections import rejection_from_response
from comfy_pipeline.comfyui.schema import load_bundled_object_info
from comfy_pipeline.workflows.compat import adapt_to_server
from comfy_pipeline.workflows.preflight import preflight
from comfy_pipeline.workflows.workflow import load_workflow

VIDEO = "ltx2_image_to_video"


def object_info_of_0_8() -> dict:
    """The bundled 0.33.0 /object_info with SaveVideo as ComfyUI 0.8.0 declares it (comfy_extras/nodes_video.py
    at 0.8.0): flat `format` and `codec` combos, no dynamic combo."""
    info = copy.deepcopy(load_bundled_object_info())
    info["SaveVideo"]["input"]["required"] = {
        "video": ["VIDEO", {}],
        "filename_prefix": ["STRING", {"default": "video/ComfyUI"}],
        "format": [["auto", "mp4"], {"default": "auto"}],
        "codec": [["auto", "h264"], {"default": "auto"}],
    }
    return info


def video_graph() -> dict:
    return load_workflow(VIDEO).inject({"image": "start.png"}, filename_prefix="comfy_pipeline/t/video_00")


def test_nested_codec_becomes_flat_on_a_0_8_server():
    graph, changes = adapt_to_server(video_graph(), object_info_of_0_8())
    save = graph["75"]["inputs"]
    assert save["codec"] == "auto" and "format.codec" not in save and save["format"] == "auto"
    assert changes == ["node 75 (SaveVideo): format.codec -> codec"]


def test_a_flat_codec_stays_flat_on_a_current_server():
    # 0.33.0 declares `codec` at the top level too (hidden, optional) and accepts it as it is.
    old_style = video_graph()
    old_style["75"]["inputs"]["codec"] = old_style["75"]["inputs"].pop("format.codec")
    graph, changes = adapt_to_server(old_style, load_bundled_object_info())
    assert graph == old_style and changes == []


def test_a_current_server_gets_the_graph_unchanged():
    graph, changes = adapt_to_server(video_graph(), load_bundled_object_info())
    assert graph == video_graph() and changes == []


def test_the_official_video_workflow_passes_preflight_on_0_8():
    report = preflight(video_graph(), object_info_of_0_8(), server_version="0.8.0")
    assert report.problems == []  # (the bundled schema lists the official model files as present)


def test_a_remaining_difference_is_named_a_version_mismatch():
    info = object_info_of_0_8()
    info["SaveVideo"]["input"]["required"]["codec"] = [["h265"], {}]  # no value the workflow can use
    report = preflight(video_graph(), info, server_version="0.8.0")
    (problem,) = [p for p in report.problems if p.class_type == "SaveVideo"]
    assert problem.kind == "version_mismatch"
    assert "ComfyUI version mismatch" in problem.hint and "0.33.0" in problem.hint
    assert "format: a combo on the server, a dynamic combo in 0.33.0" in problem.message


@pytest.mark.parametrize("body", [
    # What real servers answered here (HTTP 400), with the class and node id changed. ComfyUI 0.33.0:
    {"error": {"type": "missing_node_type",
               "message": "Node 'UnetLoaderGGUF' not found. The custom node may not be installed.",
               "details": "Node ID '#57:28'",
               "extra_info": {"node_id": "57:28", "class_type": "UnetLoaderGGUF", "node_title": "UnetLoaderGGUF"}},
     "node_errors": {}},
    # ComfyUI 0.8.0:
    {"error": {"type": "invalid_prompt", "message": "Cannot execute because node UnetLoaderGGUF does not exist.",
               "details": "Node ID '#57:28'", "extra_info": {}}, "node_errors": {}},
], ids=["0.33.0", "0.8.0"])
def test_both_unknown_node_answers_name_the_node_and_its_class(body):
    error = rejection_from_response(body, workflow="z_image_turbo_generation")
    assert isinstance(error, WorkflowValidationError)
    (first, *_) = error.errors
    assert (first.node_id, first.class_type, first.kind) == ("57:28", "UnetLoaderGGUF", "missing_node_type")
    assert "is not installed" in str(error)
