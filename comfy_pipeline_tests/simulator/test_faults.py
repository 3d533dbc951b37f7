"""Fault injection and auth: each fault does what a real failure would look like on the wire."""

import base64
import time

import pytest
import requests
import websocket
from PIL import Image

from comfy_pipeline.simulator import Simulator
from comfy_pipeline.simulator.faults import parse_fault_spec
from comfy_pipeline_tests.support.helpers import (
    Socket,
    post,
    quick_graph,
    sampler_graph,
    types,
    wait_for_history,
)

SERVER_ERROR = "500 Internal Server Error\n\nServer got itself in trouble"


def test_execution_error_fault_reports_a_real_execution_error_once(simulator: Simulator) -> None:
    simulator.set_fault("execution-error", count=1)
    client = Socket(simulator, "faulty")
    failed = post(simulator, sampler_graph("fault/error"), client_id="faulty").json()["prompt_id"]
    assert "execution_error" in types(client.until_done(failed))
    entry = wait_for_history(simulator, failed)
    event, data = entry["status"]["messages"][-1]
    assert (event, data["node_type"], data["exception_type"]) == ("execution_error", "KSampler", "RuntimeError")
    assert data["traceback"] and entry["status"]["status_str"] == "error" and entry["outputs"] == {}
    retried = post(simulator, sampler_graph("fault/error", seed=2)).json()["prompt_id"]
    assert wait_for_history(simulator, retried)["status"]["status_str"] == "success"
    client.close()


def test_drop_ws_closes_sockets_but_the_prompt_completes(simulator: Simulator) -> None:
    simulator.set_fault("drop-ws", count=1)
    client = Socket(simulator, "dropped")
    prompt_id = post(simulator, sampler_graph("fault/drop"), client_id="dropped").json()["prompt_id"]
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        client.until_done(prompt_id)
    assert wait_for_history(simulator, prompt_id)["status"]["status_str"] == "success"


def test_restart_fault_forgets_the_running_prompt(simulator: Simulator) -> None:
    finished = post(simulator, quick_graph("fault/before")).json()["prompt_id"]
    wait_for_history(simulator, finished)
    simulator.set_fault("restart", count=1)
    client = Socket(simulator, "restarted")
    lost = post(simulator, sampler_graph("fault/restart"), client_id="restarted").json()["prompt_id"]
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        client.until_done(lost)
    time.sleep(0.3)
    assert requests.get(simulator.url + "/history", timeout=5).json() == {}
    assert requests.get(simulator.url + "/queue", timeout=5).json() == {"queue_running": [], "queue_pending": []}


def test_http_500_hits_the_given_number_of_requests(simulator: Simulator) -> None:
    simulator.set_fault("http-500", count=2)
    replies = [requests.get(simulator.url + "/queue", timeout=5) for _ in range(3)]
    assert [r.status_code for r in replies] == [500, 500, 200]
    assert replies[0].text == SERVER_ERROR and replies[0].headers["Content-Type"].startswith("text/plain")
    simulator.set_fault("http-500", rate=0.5)
    codes = [requests.get(simulator.url + "/prompt", timeout=5).status_code for _ in range(40)]
    assert 5 <= codes.count(500) <= 35 and 200 in codes
    simulator.clear_faults()
    assert requests.get(simulator.url + "/prompt", timeout=5).status_code == 200


def test_slow_delays_responses(simulator: Simulator) -> None:
    simulator.set_fault("slow", delay=0.4, count=1)
    started = time.monotonic()
    assert requests.get(simulator.url + "/queue", timeout=5).status_code == 200
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    requests.get(simulator.url + "/queue", timeout=5)
    assert time.monotonic() - started < 0.3


def test_corrupt_output_truncates_the_written_file(simulator: Simulator) -> None:
    simulator.set_fault("corrupt-output", count=1)
    big = {"width": 256, "height": 256, "batch_size": 1, "color": 0x336699}
    graph = quick_graph("fault/corrupt") | {"1": {"class_type": "EmptyImage", "inputs": big}}
    entry = wait_for_history(simulator, post(simulator, graph).json()["prompt_id"])
    assert entry["status"]["status_str"] == "success"  # the server does not notice; the client must
    ref = entry["outputs"]["2"]["images"][0]
    with pytest.raises(OSError):
        with Image.open(simulator.output_dir / ref["subfolder"] / ref["filename"]) as picture:
            picture.load()


def test_hostile_filename_names_an_output_outside_the_folder(simulator: Simulator) -> None:
    simulator.set_fault("hostile-filename", count=1)
    client = Socket(simulator, "hostile")
    prompt_id = post(simulator, quick_graph("fault/hostile"), client_id="hostile").json()["prompt_id"]
    executed = next(m for m in client.until_done(prompt_id) if m["type"] == "executed")
    ref = wait_for_history(simulator, prompt_id)["outputs"]["2"]["images"][0]
    assert executed["data"]["output"]["images"][0] == ref
    assert ref["filename"].startswith("../../") and ref["subfolder"] == "../.."
    assert requests.get(simulator.url + "/view", params=ref, timeout=5).status_code == 400
    client.close()


def test_fault_specs_are_checked() -> None:
    assert parse_fault_spec("http-500:0.25") == ("http-500", 0.25)
    assert parse_fault_spec("drop-ws") == ("drop-ws", 1.0)
    for bad in ("nope", "slow:fast", "slow:2"):
        with pytest.raises(ValueError):
            parse_fault_spec(bad)
    with Simulator() as simulator, pytest.raises(ValueError, match="unknown fault kind"):
        simulator.set_fault("gremlins")


def test_token_and_basic_auth_guard_every_route_and_the_websocket(tmp_path) -> None:
    with Simulator(data_dir=tmp_path / "a", token="t0ken", username="ann", password="pw") as simulator:
        assert requests.get(simulator.url + "/system_stats", timeout=5).status_code == 401
        wrong, right = {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer t0ken"}
        assert requests.get(simulator.url + "/api/queue", headers=wrong, timeout=5).status_code == 401
        assert requests.get(simulator.url + "/queue", headers=right, timeout=5).status_code == 200
        assert requests.get(simulator.url + "/queue", auth=("ann", "pw"), timeout=5).status_code == 200
        assert requests.get(simulator.url + "/queue", auth=("ann", "nope"), timeout=5).status_code == 401
        ws_url = simulator.url.replace("http", "ws", 1) + "/ws?clientId=x"
        with pytest.raises(websocket.WebSocketBadStatusException):
            websocket.create_connection(ws_url, timeout=5)
        basic = base64.b64encode(b"ann:pw").decode()
        ws = websocket.create_connection(ws_url, header=[f"Authorization: Basic {basic}"], timeout=5)
        assert '"sid": "x"' in ws.recv()
        ws.close()
        assert "t0ken" not in repr(simulator) and "pw" not in repr(simulator)


def test_busy_intervals_record_each_executed_prompt(simulator: Simulator) -> None:
    ids = [post(simulator, sampler_graph(f"busy/{n}", seed=n)).json()["prompt_id"] for n in range(2)]
    for prompt_id in ids:
        wait_for_history(simulator, prompt_id)
    intervals = simulator.busy_intervals()
    assert len(intervals) == 2
    for start, end in intervals:
        assert end - start >= 0.05  # image_seconds of GPU time inside each
    assert intervals[0][1] <= intervals[1][0]  # one worker: never overlapping
