"""Malformed server answers: valid JSON of the wrong shape is a clear protocol error naming the endpoint, in
the client, in a run and in `check`; a history entry listing too many outputs is refused before any download."""

import json

import pytest

from comfy_pipeline.comfyui import ComfyUIClient
from comfy_pipeline.comfyui.answers import MAX_OUTPUTS_PER_PROMPT, ProtocolError
from comfy_pipeline.definitions import defs
from comfy_pipeline_tests.support.helpers import check, failure_text
from comfy_pipeline_tests.support.hostile_server import HostileServer


def json_answer(value) -> tuple[int, dict, bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(value).encode()


@pytest.mark.parametrize("endpoint, answer, where", [
    ("/system_stats", [], "answered /system_stats with JSON of the wrong shape"),
    ("/system_stats", {"system": "x", "devices": []}, "system: Input should be a valid dictionary"),
    ("/queue", {"queue_running": 5, "queue_pending": []}, "queue_running: Input should be a valid list"),
    ("/object_info", {"KSampler": "yes"}, "answered /object_info with JSON of the wrong shape"),
])
def test_a_wrong_shape_names_the_endpoint_and_what_is_wrong(endpoint, answer, where):
    with HostileServer({endpoint: json_answer(answer)}) as server, ComfyUIClient(server.url) as client:
        call = {"/system_stats": client.system_stats, "/queue": client.queue, "/object_info": client.object_info}
        with pytest.raises(ProtocolError) as error:
            call[endpoint]()
    assert where in str(error.value)


def test_a_history_entry_with_hundreds_of_outputs_is_refused():
    prompt_id = "0b7c9d2e-1111-4a4a-8888-000000000002"
    images = [{"filename": f"x_{i:05d}_.png", "subfolder": "", "type": "output"} for i in range(300)]
    entry = {prompt_id: {"prompt": [], "outputs": {"9": {"images": images}},
                         "status": {"status_str": "success", "completed": True, "messages": []}}}
    with HostileServer({f"/history/{prompt_id}": json_answer(entry)}) as server, ComfyUIClient(server.url) as client:
        with pytest.raises(ProtocolError) as error:
            client.wait(prompt_id, timeout=10)
    assert f"lists 300 output files for prompt {prompt_id}; at most {MAX_OUTPUTS_PER_PROMPT}" in str(error.value)
    assert not [p for _, p, _ in server.requests if p.startswith("/view")]


def test_a_run_against_a_wrong_shaped_server_fails_clearly(instance, tmp_path):
    with HostileServer({"/system_stats": json_answer(["not", "stats"])}) as server:
        config = {"resources": {"comfy": {"config": {"url": server.url, "output_dir": str(tmp_path)}}}}
        result = defs.resolve_job_def("image_generation_job").execute_in_process(
            run_config=config, instance=instance, raise_on_error=False)
    assert not result.success
    text = failure_text(result)
    assert "answered /system_stats with JSON of the wrong shape" in text
    assert "AttributeError" not in text and "KeyError" not in text


def test_check_shows_the_protocol_error_itself(tmp_path):
    with HostileServer({"/system_stats": json_answer({"system": {}, "devices": []}),
                        "/queue": json_answer({"queue_running": [], "queue_pending": []}),
                        "/object_info": json_answer({"SaveImage": []})}) as server:
        proc = check(tmp_path, "--test-type", "image-only", "--comfyui-url", server.url, "--prompt", "a fox")
    assert proc.returncode in (1, 2)
    assert "answered /object_info with JSON of the wrong shape" in proc.stderr
    assert "Traceback" not in proc.stderr and "Error occurred while executing" not in proc.stderr
