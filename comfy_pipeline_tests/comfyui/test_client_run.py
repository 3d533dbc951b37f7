"""ComfyUIClient against the real simulator over loopback: the happy paths and the protocol's quiet traps
(cached resubmits, reused prompt ids, submits whose answer never came, several prompts in flight)."""

import threading
import time
import uuid

import pytest

from comfy_pipeline.comfyui import (
    ComfyUIClient,
    ProgressEvent,
    ServerError,
    ServerUnreachable,
)
from comfy_pipeline.comfyui import client as client_module
from comfy_pipeline.simulator import Simulator


def image_workflow(prefix: str, width: int = 64, height: int = 48, color: int = 0) -> dict:
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": width, "height": height, "batch_size": 1, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def video_workflow(prefix: str, frames: int = 9) -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 3355443}},
        "2": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": frames}},
        "3": {"class_type": "CreateVideo", "inputs": {"images": ["2", 0], "fps": 25.0}},
        "4": {"class_type": "SaveVideo",
              "inputs": {"video": ["3", 0], "filename_prefix": prefix, "format": "auto", "codec": "auto"}},
    }


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with Simulator(data_dir=tmp_path_factory.mktemp("sim_run"), image_seconds=0.05, video_seconds=0.2) as s:
        yield s


@pytest.fixture
def client(sim):
    sim.clear_faults()
    with ComfyUIClient(sim.url, read_timeout=10) as c:
        yield c
    sim.clear_faults()


def history_ids(client: ComfyUIClient) -> list[str]:
    return list(client._get_json("/history"))


def test_run_downloads_the_servers_bytes(client, sim, tmp_path):
    events: list[ProgressEvent] = []
    result = client.run(image_workflow("client/run"), timeout=20, on_progress=events.append)

    (out,) = result.outputs
    assert (out.node_id, out.type, out.kind, out.subfolder) == ("2", "output", "image", "client")
    path = client.download(out, tmp_path)
    assert path == tmp_path / out.filename
    assert path.read_bytes() == (sim.output_dir / out.subfolder / out.filename).read_bytes()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert result.via == "websocket"  # the socket's `executing` node:null told us, not a poll
    kinds = [e.kind for e in events]
    assert "executing" in kinds and kinds[-1] == "done"
    assert any(e.kind == "executing" and e.node == "2" and e.class_type == "SaveImage" for e in events)
    assert result.queued_at <= result.started_at <= result.finished_at <= result.noticed_at + 1
    assert result.execution_time is not None and result.queue_wait is not None


def test_a_second_download_never_overwrites(client, tmp_path):
    result = client.run(image_workflow("client/twice"), timeout=20)
    (out,) = result.outputs
    first = client.download(out, tmp_path, filename="picture.png")
    second = client.download(out, tmp_path, filename="picture.png")
    assert (first.name, second.name) == ("picture.png", "picture_1.png")


def test_video_outputs_are_listed_under_images_as_video(client, sim, tmp_path):
    result = client.run(video_workflow("client/clip"), timeout=20)
    (out,) = result.outputs
    assert out.kind == "video" and out.filename.endswith(".mp4")
    assert result.history["outputs"]["4"].get("animated") == [True]
    path = client.download(out, tmp_path)
    assert path.read_bytes() == (sim.output_dir / out.subfolder / out.filename).read_bytes()


def test_cached_resubmit_returns_the_old_outputs(client):
    workflow = image_workflow("client/cached", color=123)
    first = client.run(workflow, timeout=20)
    events: list[ProgressEvent] = []
    second = client.run(workflow, timeout=20, on_progress=events.append)
    assert second.prompt_id != first.prompt_id
    assert [o.filename for o in second.outputs] == [o.filename for o in first.outputs]
    assert set(second.cached_nodes) == {"1", "2"}
    assert not any(e.kind == "executing" for e in events)  # cached: no executing events, only executed
    assert any(e.kind == "cached" for e in events)


def test_submit_with_a_known_prompt_id_does_not_run_it_again(client):
    prompt_id = str(uuid.uuid4())
    assert client.submit(image_workflow("client/idem", color=7), prompt_id=prompt_id) == prompt_id
    client.wait(prompt_id, timeout=20)
    before = history_ids(client)
    # Same id again: ComfyUI would run it a second time; the client sees it is done and posts nothing.
    assert client.submit(image_workflow("client/idem", color=7), prompt_id=prompt_id) == prompt_id
    assert history_ids(client) == before
    assert client.status(prompt_id) == "done"


def test_another_client_can_wait_for_a_prompt_by_id(client, sim, monkeypatch):
    # e.g. a retried pipeline step picking up the prompt its previous attempt submitted
    monkeypatch.setattr(client_module, "SAFETY_CHECK_SECONDS", 600.0)  # the slow pace, made far slower
    prompt_id = client.submit(image_workflow("client/resumed", color=31))
    with ComfyUIClient(sim.url, poll_interval=0.05) as other:
        started = time.monotonic()
        result = other.wait(prompt_id, timeout=900)
    assert result.via == "polling" and result.outputs  # the events went to the submitter's socket
    assert time.monotonic() - started < 120  # polled at poll_interval, not at the slow safety pace


def test_prompt_id_must_be_canonical(client):
    with pytest.raises(ValueError, match="lowercase hyphenated UUID"):
        client.submit(image_workflow("client/x"), prompt_id=str(uuid.uuid4()).upper())


def test_submit_without_answer_and_not_queued_says_it_is_safe_to_resubmit(sim, caplog):
    # The server sits on POST /prompt for 1.5 s before reading it; the client stops reading after 0.5 s and
    # hangs up, so the prompt is never queued. (The "queued, but the answer was lost" case is in
    # comfyui/test_client_failures.py, with a proxy that swallows the answer.)
    with ComfyUIClient(sim.url, read_timeout=0.5) as client:
        client.run(image_workflow("client/warmup", color=98), timeout=20)  # socket up: the fault hits the POST
        sim.set_fault("slow", delay=1.5, count=1)
        try:
            with pytest.raises(ServerUnreachable, match="is not on the server, so it is safe to submit it again"):
                client.submit(image_workflow("client/slowpost", color=99))
        finally:
            sim.clear_faults()
        assert "no answer to POST /prompt" in caplog.text
        assert not [pid for pid, entry in client._get_json("/history").items()
                    if entry["prompt"][2].get("2", {}).get("inputs", {}).get("filename_prefix") == "client/slowpost"]
        assert client.queue()["queue_pending"] == []


def test_several_prompts_waited_on_from_threads(client):
    results: dict[int, object] = {}

    def work(i: int) -> None:
        results[i] = client.run(image_workflow(f"client/thread{i}", color=i + 1000), timeout=30)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    assert sorted(results) == [0, 1, 2, 3]
    assert len({r.prompt_id for r in results.values()}) == 4
    assert all(r.outputs and r.outputs[0].filename.startswith(f"thread{i}") for i, r in results.items())


def test_health_and_server_info(client):
    health = client.health()
    assert health["ok"] is True and health["error"] is None
    assert health["url"] == client.url and health["version"]
    assert isinstance(health["devices"], list) and health["devices"]
    assert "SaveImage" in client.object_info()
    assert client.object_info() is client.object_info()  # cached per client
    assert set(client.queue()) >= {"queue_running", "queue_pending"}


def test_health_of_a_server_that_is_down_does_not_raise():
    with ComfyUIClient("http://127.0.0.1:9", connect_timeout=0.5) as client:
        health = client.health()
    assert health["ok"] is False and "not reachable" in health["error"]


def test_get_retried_on_5xx_post_prompt_not(client, sim):
    sim.set_fault("http-500", count=1)
    assert client.system_stats()["system"]  # the first answer was a 500: retried
    sim.set_fault("http-500", count=1)
    with pytest.raises(ServerError, match="HTTP 500.*ComfyUI server log"):
        client.submit(image_workflow("client/post500"))
