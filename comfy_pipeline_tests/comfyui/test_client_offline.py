"""Client pieces that need no server: rejection messages and output listing from real ComfyUI 0.33.0 answers
(copied from the captures into fixtures/), file-name sanitising and the streamed atomic writer."""

import json

import pytest

from comfy_pipeline.comfyui import (
    DownloadError,
    OutputFile,
    WorkflowValidationError,
    node_errors_to_list,
    outputs,
    rejection_from_response,
    safe_filename,
)
from comfy_pipeline.comfyui.files import save_stream
from comfy_pipeline_tests.support.helpers import FIXTURES

REJECTIONS = json.loads((FIXTURES / "client_prompt_rejections.json").read_text())["responses"]
HISTORY = json.loads((FIXTURES / "client_history_entries.json").read_text())["entries"]


def reject(case: str) -> WorkflowValidationError:
    return rejection_from_response(REJECTIONS[case]["body"], workflow="t2i")


def test_missing_checkpoint_names_file_and_folder():
    err = reject("invalid_checkpoint_not_found")
    where = [(e.node_id, e.class_type, e.input_name) for e in err.errors]
    assert where == [("4", "CheckpointLoaderSimple", "ckpt_name")]
    assert "model file 'sd_xl_base_1.0.safetensors' is not in folder 'checkpoints' on the server" in str(err)
    assert "'t2i'" in str(err)


def test_zimage_models_map_to_their_folders():
    err = reject("invalid_unet_clip_vae_not_found_zimage_like")
    text = str(err)
    assert "model file 'z_image_turbo_bf16.safetensors' is not in folder 'diffusion_models'" in text
    assert "model file 'qwen_3_4b.safetensors' is not in folder 'text_encoders'" in text
    assert "model file 'ae.safetensors' is not in folder 'vae'" in text
    assert "3 missing model file(s)" in err.summary


def test_loader_specific_folders():
    body = {"error": {"type": "prompt_outputs_failed_validation"}, "node_errors": {"92:84": {
        "class_type": "LatentUpscaleModelLoader", "dependent_outputs": ["75"], "errors": [{
            "type": "value_not_in_list", "message": "Value not in list",
            "details": "model_name: 'ltx-2-spatial-upscaler-x2-1.0.safetensors' not in []",
            "extra_info": {"input_name": "model_name", "input_config": [[], {}],
                           "received_value": "ltx-2-spatial-upscaler-x2-1.0.safetensors"}}]}}}
    (e,) = node_errors_to_list(body["node_errors"])
    assert e.message == (
        "model file 'ltx-2-spatial-upscaler-x2-1.0.safetensors' is not in folder 'latent_upscale_models' on the server"
    )


def test_unknown_node_type_is_not_installed():
    err = reject("invalid_unknown_class_type")
    assert err.summary == "node type NoSuchNodeXYZ is not installed"
    assert err.errors[0].node_id == "1"
    assert "node type NoSuchNodeXYZ is not installed on the server" in str(err)


def test_every_error_of_a_multi_error_answer_is_listed():
    err = reject("invalid_multiple_errors_two_outputs")
    assert {(e.node_id, e.kind) for e in err.errors} == {
        ("1", "value_smaller_than_min"), ("9", "required_input_missing"), ("4", "value_not_in_list")}
    text = str(err)
    assert "node 1 (EmptyImage) input 'width': Value 0 smaller than min of 1" in text
    assert "node 9 (EmptyLatentImage) input 'batch_size': required input 'batch_size' is missing" in text
    assert "is not in folder 'checkpoints'" in text


@pytest.mark.parametrize(
    "case, expected",
    [
        ("invalid_link_type_mismatch", "gets LATENT from node 3, but needs IMAGE"),
        ("invalid_combo_value_not_in_list", "'superres' is not an allowed value; choose one of ['nearest-exact'"),
        ("invalid_load_image_file_missing", "does_not_exist.png); upload it first"),
        ("invalid_dependency_cycle", "dependency cycle: 1 (ImageInvert) -> 3 (ImageInvert)"),
        ("invalid_value_wrong_type_string_for_int", "Failed to convert an input value to a INT value: got 'abc'"),
        ("invalid_bad_link_to_missing_node", "(KeyError: '99'); check the links of this node"),
        ("invalid_value_out_of_range_too_big", "bigger than max of 16384"),
        ("invalid_missing_required_input", "is missing"),
        ("invalid_no_output_node", "has no output node"),
        ("no_prompt_key", "carried no workflow"),
        ("invalid_missing_class_type_key", "node 1 has no class_type"),
    ],
)
def test_each_rejection_kind_has_a_specific_message(case, expected):
    assert expected in str(reject(case))


def test_outputs_video_under_images_with_animated():
    (f,) = outputs(HISTORY["video_savevideo_mp4_h264"])  # the {id: entry} answer as the server gives it
    assert f == OutputFile("2", "ref_mp4_h264_00001_.mp4", "video", "output", "video")
    (webp,) = outputs(HISTORY["video_save_animated_webp"])
    assert webp.kind == "video" and webp.filename.endswith(".webp")


def test_outputs_per_item_type_and_custom_node_keys():
    (preview,) = outputs(HISTORY["success_previewimage"])
    assert (preview.type, preview.kind, preview.subfolder) == ("temp", "image", "")
    entry = {"outputs": {
        "7": {"gifs": [
            {"filename": "AnimateDiff_00001.mp4", "subfolder": "", "type": "output", "format": "video/h264-mp4"},
        ]},
        "8": {"videos": [{"filename": "clip.webm", "subfolder": "v", "type": "output"}]},
        "9": {"audio": [{"filename": "a.flac", "subfolder": "", "type": "output"}], "text": ["not a file"]},
    }}
    kinds = {(f.node_id, f.filename, f.kind) for f in outputs(entry)}
    assert kinds == {("7", "AnimateDiff_00001.mp4", "video"), ("8", "clip.webm", "video"), ("9", "a.flac", "other")}
    assert outputs(HISTORY["runtime_error"]) == []


@pytest.mark.parametrize(
    "given, safe",
    [("../../x.png", "x.png"), ("/etc/passwd", "passwd"), ("..\\..\\evil.exe", "evil.exe"),
     (".hidden.png", "hidden.png"), ("a\x00b\nc.png", "abc.png"), ("ok_00001_.png", "ok_00001_.png")],
)
def test_safe_filename(given, safe):
    assert safe_filename(given) == safe


@pytest.mark.parametrize("bad", ["..", "../", "", "/", "...", "\x00"])
def test_safe_filename_refuses_names_that_are_nothing(bad):
    with pytest.raises(DownloadError):
        safe_filename(bad)


def test_save_stream_never_overwrites_and_leaves_no_temp(tmp_path):
    first = save_stream([b"one"], tmp_path, "a.png", expected_bytes=3, max_bytes=10, source="t")
    second = save_stream([b"two"], tmp_path, "a.png", expected_bytes=3, max_bytes=10, source="t")
    assert (first.name, second.name) == ("a.png", "a_1.png")
    assert first.read_bytes() == b"one" and second.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a_1.png"]


@pytest.mark.parametrize(
    "chunks, expected, message",
    [([b"x" * 11], None, "grew past the limit"), ([b"x" * 4], 11, "more than the limit"), ([b"xy"], 5, "short read")],
)
def test_save_stream_failures_delete_the_partial_file(tmp_path, chunks, expected, message):
    with pytest.raises(DownloadError, match=message):
        save_stream(chunks, tmp_path, "a.bin", expected_bytes=expected, max_bytes=10, source="t")
    assert list(tmp_path.iterdir()) == []
