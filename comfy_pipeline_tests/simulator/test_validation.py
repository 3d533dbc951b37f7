"""Contract: every captured POST /prompt case of the real ComfyUI 0.33.0, replayed twice: against
`validate_prompt` on the bundled schema (the models that real server lacked removed again), and over HTTP
against the simulator. Status codes, error types, messages, details and extra_info must match the capture;
only tracebacks (file paths of the other process), prompt ids and numbers may differ."""

import copy
import json

import pytest
import requests

from comfy_pipeline.comfyui.schema import (
    OFFICIAL_MODELS,
    load_bundled_object_info,
    object_info_with_models,
)
from comfy_pipeline.comfyui.validation import validate_prompt
from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import CAPTURES, load_capture

PROMPT_CASES = sorted(path.stem for path in CAPTURES.glob("post_prompt_*.json"))
# Files the captured server had in its input/output folders.
SERVER_FILES = {"input/ref_upload.png", "input/pipeline/run1/ref_sub.png", "output/ref/loaded_00001_.png"}
PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108020000009077"
    "53de0000000c4944415478da63f8cfc0000003010100c9fe92ef0000000049454e44ae426082"
)


def without_tracebacks(value):
    if isinstance(value, dict):
        return {key: without_tracebacks(item) for key, item in value.items() if key != "traceback"}
    if isinstance(value, list):
        return [without_tracebacks(item) for item in value]
    return value


def captured_server_exists(name: str) -> bool:
    path, _, annotation = name.partition(" [")
    folder = annotation.rstrip("]") or "input"
    return f"{folder}/{path}" in SERVER_FILES or (folder == "input" and path == "not_an_image.png")


def decided_by_validation(case: str) -> bool:
    """Cases without a prompt object, or about prompt_id, are decided by the HTTP handler (tested over HTTP)."""
    body = load_capture(case)["request"].get("json")
    return isinstance(body, dict) and "prompt" in body and "prompt_id" not in body


@pytest.mark.parametrize("case", [case for case in PROMPT_CASES if decided_by_validation(case)])
def test_validate_prompt_matches_the_real_server(case: str) -> None:
    capture = load_capture(case)
    body = capture["request"]["json"]
    status, expected = capture["response"]["status"], capture["response"]["body"]
    # The captured server had no model files: its model lists were empty.
    schema = object_info_with_models({})
    if status == 500:
        with pytest.raises(TypeError, match="prompt must be a JSON object"):
            validate_prompt(body["prompt"], schema)
        return
    outcome = validate_prompt(body["prompt"], schema, image_exists=captured_server_exists)
    if status == 400:
        assert outcome.accepted is False
        answer = {"error": outcome.error, "node_errors": outcome.node_errors}
        assert without_tracebacks(answer) == without_tracebacks(expected)
    else:
        assert outcome.accepted is True
        assert without_tracebacks(outcome.node_errors) == without_tracebacks(expected["node_errors"])


def test_exception_errors_carry_a_traceback() -> None:
    capture = load_capture("post_prompt_invalid_bad_link_to_missing_node")
    outcome = validate_prompt(capture["request"]["json"]["prompt"], load_bundled_object_info())
    error = outcome.node_errors["2"]["errors"][0]
    assert error["extra_info"]["exception_type"] == "KeyError"
    assert error["extra_info"]["traceback"] and all(isinstance(line, str) for line in error["extra_info"]["traceback"])


def test_bundled_schema_has_the_official_models_and_is_not_shared() -> None:
    schema = load_bundled_object_info()
    assert schema["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == OFFICIAL_MODELS["checkpoints"]
    assert schema["VAELoader"]["input"]["required"]["vae_name"][0] == ["ae.safetensors", "pixel_space"]
    upscalers = schema["LatentUpscaleModelLoader"]["input"]["required"]["model_name"][1]["options"]
    assert upscalers == OFFICIAL_MODELS["latent_upscale_models"]
    schema["KSampler"]["input"]["required"].clear()
    assert load_bundled_object_info()["KSampler"]["input"]["required"]


def test_lenient_coercion_is_applied_to_the_returned_prompt_only() -> None:
    prompt = load_capture("post_prompt_invalid_value_numeric_string_for_int")["request"]["json"]["prompt"]
    original = copy.deepcopy(prompt)
    outcome = validate_prompt(prompt, load_bundled_object_info())
    assert outcome.accepted and prompt == original
    widths = [node["inputs"]["width"] for node in outcome.prompt.values() if "width" in node["inputs"]]
    assert widths and all(isinstance(width, int) for width in widths)


def test_long_combo_lists_are_summarised_and_unknown_models_named() -> None:
    prompt = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "missing.safetensors"}},
        "3": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "seed": 1, "steps": 4, "cfg": 1.0, "sampler_name": "no-such-sampler",
            "scheduler": "simple", "positive": ["4", 0], "negative": ["4", 0], "latent_image": ["1", 0],
            "denoise": 1.0}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "x", "clip": ["2", 1]}},
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["2", 2]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "x"}},
    }
    outcome = validate_prompt(prompt, load_bundled_object_info())
    sampler_error = outcome.node_errors["3"]["errors"][0]
    assert sampler_error["details"] == "sampler_name: 'no-such-sampler' not in (list of length 44)"
    assert sampler_error["extra_info"]["input_config"] is None
    model_error = outcome.node_errors["2"]["errors"][0]
    assert model_error["details"] == "ckpt_name: 'missing.safetensors' not in ['ltx-2-19b-dev-fp8.safetensors']"


def test_dynamic_combo_children_are_checked_only_for_the_chosen_option() -> None:
    def resize(**inputs):
        return {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
            "2": {"class_type": "ResizeImageMaskNode",
                  "inputs": {"input": ["1", 0], "scale_method": "lanczos", **inputs}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
        }

    schema = load_bundled_object_info()
    ok = validate_prompt(resize(**{"resize_type": "scale dimensions", "resize_type.width": 32,
                                   "resize_type.height": 32, "resize_type.crop": "center"}), schema)
    assert ok.accepted and ok.node_errors == {}
    no_height = {"resize_type": "scale dimensions", "resize_type.width": 32, "resize_type.crop": "center"}
    missing = validate_prompt(resize(**no_height), schema)
    assert missing.node_errors["2"]["errors"] == [{
        "type": "required_input_missing", "message": "Required input is missing",
        "details": "height", "extra_info": {"input_name": "resize_type.height"},
    }]
    too_big = validate_prompt(resize(**{"resize_type": "scale by multiplier", "resize_type.multiplier": 9.0}), schema)
    assert too_big.node_errors["2"]["errors"][0]["type"] == "value_bigger_than_max"
    # SaveVideo's format and format.codec are dynamic combos: not checked at all (the real node fails at run time).
    video = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 2, "color": 0}},
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8}},
        "3": {"class_type": "SaveVideo",
              "inputs": {"video": ["2", 0], "filename_prefix": "v", "format.codec": "nonsense"}},
    }
    assert validate_prompt(video, schema).node_errors == {}


def _put_server_files(simulator: Simulator) -> None:
    for relative in SERVER_FILES:
        path = simulator.data_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(PNG_1PX)
    (simulator.input_dir / "not_an_image.png").write_bytes(b"this is not an image at all")


@pytest.fixture(scope="module")
def empty_server(tmp_path_factory: pytest.TempPathFactory):
    """Like the captured server: no model files installed."""
    with Simulator(data_dir=tmp_path_factory.mktemp("no-models"), models={}) as simulator:
        _put_server_files(simulator)
        yield simulator


@pytest.mark.parametrize("case", PROMPT_CASES)
def test_post_prompt_matches_the_real_server(case: str, empty_server: Simulator) -> None:
    capture = load_capture(case)
    request, response = capture["request"], capture["response"]
    if "json" in request:
        reply = requests.post(empty_server.url + "/prompt", json=request["json"], timeout=10)
    else:
        reply = requests.post(empty_server.url + "/prompt", data=request["raw_body"].encode(),
                              headers={"Content-Type": "application/json"}, timeout=10)
    assert reply.status_code == response["status"]
    if response["status"] == 500:
        assert reply.headers["Content-Type"].startswith("text/plain")
        assert reply.text == response["body"]
        return
    body = reply.json()
    expected = response["body"]
    if response["status"] == 200:
        assert set(body) == {"prompt_id", "number", "node_errors"}
        assert without_tracebacks(body["node_errors"]) == without_tracebacks(expected["node_errors"])
        if "prompt_id" in request["json"]:
            assert body["prompt_id"] == request["json"]["prompt_id"]
    else:
        assert without_tracebacks(body) == without_tracebacks(expected)


def test_summary_of_invalid_prompts_holds_for_the_simulator(empty_server: Simulator) -> None:
    """The capture's own summary (status, error type, node error types per case) as one table."""
    summary = json.loads((CAPTURES / "summary_invalid_prompts.json").read_text())
    for case, expected in summary.items():
        if "error_type" not in expected:
            continue
        request = load_capture(f"post_prompt_invalid_{case}")["request"]["json"]
        reply = requests.post(empty_server.url + "/prompt", json=request, timeout=10)
        body = reply.json()
        assert reply.status_code == expected["status"], case
        assert (body.get("error") or {}).get("type") == expected["error_type"], case
        node_error_types = {node: [e["type"] for e in entry["errors"]] for node, entry in body["node_errors"].items()}
        assert node_error_types == expected["node_error_types"], case


def test_numbers_count_every_prompt_post_including_rejected_ones(simulator: Simulator) -> None:
    good = load_capture("post_prompt_valid_emptyimage_saveimage")["request"]["json"]
    bad = load_capture("post_prompt_invalid_value_out_of_range_too_big")["request"]["json"]
    numbers = []
    for body in (good, bad, {"no": "prompt"}, good):
        reply = requests.post(simulator.url + "/prompt", json=body, timeout=10)
        numbers.append(reply.json().get("number"))
    assert numbers == [0, None, None, 3]
    front = requests.post(simulator.url + "/prompt", json={**good, "front": True}, timeout=10).json()
    explicit = requests.post(simulator.url + "/api/prompt", json={**good, "number": -1000}, timeout=10)
    assert front["number"] == -4
    assert '"number": -1000.0' in explicit.text
