"""Both workflows, injected, are accepted by the simulator (which validates like ComfyUI 0.33.0 with the
official models installed), run, and their declared outputs show up in the history and on disk."""

import io
import json
import subprocess
import time

import requests
from PIL import Image

from comfy_pipeline.media.binaries import ffprobe_path
from comfy_pipeline.workflows.workflow import load_workflow


def submit_and_wait(url: str, graph: dict, timeout: float = 30.0) -> dict:
    response = requests.post(f"{url}/prompt", json={"prompt": graph, "client_id": "test-workflows"}, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["node_errors"] == {}
    prompt_id = body["prompt_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = requests.get(f"{url}/history/{prompt_id}", timeout=10).json()
        if history:
            entry = history[prompt_id]
            assert entry["status"]["status_str"] == "success", entry["status"]
            return entry
        time.sleep(0.05)
    raise AssertionError(f"prompt {prompt_id} did not finish within {timeout} s")


def test_z_image_runs_and_its_declared_output_is_in_the_history(simulator):
    workflow = load_workflow("z_image_turbo_generation")
    graph = workflow.inject({"prompt": "a lighthouse at dusk", "seed": 3, "width": 512, "height": 384},
                            filename_prefix="tests/run-z/image")
    entry = submit_and_wait(simulator.url, graph)
    assert set(entry["outputs"]) == set(workflow.outputs)
    [image] = entry["outputs"]["9"]["images"]
    assert image["subfolder"] == "tests/run-z" and image["type"] == "output"
    assert image["filename"].startswith("image_") and image["filename"].endswith(".png")
    with Image.open(simulator.output_dir / image["subfolder"] / image["filename"]) as png:
        assert png.size == (512, 384)


def test_ltx2_runs_on_an_uploaded_image_and_its_declared_output_is_a_video(simulator):
    buffer = io.BytesIO()
    Image.new("RGB", (320, 256), (200, 120, 40)).save(buffer, format="PNG")
    files = {"image": ("start.png", buffer.getvalue(), "image/png")}
    upload = requests.post(f"{simulator.url}/upload/image", files=files, timeout=10)
    assert upload.status_code == 200, upload.text
    uploaded = upload.json()
    name = f"{uploaded['subfolder']}/{uploaded['name']}" if uploaded["subfolder"] else uploaded["name"]

    workflow = load_workflow("ltx2_image_to_video")
    graph = workflow.inject({"image": name, "prompt": "the camera slowly pushes in", "frames": 17, "fps": 8,
                             "width": 256, "height": 256}, filename_prefix="tests/run-ltx/video")
    entry = submit_and_wait(simulator.url, graph)
    assert set(entry["outputs"]) == set(workflow.outputs)
    output = entry["outputs"]["75"]
    [video] = output["images"]
    assert output.get("animated") == [True]
    assert video["subfolder"] == "tests/run-ltx" and video["filename"].startswith("video_")
    path = simulator.output_dir / video["subfolder"] / video["filename"]
    probe = subprocess.run(
        [ffprobe_path(), "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=nb_read_frames,r_frame_rate,width,height", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )
    stream = json.loads(probe.stdout)["streams"][0]
    assert int(stream["nb_read_frames"]) == 17 and stream["r_frame_rate"] == "8/1"
    assert (stream["width"], stream["height"]) == (256, 256)
