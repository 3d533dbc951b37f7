"""Every way a prompt can go wrong, against the real simulator: rejected graphs (each kind), partial acceptance,
a node raising, interrupts and cancels, a server that forgot the prompt, a WebSocket that drops, timeouts."""

import itertools
import logging
import socket
import threading
import time

import pytest

from comfy_pipeline.comfyui import (
    ComfyUIClient,
    ExecutionError,
    PromptInterrupted,
    PromptLost,
    PromptTimeout,
    WorkflowValidationError,
)
from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import wait_until

SEEDS = itertools.count(1)
SAMPLER_SECONDS = 1.5  # GPU time of a sampler: long enough to catch a prompt while it runs


def image_workflow(prefix: str, width: int = 64, color: int = 0) -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": 48, "batch_size": 1, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def slow_workflow(prefix: str) -> dict:
    """A small Z-Image-like text-to-image graph: its KSampler spends SAMPLER_SECONDS, with progress events.
    Each call gets a new seed, or the server would serve the sampler from its cache in no time."""
    seed = next(SEEDS)
    return {
        "28": {"class_type": "UNETLoader",
               "inputs": {"unet_name": "z_image_turbo_bf16.safetensors", "weight_dtype": "default"}},
        "30": {"class_type": "CLIPLoader",
               "inputs": {"clip_name": "qwen_3_4b.safetensors", "type": "lumina2", "device": "default"}},
        "29": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "27": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["30", 0]}},
        "33": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["27", 0]}},
        "13": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": 8, "cfg": 1, "sampler_name": "res_multistep", "scheduler": "simple", "denoise": 1,
            "model": ["28", 0], "positive": ["27", 0], "negative": ["33", 0], "latent_image": ["13", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["29", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
    }


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("sim_fail")
    with Simulator(data_dir=data_dir, image_seconds=SAMPLER_SECONDS, video_seconds=SAMPLER_SECONDS) as s:
        yield s


@pytest.fixture
def client(sim):
    sim.clear_faults()
    with ComfyUIClient(sim.url, read_timeout=10, poll_interval=0.1) as c:
        yield c
    sim.clear_faults()
    c2 = ComfyUIClient(sim.url)
    c2._request("POST", "/queue", json={"clear": True})  # leave no work behind for the next test
    c2._request("POST", "/interrupt")
    c2.close()


def queued_ids(client: ComfyUIClient) -> set[str]:
    q = client.queue()
    return {item[1] for item in q["queue_running"] + q["queue_pending"]}


# -- rejected before running ---------------------------------------------------------------------------------


def test_unknown_node_type(client):
    workflow = image_workflow("client/bad")
    workflow["1"]["class_type"] = "NoSuchNodeXYZ"
    with pytest.raises(WorkflowValidationError) as info:
        client.submit(workflow)
    assert info.value.summary == "node type NoSuchNodeXYZ is not installed"
    assert "node type NoSuchNodeXYZ is not installed on the server" in str(info.value)


def test_missing_model_file_names_the_folder(client):
    workflow = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "not_there.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "client/ckpt"}},
    }
    with pytest.raises(WorkflowValidationError) as info:
        client.submit(workflow)
    (error,) = [e for e in info.value.errors if e.node_id == "4"]
    where = (error.class_type, error.kind, error.input_name)
    assert where == ("CheckpointLoaderSimple", "value_not_in_list", "ckpt_name")
    assert error.message == "model file 'not_there.safetensors' is not in folder 'checkpoints' on the server"


@pytest.mark.parametrize(
    "change, kind, text",
    [
        (lambda w: w["1"]["inputs"].update(width=99999), "value_bigger_than_max", "bigger than max"),
        (lambda w: w["1"]["inputs"].update(width=0), "value_smaller_than_min", "smaller than min"),
        (lambda w: w["1"]["inputs"].update(width="abc"), "invalid_input_type", "got 'abc'"),
        (lambda w: w["1"]["inputs"].pop("batch_size"), "required_input_missing",
         "required input 'batch_size' is missing"),
        (lambda w: w["2"]["inputs"].update(images=["99", 0]), "exception_during_validation", "check the links"),
    ],
)
def test_each_validation_error_kind(client, change, kind, text):
    workflow = image_workflow("client/invalid")
    change(workflow)
    with pytest.raises(WorkflowValidationError) as info:
        client.submit(workflow)
    assert [e.kind for e in info.value.errors] == [kind]
    assert text in str(info.value)
    assert queued_ids(client) == set()


def test_no_output_node(client):
    with pytest.raises(WorkflowValidationError, match="no output node"):
        client.submit({"1": image_workflow("x")["1"]})


def test_ui_format_is_refused_before_posting(client):
    with pytest.raises(WorkflowValidationError, match="Export \\(API\\)"):
        client.submit({"nodes": [], "links": [], "version": 0.4})


def test_partial_acceptance_is_cancelled_and_raised(client):
    blocker = client.submit(slow_workflow("client/blocker"))  # keeps the worker busy: the next one stays pending
    workflow = {**image_workflow("client/partial_ok"),
                "3": {"class_type": "EmptyImage",
                      "inputs": {"width": 99999, "height": 48, "batch_size": 1, "color": 0}},
                "4": {"class_type": "SaveImage",
                      "inputs": {"images": ["3", 0], "filename_prefix": "client/partial_bad"}}}
    with pytest.raises(WorkflowValidationError) as info:
        client.submit(workflow)
    assert "only part of the workflow was valid" in str(info.value)
    assert [(e.node_id, e.kind) for e in info.value.errors] == [("3", "value_bigger_than_max")]
    assert queued_ids(client) <= {blocker}  # the valid half is not waiting to run
    client.cancel(blocker)
    with pytest.raises(PromptInterrupted):
        client.wait(blocker, timeout=10)
    history = client._get_json("/history")
    assert not any(e["prompt"][2].get("2", {}).get("inputs", {}).get("filename_prefix") == "client/partial_ok"
                   for e in history.values())


# -- failing while running -----------------------------------------------------------------------------------


def test_execution_error_details(client, sim):
    sim.set_fault("execution-error", count=1)
    with pytest.raises(ExecutionError) as info:
        client.run(image_workflow("client/boom", color=1), timeout=20)
    error = info.value
    assert error.node_id in {"1", "2"} and error.node_type in {"EmptyImage", "SaveImage"}
    assert error.exception_type and error.exception_message
    assert error.node_id in str(error) and error.exception_type in str(error)


def test_cancel_running_prompt_is_interrupted(client):
    prompt_id = client.submit(slow_workflow("client/interrupt"))
    assert wait_until(lambda: client.status(prompt_id) == "running")
    client.cancel(prompt_id)
    with pytest.raises(PromptInterrupted) as info:
        client.wait(prompt_id, timeout=10)
    assert info.value.prompt_id == prompt_id


def test_cancel_pending_prompt_is_removed_and_others_keep_running(client):
    running = client.submit(slow_workflow("client/keep"))
    pending = client.submit(image_workflow("client/dropped", color=5))
    assert client.status(pending) == "pending"
    client.cancel(pending)
    assert client.status(pending) == "unknown"
    with pytest.raises(PromptLost):  # a deleted pending prompt never reaches the history
        client.wait(pending, timeout=10)
    assert client.wait(running, timeout=10).outputs  # the targeted cancel left the running prompt alone


def test_lost_after_server_restart(client, sim):
    prompt_id = client.submit(slow_workflow("client/lost"))
    assert wait_until(lambda: client.status(prompt_id) == "running")
    sim.restart()
    started = time.monotonic()
    with pytest.raises(PromptLost) as info:
        client.wait(prompt_id, timeout=300)
    assert info.value.prompt_id == prompt_id
    assert time.monotonic() - started < 120  # called lost after two checks, not after the prompt timeout


def test_websocket_drop_falls_back_to_polling(client, sim, caplog):
    caplog.set_level(logging.INFO, logger="comfy_pipeline.comfyui")
    sim.set_fault("drop-ws")
    events = []
    started = time.monotonic()
    result = client.run(slow_workflow("client/dropws"), timeout=300, on_progress=events.append)
    assert "dropped" in caplog.text and "polling /history" in caplog.text  # the socket really went away
    assert result.outputs and result.outputs[0].kind == "image"
    assert any(e.kind == "progress" for e in events) and events[-1].kind == "done"
    assert time.monotonic() - started < 120  # by polling, not after the prompt timeout


def test_timeout_cancels_on_the_server_before_raising(client):
    prompt_id = client.submit(slow_workflow("client/timeout"))
    started = time.monotonic()
    with pytest.raises(PromptTimeout) as info:
        client.wait(prompt_id, timeout=0.5)
    assert time.monotonic() - started < 60
    assert info.value.prompt_id == prompt_id
    # cancelled, not merely abandoned: it leaves the queue (an interrupt lands at the next node boundary)
    assert wait_until(lambda: prompt_id not in queued_ids(client), timeout=60)
    assert client.status(prompt_id) in {"done", "unknown"}
    entry = client._history_entry(prompt_id)
    assert entry is None or entry["status"]["messages"][-1][0] == "execution_interrupted"


class MeddlingProxy:
    """A TCP proxy in front of the simulator that can break the line the way networks do:
    - freeze_websockets(): WebSocket connections silently stop carrying data both ways (no FIN, no RST): the
      socket looks alive and says nothing, as ComfyUI users report;
    - swallow_prompt_answers(): POST /prompt reaches the server, but its answer never comes back."""

    def __init__(self, target: tuple[str, int]):
        self._target = target
        self._frozen = threading.Event()
        self._swallow = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze_websockets(self) -> None:
        self._frozen.set()

    def swallow_prompt_answers(self, on: bool = True) -> None:
        (self._swallow.set if on else self._swallow.clear)()

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            state = {"ws": False, "swallow": False}
            threading.Thread(target=self._pump, args=(downstream, upstream, state, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, downstream, state, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, state: dict, from_client: bool) -> None:
        try:
            while data := src.recv(65536):
                if from_client and data.startswith(b"GET /ws"):
                    state["ws"] = True
                if from_client and data.startswith(b"POST /prompt") and self._swallow.is_set():
                    state["swallow"] = True
                if state["ws"] and self._frozen.is_set():
                    continue
                if not from_client and state["swallow"]:
                    continue
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def proxy(sim):
    host, port = sim.url.split("://", 1)[1].rsplit(":", 1)
    p = MeddlingProxy((host, int(port)))
    yield p
    p.close()


def test_silently_dead_websocket_is_noticed_by_polling(proxy):
    with ComfyUIClient(proxy.url, poll_interval=0.1) as client:
        assert client.run(image_workflow("client/before_freeze", color=11), timeout=20).via == "websocket"
        proxy.freeze_websockets()
        started = time.monotonic()
        result = client.run(slow_workflow("client/frozen"), timeout=300)
        assert result.via == "polling" and result.outputs
        # noticed by the periodic /history check, not after the 300 s timeout
        assert time.monotonic() - started < 120


def test_submit_whose_answer_was_lost_is_looked_up_not_resubmitted(proxy, caplog):
    with ComfyUIClient(proxy.url, read_timeout=0.5) as client:
        proxy.swallow_prompt_answers()
        prompt_id = client.submit(image_workflow("client/lost_answer", color=12))
        proxy.swallow_prompt_answers(False)
        assert "no answer to POST /prompt" in caplog.text
        assert client.wait(prompt_id, timeout=20).outputs
        runs = [pid for pid, entry in client._get_json("/history").items()
                if entry["prompt"][2].get("2", {}).get("inputs", {}).get("filename_prefix") == "client/lost_answer"]
        assert runs == [prompt_id]  # exactly one run: the POST was not sent a second time
