"""A /history answer of the wrong shape is a clear ProtocolError naming the endpoint and the place that is wrong,
in the client and in a Dagster run, never an AttributeError or TypeError deep inside the client."""

import json

import pytest

from comfy_pipeline.comfyui import ComfyUIClient
from comfy_pipeline.comfyui.answers import ProtocolError
from comfy_pipeline.definitions import defs
from comfy_pipeline_tests.support.helpers import failure_text
from comfy_pipeline_tests.support.hostile_server import HostileServer, forward_to

PROMPT_ID = "0b7c9d2e-1111-4a4a-8888-000000000003"
FINE = {"status_str": "success", "completed": True, "messages": []}
IMAGE = {"filename": "x_00001_.png", "subfolder": "", "type": "output"}


def json_answer(value) -> tuple[int, dict, bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(value).encode()


def entry(**fields) -> dict:
    return {PROMPT_ID: {"prompt": [], "outputs": {"9": {"images": [IMAGE]}}, "status": FINE, **fields}}


@pytest.mark.parametrize("answer, where", [
    ([entry()], "the answer: Input should be a valid dictionary"),
    ({PROMPT_ID: ["not", "an", "entry"]}, f"{PROMPT_ID}: Input should be a valid dictionary"),
    (entry(outputs=[IMAGE]), f"{PROMPT_ID}.outputs: Input should be a valid dictionary"),
    (entry(outputs={"9": "x_00001_.png"}), f"{PROMPT_ID}.outputs.9: Input should be a valid dictionary"),
    (entry(outputs={"9": {"images": "x_00001_.png"}}), f"{PROMPT_ID}.outputs.9.images: Input should be a valid list"),
    (entry(outputs={"9": {"images": ["x_00001_.png"]}}), f"{PROMPT_ID}.outputs.9.images.0: Input should be"),
    (entry(outputs={"9": {"images": [{**IMAGE, "filename": 7}]}}), "outputs.9.images.0.filename: Input should be"),
    (entry(outputs={"9": {"images": [{**IMAGE, "subfolder": {"a": 1}}]}}), "outputs.9.images.0.subfolder"),
    (entry(outputs={"9": {"clips": [{**IMAGE, "type": ["output"]}]}}), "outputs.9: Value error, clips.0.type"),
    ({PROMPT_ID: {"prompt": [], "outputs": {}}}, f"{PROMPT_ID}.status: Field required"),
    (entry(status="success"), f"{PROMPT_ID}.status: Input should be a valid dictionary"),
    (entry(status=None), f"{PROMPT_ID}.status: Input should be a valid dictionary"),
    (entry(status={**FINE, "messages": "done"}), f"{PROMPT_ID}.status.messages: Input should be a valid list"),
    (entry(status={**FINE, "messages": [["execution_start"]]}), f"{PROMPT_ID}.status.messages.0.1: Field required"),
    (entry(status={**FINE, "messages": [["execution_error", "boom"]]}), "status.messages.0.1: Input should be"),
    (entry(status={**FINE, "messages": [["execution_cached", {"nodes": 5}]]}), "messages.0.1.nodes: Input should"),
    (entry(status={"status_str": "error", "messages": [["execution_error", {"traceback": 5}]]}),
     "messages.0.1.traceback: Input should be a valid list"),
    (entry(prompt="x"), f"{PROMPT_ID}.prompt: Input should be a valid list"),
])
def test_a_history_entry_of_the_wrong_shape_is_a_protocol_error_naming_the_endpoint(answer, where):
    answers = {f"/history/{PROMPT_ID}": json_answer(answer), "/queue": json_answer({"queue_running": [],
                                                                                    "queue_pending": []})}
    with HostileServer(answers) as server, ComfyUIClient(server.url, read_timeout=5) as client:
        with pytest.raises(ProtocolError) as error:
            client.wait(PROMPT_ID, timeout=20)
    message = str(error.value)
    assert f"ComfyUI at {server.url} answered /history with JSON of the wrong shape" in message
    assert where in message
    assert not [path for _, path, _ in server.requests if path.startswith("/view")]  # nothing was downloaded


def test_other_lists_and_a_missing_subfolder_are_still_accepted():
    """What real servers and custom nodes send: text lists, `animated`, file items without subfolder/type."""
    outputs = {"9": {"images": [{"filename": "x_00001_.png"}], "animated": [True], "text": ["a fox"]}}
    answers = {f"/history/{PROMPT_ID}": json_answer(entry(outputs=outputs))}
    with HostileServer(answers) as server, ComfyUIClient(server.url) as client:
        result = client.wait(PROMPT_ID, timeout=20)
    assert [(f.filename, f.subfolder, f.type, f.kind) for f in result.outputs] == [("x_00001_.png", "", "output",
                                                                                    "video")]


def test_a_run_whose_history_answers_are_mangled_fails_naming_the_endpoint(simulator, instance, tmp_path):
    def images_as_a_name(item: dict) -> dict:
        return {**item, "outputs": {node: {**output, "images": "x_00001_.png"} for node, output in
                                    item["outputs"].items()}}

    with HostileServer(fallback=forward_to(simulator.url, images_as_a_name)) as proxy:
        config = {"resources": {"comfy": {"config": {"url": proxy.url, "output_dir": str(tmp_path / "out")}}}}
        result = defs.resolve_job_def("image_generation_job").execute_in_process(
            run_config=config, instance=instance, raise_on_error=False)
    assert not result.success
    text = failure_text(result)
    assert f"ComfyUI at {proxy.url} answered /history with JSON of the wrong shape" in text
    assert ".images: Input should be a valid list" in text
    assert "AttributeError" not in text and "TypeError" not in text and "no cause" not in text
    assert any(path.startswith("/history/") for _, path, _ in proxy.requests)  # it did go through the proxy
