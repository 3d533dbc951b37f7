"""Contract: the simulator's WebSocket sequences, history, queue and interrupt behave like the captured
ComfyUI 0.33.0 (message types in the same order, same shapes, same routing), over real sockets."""

import json
import time
import uuid

import pytest
import requests
import websocket

from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import (
    Socket,
    load_capture,
    post,
    quick_graph,
    sampler_graph,
    types,
    wait_for_history,
)


def captured_types(capture: dict, key: str = "messages") -> list[str]:
    return [entry["msg"]["type"] for entry in capture[key] if entry["kind"] == "text"]


def history(simulator: Simulator, prompt_id: str) -> dict:
    return requests.get(f"{simulator.url}/history/{prompt_id}", timeout=10).json()


@pytest.fixture
def slow_simulator(tmp_path):
    """Sampler prompts take 1.5 s here, long enough to queue, inspect and interrupt them."""
    with Simulator(data_dir=tmp_path / "slow", image_seconds=1.5) as simulator:
        yield simulator


def test_normal_run_cached_resubmit_and_partial_cache_send_the_captured_sequences(simulator: Simulator) -> None:
    names = ("ws_a_normal_run", "ws_b_cached_resubmit", "ws_b2_partially_cached")
    run_a, run_b, run_b2 = (load_capture(name) for name in names)
    client = Socket(simulator, "ws-capture-client")
    observer = Socket(simulator, "ws-observer")
    client.receive(), observer.receive()
    outputs = []
    for capture in (run_a, run_b, run_b2):
        client.messages = [client.messages[0]] if capture is run_a else []
        reply = post(simulator, capture["post_prompt"]["request"]["prompt"], client_id="ws-capture-client")
        prompt_id = reply.json()["prompt_id"]
        messages = client.until_done(prompt_id)
        expected = captured_types(capture)
        assert types(messages) == (expected if capture is run_a else expected[1:])
        entry = history(simulator, prompt_id)[prompt_id]  # written before executing{node: null}
        outputs.append(entry["outputs"])
        assert entry["status"]["status_str"] == "success"
        cached = next(m for m in messages if m["type"] == "execution_cached")["data"]["nodes"]
        expected_cached = next(
            e["msg"] for e in capture["messages"] if e["kind"] == "text" and e["msg"]["type"] == "execution_cached"
        )
        assert cached == expected_cached["data"]["nodes"]
        if capture is run_a:
            files_after_a = sorted(p.name for p in simulator.data_dir.rglob("*.png"))
        if capture is run_b:
            # Fully cached: the old outputs again, and no new file anywhere.
            assert entry["outputs"] == outputs[0]
            assert sorted(p.name for p in simulator.data_dir.rglob("*.png")) == files_after_a
    assert outputs[2]["2"]["images"][0]["filename"] == "ws_run_changed_00001_.png"
    assert outputs[2]["5"] == outputs[0]["5"]  # the preview node stayed cached
    # The observer socket (another clientId) only ever gets status broadcasts.
    observer.drain(0.2)
    assert set(types(observer.messages)) == {"status"}
    assert len(observer.messages) == 1 + 3 * 3
    client.close(), observer.close()


def test_normal_run_message_shapes(simulator: Simulator) -> None:
    capture = load_capture("ws_a_normal_run")
    client = Socket(simulator, "shapes")
    prompt_id = post(simulator, capture["post_prompt"]["request"]["prompt"], client_id="shapes").json()["prompt_id"]
    messages = client.until_done(prompt_id)
    captured = [entry["msg"] for entry in capture["messages"] if entry["kind"] == "text"]
    for mine, real in zip(messages, captured, strict=True):
        assert mine["type"] == real["type"]
        assert set(mine["data"]) == set(real["data"])
        if mine["type"] in ("executing", "executed", "progress_state"):
            assert mine["data"].get("node") == real["data"].get("node")
            if mine["type"] == "progress_state":
                assert mine["data"]["nodes"].keys() == real["data"]["nodes"].keys()
                for node, state in mine["data"]["nodes"].items():
                    assert state | {"prompt_id": None} == real["data"]["nodes"][node] | {"prompt_id": None}
    client.close()


def test_runtime_error_sequence_and_history(simulator: Simulator) -> None:
    capture = load_capture("ws_c_execution_error")
    (simulator.input_dir / "not_an_image.png").write_bytes(b"definitely not a PNG file")
    client = Socket(simulator, "errors")
    prompt_id = post(simulator, capture["post_prompt"]["request"]["prompt"], client_id="errors").json()["prompt_id"]
    assert types(client.until_done(prompt_id)) == captured_types(capture)
    entry = history(simulator, prompt_id)[prompt_id]
    real = load_capture("get_history_id_runtime_error")["response"]["body"]
    real_entry = next(iter(real.values()))
    assert entry.keys() == real_entry.keys()
    assert entry["outputs"] == {} and entry["meta"] == {}
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    event, data = entry["status"]["messages"][-1]
    real_event, real_data = real_entry["status"]["messages"][-1]
    assert event == real_event == "execution_error"
    assert data.keys() == real_data.keys()
    assert data["exception_type"] == "PIL.UnidentifiedImageError"
    assert data["exception_message"].startswith("cannot identify image file")
    assert data["current_inputs"] == {"image": ["not_an_image.png"]}
    assert (data["node_id"], data["node_type"], data["executed"]) == ("1", "LoadImage", [])
    client.close()


def test_prompt_without_client_id_only_broadcasts_status_and_progress_state(simulator: Simulator) -> None:
    capture = load_capture("ws_e_prompt_without_client_id")
    bystander = Socket(simulator, "bystander")
    prompt = load_capture("ws_a_normal_run")["post_prompt"]["request"]["prompt"]
    prompt_id = post(simulator, prompt).json()["prompt_id"]
    wait_for_history(simulator, prompt_id)
    assert types(bystander.drain(0.3)) == captured_types(capture)
    bystander.close()


def test_feature_flags_and_server_assigned_sid(simulator: Simulator) -> None:
    capture = load_capture("ws_f_feature_flags_and_server_assigned_sid")
    anonymous = Socket(simulator)
    status = anonymous.receive()
    assert status["type"] == "status"
    assert len(status["data"]["sid"]) == 32 and int(status["data"]["sid"], 16) >= 0
    anonymous.ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
    flags = anonymous.receive()
    assert flags == capture["messages"][1]["msg"]
    anonymous.close()


def test_rejected_prompt_sends_no_ws_events(simulator: Simulator) -> None:
    capture = load_capture("ws_c2_validation_error")
    client = Socket(simulator, "rejected")
    prompt = load_capture("post_prompt_invalid_value_out_of_range_too_small")["request"]["json"]["prompt"]
    assert post(simulator, prompt, client_id="rejected").status_code == 400
    assert types(client.drain(0.3)) == captured_types(capture)
    client.close()


def test_history_is_empty_while_pending_and_running_and_the_entry_has_the_captured_shape(
    slow_simulator: Simulator,
) -> None:
    running = post(slow_simulator, sampler_graph("history/running"), client_id="h").json()["prompt_id"]
    pending = post(slow_simulator, quick_graph("history/pending"), client_id="h").json()["prompt_id"]
    time.sleep(0.3)
    assert history(slow_simulator, running) == {} and history(slow_simulator, pending) == {}
    assert history(slow_simulator, str(uuid.uuid4())) == {}
    assert requests.get(slow_simulator.url + "/prompt", timeout=5).json() == {"exec_info": {"queue_remaining": 2}}
    entry = wait_for_history(slow_simulator, pending)
    real = next(iter(load_capture("get_history_id_success_emptyimage")["response"]["body"].values()))
    assert entry.keys() == real.keys()
    assert len(entry["prompt"]) == 5 and entry["prompt"][4] == ["2"]
    assert entry["prompt"][3]["client_id"] == "h" and isinstance(entry["prompt"][3]["create_time"], int)
    assert [event for event, _ in entry["status"]["messages"]] == [event for event, _ in real["status"]["messages"]]
    assert entry["meta"] == {"2": {"node_id": "2", "display_node": "2", "parent_node": None, "real_node_id": "2"}}
    everything = requests.get(slow_simulator.url + "/history", timeout=5).json()
    assert list(everything) == [running, pending]
    assert list(requests.get(slow_simulator.url + "/history?max_items=1", timeout=5).json()) == [pending]
    assert list(requests.get(slow_simulator.url + "/history?max_items=1&offset=0", timeout=5).json()) == [running]
    assert requests.post(slow_simulator.url + "/history", json={"delete": [running]}, timeout=5).text == ""
    assert history(slow_simulator, running) == {}
    requests.post(slow_simulator.url + "/history", json={"clear": True}, timeout=5)
    assert requests.get(slow_simulator.url + "/history", timeout=5).json() == {}


def test_queue_priority_front_explicit_number_delete_and_order(slow_simulator: Simulator) -> None:
    """The captured scenario: A runs; B, C(front), D(number=-1000), E queued; E deleted. Runs A, D, C, B."""
    url = slow_simulator.url
    ids = {"A": post(slow_simulator, sampler_graph("queue/A")).json()["prompt_id"]}
    time.sleep(0.2)
    replies = {
        "B": post(slow_simulator, quick_graph("queue/B", 1)),
        "C": post(slow_simulator, quick_graph("queue/C", 2), front=True),
        "D": post(slow_simulator, quick_graph("queue/D", 3), number=-1000),
        "E": post(slow_simulator, quick_graph("queue/E", 4)),
    }
    ids |= {name: reply.json()["prompt_id"] for name, reply in replies.items()}
    numbers = {name: reply.json()["number"] for name, reply in replies.items()}
    assert numbers == {"B": 1, "C": -2, "D": -1000.0, "E": 3}
    queue = requests.get(url + "/queue", timeout=5).json()
    assert [item[1] for item in queue["queue_running"]] == [ids["A"]]
    assert {item[1] for item in queue["queue_pending"]} == {ids[n] for n in "BCDE"}
    assert all(len(item) == 5 for item in queue["queue_pending"])
    assert requests.post(url + "/queue", json={"delete": [ids["E"]]}, timeout=5).status_code == 200
    for name in "ABCD":
        wait_for_history(slow_simulator, ids[name])
    order = list(requests.get(url + "/history", timeout=5).json())
    assert order == [ids[name] for name in load_capture("summary_queue_interrupt")["execution_order"]]
    assert history(slow_simulator, ids["E"]) == {}


def test_queue_clear_keeps_the_running_prompt(slow_simulator: Simulator) -> None:
    running = post(slow_simulator, sampler_graph("clear/running")).json()["prompt_id"]
    waiting = post(slow_simulator, quick_graph("clear/waiting")).json()["prompt_id"]
    time.sleep(0.2)
    assert requests.post(slow_simulator.url + "/queue", json={"clear": True}, timeout=5).text == ""
    assert requests.get(slow_simulator.url + "/queue", timeout=5).json()["queue_pending"] == []
    assert wait_for_history(slow_simulator, running)["status"]["status_str"] == "success"
    assert history(slow_simulator, waiting) == {}


def test_interrupts_global_targeted_and_malformed(slow_simulator: Simulator) -> None:
    url = slow_simulator.url
    client = Socket(slow_simulator, "interrupter")
    first = post(slow_simulator, sampler_graph("interrupt/a", seed=1), client_id="interrupter").json()["prompt_id"]
    second = post(slow_simulator, sampler_graph("interrupt/b", seed=2), client_id="interrupter").json()["prompt_id"]
    while not any(m["type"] == "progress" for m in client.messages):
        client.receive()
    # Aimed at the pending prompt: a silent no-op.
    assert requests.post(url + "/interrupt", json={"prompt_id": second}, timeout=5).status_code == 200
    asked = time.monotonic()
    assert requests.post(url + "/interrupt", json={"prompt_id": first}, timeout=5).text == ""
    messages = client.until_done(first)
    assert time.monotonic() - asked < 1.0  # at the next sampler step
    assert types(messages)[-3:] == ["execution_interrupted", "status", "executing"]
    entry = history(slow_simulator, first)[first]
    assert entry["status"]["status_str"] == "error" and entry["outputs"] == {}
    event, data = entry["status"]["messages"][-1]
    real_entry = load_capture("get_history_id_interrupted")["response"]["body"].popitem()[1]
    real_event, real_data = real_entry["status"]["messages"][-1]
    assert event == real_event and data.keys() == real_data.keys()
    assert (data["node_id"], data["node_type"], sorted(data["executed"])) == ("3", "KSampler", ["4", "5", "6"])
    # A malformed body is a global interrupt, and it hits the second prompt once that runs.
    client.messages = []
    while not any(m["type"] == "progress" for m in client.messages):
        client.receive()
    reply = requests.post(url + "/interrupt", data=b"{", headers={"Content-Type": "application/json"}, timeout=5)
    assert reply.status_code == 200
    assert types(client.until_done(second))[-3] == "execution_interrupted"
    client.close()


def test_an_interrupt_with_nothing_running_does_not_leak_into_the_next_prompt(simulator: Simulator) -> None:
    assert requests.post(simulator.url + "/interrupt", timeout=5).status_code == 200
    prompt_id = post(simulator, sampler_graph("no-leak")).json()["prompt_id"]
    assert wait_for_history(simulator, prompt_id)["status"]["status_str"] == "success"


def test_restart_forgets_queue_history_and_drops_sockets(slow_simulator: Simulator) -> None:
    done = post(slow_simulator, quick_graph("restart/done")).json()["prompt_id"]
    wait_for_history(slow_simulator, done)
    client = Socket(slow_simulator, "restart")
    running = post(slow_simulator, sampler_graph("restart/running"), client_id="restart").json()["prompt_id"]
    pending = post(slow_simulator, quick_graph("restart/pending")).json()["prompt_id"]
    time.sleep(0.3)
    slow_simulator.restart()
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        for _ in range(50):
            client.receive()
    assert requests.get(slow_simulator.url + "/history", timeout=5).json() == {}
    assert requests.get(slow_simulator.url + "/queue", timeout=5).json() == {"queue_running": [], "queue_pending": []}
    time.sleep(0.2)
    assert history(slow_simulator, running) == {} and history(slow_simulator, pending) == {}
    assert post(slow_simulator, quick_graph("restart/after")).json()["number"] == 0


def test_simple_routes_match_the_captures(shared_simulator: Simulator) -> None:
    url = shared_simulator.url
    stats = requests.get(url + "/system_stats", timeout=5).json()
    real_stats = load_capture("get_system_stats")["response"]["body"]
    assert stats.keys() == real_stats.keys() and stats["system"].keys() == real_stats["system"].keys()
    assert stats["devices"][0].keys() == real_stats["devices"][0].keys()
    assert stats["devices"][0]["name"] == "ComfyUI simulator (no GPU)"
    assert stats["system"]["comfyui_version"] == "0.33.0"
    assert requests.get(url + "/features", timeout=5).json() == load_capture("get_features")["response"]["body"]
    assert requests.get(url + "/models", timeout=5).json() == load_capture("get_models")["response"]["body"]
    assert requests.get(url + "/models/checkpoints", timeout=5).json() == ["ltx-2-19b-dev-fp8.safetensors"]
    assert requests.get(url + "/models/configs", timeout=5).json() == []
    unknown_folder = requests.get(url + "/models/nosuchfolder", timeout=5)
    assert (unknown_folder.status_code, unknown_folder.content) == (404, b"")
    assert requests.get(url + "/embeddings", timeout=5).json() == []
    save_image = requests.get(url + "/object_info/SaveImage", timeout=5).json()
    assert save_image == load_capture("get_object_info_single_node_SaveImage")["response"]["body"]
    assert requests.get(url + "/object_info/NoSuchNode", timeout=5).json() == {}
    assert "KSampler" in requests.get(url + "/api/object_info", timeout=5).json()
    assert requests.get(url + "/api/queue", timeout=5).json().keys() == {"queue_running", "queue_pending"}
    assert requests.post(url + "/free", json={"unload_models": True, "free_memory": True}, timeout=5).text == ""
    for path in ("/free", "/queue", "/history"):
        broken = requests.post(url + path, data=b"{", headers={"Content-Type": "application/json"}, timeout=5)
        assert (broken.status_code, broken.text) == (500, "500 Internal Server Error\n\nServer got itself in trouble")


def test_reused_prompt_id_runs_again_and_keeps_its_history_position(simulator: Simulator) -> None:
    reused = str(uuid.uuid4())
    for prefix in ("reuse/first", "reuse/other", "reuse/second"):
        body = {"prompt_id": reused} if prefix != "reuse/other" else {}
        prompt_id = post(simulator, quick_graph(prefix), **body).json()["prompt_id"]
        wait_for_history(simulator, prompt_id)
    time.sleep(0.1)
    entries = requests.get(simulator.url + "/history", timeout=5).json()
    assert list(entries)[0] == reused and len(entries) == 2
    assert entries[reused]["outputs"]["2"]["images"][0]["filename"].startswith("second_")


def test_save_image_websocket_sends_binary_png_frames(simulator: Simulator) -> None:
    client = Socket(simulator, "binary")
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 2, "color": 0xFF0000}},
        "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    }
    prompt_id = post(simulator, prompt, client_id="binary").json()["prompt_id"]
    frames = []
    while True:
        frame = client.ws.recv()
        if isinstance(frame, bytes):
            frames.append(frame)
        elif json.loads(frame)["type"] == "executing" and json.loads(frame)["data"]["node"] is None:
            break
    assert len(frames) == 2
    assert all(frame[:12] == bytes.fromhex("00000001 00000002 89504e47") for frame in frames)
    assert wait_for_history(simulator, prompt_id)["outputs"] == {}  # no history outputs, as captured
    client.close()


def test_partial_acceptance_runs_only_the_valid_outputs(simulator: Simulator) -> None:
    capture = load_capture("post_prompt_invalid_partial_one_output_valid_one_invalid")
    reply = requests.post(simulator.url + "/prompt", json=capture["request"]["json"], timeout=5).json()
    assert reply["node_errors"].keys() == capture["response"]["body"]["node_errors"].keys()
    entry = wait_for_history(simulator, reply["prompt_id"])
    assert entry["prompt"][4] == ["2"] and list(entry["outputs"]) == ["2"]  # SaveImage 4 hangs off the bad node 3


def test_a_client_reconnecting_mid_run_is_told_the_executing_node(slow_simulator: Simulator) -> None:
    first = Socket(slow_simulator, "again")
    prompt_id = post(slow_simulator, sampler_graph("reconnect"), client_id="again").json()["prompt_id"]
    while not any(m["type"] == "progress" for m in first.messages):
        first.receive()
    first.close()
    second = Socket(slow_simulator, "again")
    assert types([second.receive(), second.receive()]) == ["status", "executing"]
    assert second.messages[1]["data"] == {"node": "3"}
    assert types(second.until_done(prompt_id))[-3:] == ["execution_success", "status", "executing"]
    second.close()
