"""The real-server tier: the pipeline against a real ComfyUI, on the model-free workflows (core nodes only, so
a CPU server without model files will do). Skipped unless COMFYUI_URL is set; the default `pytest` stays
offline.

    COMFYUI_URL=http://127.0.0.1:8188 pytest -m real_comfyui
"""

import json
import os
import time
import uuid

import dagster as dg
import pytest
from PIL import Image

from comfy_pipeline.comfyui import ComfyUIClient
from comfy_pipeline.definitions import defs
from comfy_pipeline.media import probe_image, probe_video
from comfy_pipeline.workflows.compat import adapt_to_server
from comfy_pipeline.workflows.preflight import preflight
from comfy_pipeline.workflows.workflow import load_workflow
from comfy_pipeline_tests.support.helpers import wait_until

URL = os.environ.get("COMFYUI_URL")
pytestmark = [
    pytest.mark.real_comfyui,
    pytest.mark.skipif(not URL, reason="set COMFYUI_URL to a real ComfyUI to run the real-server tier"),
]
SMOKE = {"ops": {"generated_image": {"config": {"workflow": "smoke_image"}},
                 "ltx2_video": {"config": {"workflow": "smoke_video"}}}}
FLAT_OUTPUTS = {"image_min_bytes": 100, "video_min_bytes": 100}  # a flat colour compresses to a few KB


@pytest.fixture
def client():
    with ComfyUIClient(URL) as connected:
        yield connected


def test_the_pipeline_runs_end_to_end_on_the_model_free_workflows(tmp_path):
    config = {
        "resources": {"comfy": {"config": {"url": URL, "output_dir": str(tmp_path)}},
                      "quality": {"config": FLAT_OUTPUTS}},
        "ops": {**SMOKE["ops"], "prompt": {"config": {"prompts": [
            {"text": "real-server smoke test", "width": 320, "height": 256, "frames": 9, "fps": 8}]}}},
    }
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("image_to_video_job").execute_in_process(
            run_config=config, instance=instance, raise_on_error=False)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        assert all(e.passed for e in result.get_asset_check_evaluations())
    (png,) = tmp_path.rglob("*.png")
    (mp4,) = tmp_path.rglob("*.mp4")
    assert (probe_image(png).width, probe_image(png).height) == (320, 256)
    video = probe_video(mp4)  # the uploaded image, scaled and repeated by the server
    assert (video.width, video.height, video.frame_count, video.fps) == (512, 288, 9, 8)


def chain_graph(nodes: int, size: int) -> dict:
    graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1, "color": 0}}}
    for i in range(nodes):
        graph[str(10 + i)] = {"class_type": "ImageScale", "inputs": {
            "image": [str(9 + i) if i else "1", 0], "upscale_method": "lanczos", "width": size + (i % 2) * 8,
            "height": size + (i % 2) * 8, "crop": "disabled"}}
    prefix = f"comfy_pipeline/tier/{uuid.uuid4().hex[:8]}"
    graph["99"] = {"class_type": "SaveImage", "inputs": {"images": [str(9 + nodes), 0], "filename_prefix": prefix}}
    return graph


def test_a_running_prompt_is_cancelled_at_the_next_node(client):
    prompt_id = client.submit(chain_graph(40, 2048))
    assert wait_until(lambda: client.status(prompt_id) == "running", 60)
    time.sleep(0.5)
    started = time.monotonic()
    client.cancel(prompt_id)
    assert wait_until(lambda: client.status(prompt_id) == "done", 30)
    assert time.monotonic() - started < 10
    entry = client._history_entry(prompt_id)
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert client.queue() == {"queue_running": [], "queue_pending": []}


def test_a_resubmitted_graph_is_served_from_the_cache(client, tmp_path):
    graph = chain_graph(2, 128)
    first = client.run(graph, timeout=120)
    again = client.run(graph, timeout=120)
    assert first.cached_nodes == [] and sorted(again.cached_nodes) == sorted(graph)
    assert [f.filename for f in again.outputs] == [f.filename for f in first.outputs]


def test_the_uploaded_image_is_what_the_server_loads(client, tmp_path):
    image = tmp_path / "start.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(image)
    name = client.upload_image(image)
    graph = load_workflow("smoke_video").inject({"image": name, "frames": 3, "fps": 4},
                                                filename_prefix=f"comfy_pipeline/tier/{uuid.uuid4().hex[:8]}")
    graph, _ = adapt_to_server(graph, client.object_info())
    result = client.run(graph, timeout=120)
    (video,) = [client.download(f, tmp_path) for f in result.outputs]
    assert probe_video(video).frame_count == 3


@pytest.mark.parametrize("name", ["z_image_turbo_generation", "ltx2_image_to_video"])
def test_the_official_workflows_lack_only_their_models(client, name):
    workflow = load_workflow(name)
    values = {"image": "start.png"} if "image" in workflow.params else {}
    graph = workflow.inject(values, filename_prefix="comfy_pipeline/tier/preflight")
    version = client.version()
    report = preflight(graph, client.object_info(), source=client.url, server_version=version)
    kinds = {p.kind for p in report.problems}
    assert kinds <= {"missing_model"}, [p.format() for p in report.problems]


SECOND = os.environ.get("COMFYUI_URL_2")


@pytest.mark.skipif(not SECOND, reason="set COMFYUI_URL_2 to a second real ComfyUI to share a batch between two")
def test_two_real_servers_share_the_pipeline(tmp_path):
    """COMFYUI_URL and COMFYUI_URL_2 (e.g. 0.33.0 and 0.8.0) as the resource's `urls`."""
    config = {
        "resources": {"comfy": {"config": {"urls": [URL, SECOND], "output_dir": str(tmp_path), "max_in_flight": 2}},
                      "quality": {"config": FLAT_OUTPUTS}},
        "ops": {**SMOKE["ops"], "prompt": {"config": {"prompts": [
            {"text": f"real-server take {i}", "width": 320, "height": 256, "frames": 9, "fps": 8, "seed": i}
            for i in range(4)]}}},
    }
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("image_to_video_job").execute_in_process(
            run_config=config, instance=instance, raise_on_error=False)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
    (report,) = tmp_path.rglob("validation_report.json")
    rows = json.loads(report.read_text())["rows"]
    assert {row["server"] for row in rows} == {ComfyUIClient(URL).url, ComfyUIClient(SECOND).url}
    assert all(row["verdict"] == "passed" for row in rows), [row["reason"] for row in rows]
    assert len(list(tmp_path.rglob("*.png"))) == 4 and len(list(tmp_path.rglob("*.mp4"))) == 4
