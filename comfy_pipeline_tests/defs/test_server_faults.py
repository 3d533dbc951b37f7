"""Fault suite, server side: the Dagster jobs against a simulator that fails the way real servers do.

Each test says what the user sees (the failure text), that the run ends in bounded time, and what is kept.
Runs execute in-process on a real Dagster instance; the simulator is a real HTTP/WebSocket server.
"""

import json
import re
import threading
import time

import dagster as dg
import pytest
import requests
from PIL import Image

from comfy_pipeline.comfyui import ComfyUIClient
from comfy_pipeline.simulator import Simulator
from comfy_pipeline.workflows.workflow import load_workflow
from comfy_pipeline_tests.support.helpers import (
    check,
    config,
    execute,
    failure_text,
    files_in,
    free_port,
    items_of,
    materializations,
    prompts,
    wait_until,
)

SMALL = {"width": 512, "height": 384, "seed": 7}
SMALL_VIDEO = {**SMALL, "frames": 9, "fps": 8}


def server_queue(sim: Simulator) -> dict:
    return requests.get(f"{sim.url}/queue", timeout=5).json()


def when_running(sim: Simulator, action) -> threading.Thread:
    """Call `action` once the simulator has a prompt running (in a thread, while the run goes on)."""

    def watch() -> None:
        if wait_until(lambda: bool(server_queue(sim)["queue_running"]), 60):
            action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def runs_of(sim: Simulator) -> dict[str, int]:
    """prompt id -> how many times the simulator's worker started it."""
    counts: dict[str, int] = {}
    for entry in sim.started_prompts():
        counts[entry["prompt_id"]] = counts.get(entry["prompt_id"], 0) + 1
    return counts


@pytest.fixture
def sim(tmp_path):
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.05, video_seconds=0.1) as simulator:
        yield simulator


# -- the server is not there, or goes away ------------------------------------------------------------------


def test_server_down_at_start_fails_fast_and_writes_nothing(instance, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = execute("image_to_video_job", instance, config(url, tmp_path / "out", prompts(1)))
    assert time.monotonic() - started < 20
    assert not result.success
    assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.FAILURE
    assert f"ComfyUI server at {url} is not reachable" in failure_text(result)
    assert files_in(tmp_path / "out") == []


def test_server_dying_mid_prompt_fails_within_server_down_timeout(instance, tmp_path):
    sim = Simulator(data_dir=tmp_path / "sim", image_seconds=60).start()
    try:
        when_running(sim, sim.stop)
        started = time.monotonic()
        result = execute("image_generation_job", instance,
                         config(sim.url, tmp_path / "out", prompts(2), server_down_timeout=2.0, request_timeout=3.0))
        elapsed = time.monotonic() - started
    finally:
        sim.stop()
    assert not result.success
    # Bounded by server_down_timeout plus one request_timeout (a request caught by the crash may hang that
    # long), never by the 900 s prompt timeout.
    assert elapsed < 20
    text = failure_text(result)
    assert "2 of 2 prompt(s) failed" in text  # the queued one is failed too, not waited for separately
    assert re.search(r"not reachable \(no usable answer for 2 s while waiting for prompt [0-9a-f-]{36}", text)
    assert files_in(tmp_path / "out") == []  # no partial image


def test_restart_forgetting_the_prompt_resubmits_it_once_under_the_same_id(instance, sim, tmp_path):
    sim.set_fault("restart", count=1)  # the server restarts while the first prompt runs
    result = execute("image_generation_job", instance, config(sim.url, tmp_path / "out", prompts(1)))
    assert result.success, failure_text(result)
    (item,) = items_of(materializations(result, "generated_image")[0])
    assert all(c["passed"] for c in item["checks"])
    assert runs_of(sim) == {item["prompt_id"]: 2}  # abandoned by the restart, then run once more
    history = requests.get(f"{sim.url}/history", timeout=5).json()
    assert list(history) == [item["prompt_id"]]  # finished exactly once
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]  # the run's Dagster log
    assert any("submitting it once more under the same id" in m for m in messages)


def test_restart_with_a_full_queue_resubmits_every_forgotten_prompt_once(instance, tmp_path):
    with Simulator(data_dir=tmp_path / "sim", image_seconds=1.0) as sim:
        when_running(sim, sim.restart)  # the running prompt and the queued ones are all forgotten
        result = execute("image_generation_job", instance, config(sim.url, tmp_path / "out", prompts(3)))
        assert result.success, failure_text(result)
        ids = [i["prompt_id"] for i in items_of(materializations(result, "generated_image")[0])]
        history = requests.get(f"{sim.url}/history", timeout=5).json()
        assert sorted(history) == sorted(ids)  # each finished once
        assert all(count <= 2 for count in runs_of(sim).values())
        assert server_queue(sim) == {"queue_running": [], "queue_pending": []}


def test_a_prompt_that_ended_before_a_restart_wiped_the_history_is_not_run_again(sim, tmp_path):
    # In a batch the client downloads one prompt while the next ones finish; a restart then wipes their history
    # entries (ComfyUI keeps history in memory). Their end was heard on the WebSocket: no resubmit, no second run.
    graph = load_workflow("z_image_turbo_generation").inject({"prompt": "a fox", **SMALL}, filename_prefix="rel/ended")
    with ComfyUIClient(sim.url, poll_interval=0.1) as client:
        prompt_id = client.submit(graph)
        assert wait_until(lambda: requests.get(f"{sim.url}/history/{prompt_id}", timeout=5).json(), 20)
        sim.restart()
        result = client.wait(prompt_id, timeout=20)
        assert result.via == "websocket" and result.prompt_id == prompt_id
        saved = client.download(result.outputs[0], tmp_path / "dl")  # the file outlived the restart
    assert saved.stat().st_size > 10_000
    assert runs_of(sim) == {prompt_id: 1}


def test_prompt_forgotten_twice_is_not_submitted_a_third_time_and_the_step_retries(instance, sim, tmp_path):
    sim.set_fault("restart", count=2)
    started = time.monotonic()
    result = execute("image_generation_job", instance, config(sim.url, tmp_path / "out", prompts(1)))
    assert time.monotonic() - started < 20
    # The first attempt gives the prompt up after its second loss, clearly ...
    text = failure_text(result)
    assert "prompt 0 ('a lighthouse, take 0'): ComfyUI prompt" in text
    assert "the server probably restarted and forgot it" in text and "not submitted a third time" in text
    # ... its id never runs a third time; a restart is transient, so the step's retry runs it under a new id.
    retried = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retried) == 1 and result.success
    assert sorted(runs_of(sim).values()) == [1, 2]
    (materialization,) = materializations(result, "generated_image")
    (item,) = items_of(materialization)
    assert runs_of(sim)[item["prompt_id"]] == 1


def test_websocket_dropping_mid_run_still_completes(instance, sim, tmp_path):
    sim.set_fault("drop-ws")  # every prompt: the server closes all sockets while it runs
    started = time.monotonic()
    result = execute("image_generation_job", instance, config(sim.url, tmp_path / "out", prompts(2)))
    assert result.success, failure_text(result)
    assert time.monotonic() - started < 20
    assert sim.fault_hits()["drop-ws"] == 2
    items = items_of(materializations(result, "generated_image")[0])
    assert [all(c["passed"] for c in i["checks"]) for i in items] == [True, True]


# -- the server answers badly ---------------------------------------------------------------------------------


def test_http_500_on_reads_is_retried(instance, sim, tmp_path):
    sim.set_fault("http-500", count=3)  # the first three requests of the run: GET /system_stats, /object_info...
    result = execute("image_generation_job", instance, config(sim.url, tmp_path / "out", prompts(1)))
    assert result.success, failure_text(result)
    assert sim.fault_hits()["http-500"] == 3
    assert len(runs_of(sim)) == 1


def test_http_500_on_idempotent_posts_is_retried(sim, tmp_path):
    # Uploads are content-addressed and cancels are targeted: both are safe to send again.
    image = tmp_path / "start.png"
    Image.effect_noise((64, 64), 40).convert("RGB").save(image)
    graph = load_workflow("z_image_turbo_generation").inject({"prompt": "a fox", **SMALL}, filename_prefix="rel/post")
    with ComfyUIClient(sim.url) as client:
        sim.set_fault("http-500", count=1)
        assert client.upload_image(image).startswith("comfy_pipeline/start-")
        prompt_id = client.submit(graph)
        sim.set_fault("http-500", count=1)
        client.cancel(prompt_id)
    assert sim.fault_hits()["http-500"] == 2
    assert wait_until(lambda: server_queue(sim) == {"queue_running": [], "queue_pending": []}, 5)


def test_http_500s_never_duplicate_a_prompt(instance, tmp_path):
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.05, fault_seed=4) as sim:
        sim.set_fault("http-500", rate=0.3)
        result = execute("image_generation_job", instance, config(sim.url, tmp_path / "out", prompts(4)))
        sim.clear_faults()
        assert sim.fault_hits()["http-500"] >= 1
        failed = [line for line in failure_text(result).splitlines() if re.match(r"prompt \d \(.*\): ", line)]
        assert all("HTTP 500" in line and "look at the ComfyUI server log" in line for line in failed)
        # POST /prompt is not retried: a prompt whose POST got a 500 never ran; every other one ran once.
        refused = [line for line in failed if "on POST /prompt" in line]
        started = sim.started_prompts()
        assert len(started) == 4 - len(refused)
        prefixes = [p for entry in started for p in entry["filename_prefixes"]]
        assert len(prefixes) == len(set(prefixes))  # each job has its own prefix: none ran twice
        assert wait_until(lambda: server_queue(sim) == {"queue_running": [], "queue_pending": []}, 5)


def test_a_server_slower_than_the_request_timeout_fails_in_bounded_time(instance, sim, tmp_path):
    sim.set_fault("slow", delay=3.0)
    started = time.monotonic()
    result = execute("image_generation_job", instance,
                     config(sim.url, tmp_path / "out", prompts(1), request_timeout=0.5))
    assert time.monotonic() - started < 15
    assert not result.success
    assert "not reachable (ReadTimeout on GET /system_stats)" in failure_text(result)
    assert files_in(tmp_path / "out") == []


def test_a_server_turning_slow_mid_prompt_is_given_up_on_in_bounded_time(instance, tmp_path):
    with Simulator(data_dir=tmp_path / "sim", image_seconds=3.0) as sim:
        when_running(sim, lambda: sim.set_fault("slow", delay=1.0, count=12))
        started = time.monotonic()
        result = execute("image_generation_job", instance,
                         config(sim.url, tmp_path / "out", prompts(1), request_timeout=0.3, server_down_timeout=1.0))
        assert time.monotonic() - started < 20
        assert not result.success
        assert "no usable answer for 1 s while waiting for prompt" in failure_text(result)
        sim.clear_faults()
        assert wait_until(lambda: server_queue(sim) == {"queue_running": [], "queue_pending": []}, 10)
        assert files_in(tmp_path / "out") == []


# -- the prompt itself goes wrong -----------------------------------------------------------------------------


def test_prompt_over_its_timeout_is_cancelled_on_the_server(instance, tmp_path):
    with Simulator(data_dir=tmp_path / "sim", image_seconds=30) as sim:
        started = time.monotonic()
        result = execute("image_generation_job", instance,
                         config(sim.url, tmp_path / "out", prompts(2), prompt_timeout=1.0))
        assert time.monotonic() - started < 20
        assert not result.success
        text = failure_text(result)
        assert "did not finish within 1 s of starting and was cancelled on the server" in text
        # The interrupt lands at the next sampler step, as on a real GPU; nothing stays queued or running.
        assert wait_until(lambda: server_queue(sim) == {"queue_running": [], "queue_pending": []}, 10)
        history = requests.get(f"{sim.url}/history", timeout=5).json()
        assert all(e["status"]["messages"][-1][0] == "execution_interrupted" for e in history.values())
    assert files_in(tmp_path / "out") == []


def test_prompt_timeout_through_the_check_command(tmp_path):
    with Simulator(data_dir=tmp_path / "sim", image_seconds=30) as sim:
        proc = check(tmp_path, "--test-type", "image-only", "--comfyui-url", sim.url, "--timeout", "1",
                     "--prompt", "a slow lighthouse", "--json", timeout=120)
        assert proc.returncode == 1, proc.stderr
        assert "FAIL image-1" in proc.stderr and "Traceback" not in proc.stderr
        (test,) = json.loads(proc.stdout)["tests"]
        assert "did not finish within 1 s of starting and was cancelled on the server" in test["errors"][0]
        assert wait_until(lambda: server_queue(sim) == {"queue_running": [], "queue_pending": []}, 10)


def test_execution_error_names_node_class_and_message(instance, sim, tmp_path):
    sim.set_fault("execution-error", count=1)
    result = execute("image_generation_job", instance, config(sim.url, tmp_path / "out", prompts(1)))
    assert not result.success
    assert re.search(r"prompt 0 \('a lighthouse, take 0'\): ComfyUI prompt [0-9a-f-]{36} failed in node 57:3 "
                     r"\(KSampler\): RuntimeError: CUDA error: an illegal memory access", failure_text(result))
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    metadata = failure.step_failure_data.user_failure_data.metadata
    assert metadata["comfyui_node"].value == "57:3 (KSampler)"
    assert metadata["error_type"].value == "ExecutionError"
    assert files_in(tmp_path / "out") == []


class FirstPromptPostFails:
    """An HTTP proxy in front of the simulator that answers the first POST /prompt with ComfyUI's 500
    (as a flaky reverse proxy would) and forwards everything else; /ws is refused, so the client polls."""

    def __init__(self, target: str):
        import http.server

        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if self.command == "POST" and self.path.startswith("/prompt") and not proxy.failed:
                    proxy.failed = True
                    return self._answer(500, b"500 Internal Server Error\n\nServer got itself in trouble", "text/plain")
                if self.path.startswith("/ws"):
                    return self._answer(404, b"", "text/plain")
                upstream = requests.request(self.command, target + self.path, data=body, timeout=30,
                                            headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                self._answer(upstream.status_code, upstream.content, upstream.headers.get("Content-Type", ""))

            def _answer(self, status: int, body: bytes, content_type: str):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _forward

            def log_message(self, *args):
                pass

        self.failed = False
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_a_500_on_post_prompt_is_tried_once_more_under_the_same_id_and_runs_once(instance, sim, tmp_path):
    proxy = FirstPromptPostFails(sim.url)
    try:
        result = execute("image_generation_job", instance, config(proxy.url, tmp_path / "out", prompts(1)))
    finally:
        proxy.close()
    assert proxy.failed  # the 500 was really served
    assert result.success, failure_text(result)
    (item,) = items_of(materializations(result, "generated_image")[0])
    assert runs_of(sim) == {item["prompt_id"]: 1}  # looked up, then posted once more: run exactly once
