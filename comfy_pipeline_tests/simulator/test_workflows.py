"""The project's two official-template workflows (workflows/*.json) and the captured video graphs produce real
files on the simulator: a seeded, labelled PNG of the latent's size; an H.264 MP4 with exactly `length`
frames at CreateVideo's fps, moving from the uploaded image (and its sound track). Checked with Pillow and ffprobe."""

import copy
import io
import json
import subprocess
from pathlib import Path

import pytest
import requests
from PIL import Image, ImageChops, ImageSequence, ImageStat

from comfy_pipeline.media.binaries import ffmpeg_path, ffprobe_path
from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import REPO_WORKFLOWS, load_capture, wait_for_history


def workflow(name: str) -> dict:
    return json.loads((REPO_WORKFLOWS / f"{name}.json").read_text(encoding="utf-8"))


def run(simulator: Simulator, prompt: dict) -> dict:
    reply = requests.post(simulator.url + "/prompt", json={"prompt": prompt, "client_id": "workflows"}, timeout=10)
    assert reply.status_code == 200 and reply.json()["node_errors"] == {}, reply.text
    entry = wait_for_history(simulator, reply.json()["prompt_id"], timeout=60)
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"][-1]
    return entry


def output_file(simulator: Simulator, ref: dict) -> Path:
    return simulator.output_dir / ref["subfolder"] / ref["filename"]


def probe(path: Path) -> dict:
    result = subprocess.run(
        [ffprobe_path(), "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,width,height,pix_fmt,nb_read_frames,avg_frame_rate", "-of", "json", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    )
    return json.loads(result.stdout)["streams"][0]


def frame(path: Path, index: int) -> Image.Image:
    result = subprocess.run(
        [ffmpeg_path(), "-v", "error", "-i", str(path), "-vf", f"select=eq(n\\,{index})", "-frames:v", "1",
         "-f", "image2pipe", "-vcodec", "png", "-"],
        capture_output=True, check=True, timeout=60,
    )
    return Image.open(io.BytesIO(result.stdout)).convert("RGB")


def text_to_image(prompt_text: str, seed: int, prefix: str = "t2i/z") -> dict:
    graph = workflow("z_image_turbo_generation")
    graph["58"]["inputs"]["value"] = prompt_text
    graph["57:3"]["inputs"]["seed"] = seed
    graph["57:13"]["inputs"].update(width=1024, height=784)
    graph["9"]["inputs"]["filename_prefix"] = prefix
    return graph


def test_text_to_image_gives_a_seeded_labelled_png_of_the_latent_size(simulator: Simulator) -> None:
    entry = run(simulator, text_to_image("a lighthouse at dusk", seed=7))
    first = output_file(simulator, entry["outputs"]["9"]["images"][0])
    assert first.name == "z_00001_.png" and first.parent.name == "t2i"
    assert first.stat().st_size > 10_000
    with Image.open(first) as picture:
        assert picture.format == "PNG" and picture.size == (1024, 784)
        first_pixels = picture.convert("RGB")
    other_seed_run = run(simulator, text_to_image("a lighthouse at dusk", seed=8))
    other_seed = output_file(simulator, other_seed_run["outputs"]["9"]["images"][0])
    other_text_run = run(simulator, text_to_image("a harbour at noon", seed=7))
    other_text = output_file(simulator, other_text_run["outputs"]["9"]["images"][0])
    for other in (other_seed, other_text):
        assert ImageChops.difference(first_pixels, Image.open(other).convert("RGB")).getbbox() is not None
    # The label is there: the top-left corner holds white text on a black box.
    corner = first_pixels.crop((0, 0, 300, 60))
    assert {(0, 0, 0), (255, 255, 255)} <= {colour for _, colour in corner.getcolors(300 * 60)}


def test_identical_resubmit_is_served_from_cache_without_new_files(simulator: Simulator) -> None:
    graph = text_to_image("cache me", seed=3, prefix="cache/z")
    first = run(simulator, graph)
    files = sorted(simulator.output_dir.rglob("*.png"))
    again = run(simulator, copy.deepcopy(graph))
    assert again["outputs"] == first["outputs"]
    assert sorted(simulator.output_dir.rglob("*.png")) == files
    cached = dict(again["status"]["messages"])["execution_cached"]["nodes"]
    assert sorted(cached) == sorted(graph)
    renamed = copy.deepcopy(graph)
    renamed["9"]["inputs"]["filename_prefix"] = "cache/renamed"
    assert run(simulator, renamed)["outputs"]["9"]["images"][0]["filename"] == "renamed_00001_.png"


def test_image_to_video_moves_from_the_uploaded_image(simulator: Simulator) -> None:
    still = output_file(simulator, run(simulator, text_to_image("a fox in snow", seed=11))["outputs"]["9"]["images"][0])
    files = {"image": ("fox.png", still.read_bytes(), "image/png")}
    uploaded = requests.post(simulator.url + "/upload/image", files=files, data={"subfolder": "pipeline"},
                             timeout=10).json()
    graph = workflow("ltx2_image_to_video")
    graph["98"]["inputs"]["image"] = f"{uploaded['subfolder']}/{uploaded['name']}"
    graph["102"]["inputs"].update({"resize_type.width": 1280, "resize_type.height": 720})
    graph["92:62"]["inputs"]["value"] = 121
    graph["92:97"]["inputs"]["fps"] = 25
    entry = run(simulator, graph)
    ref = entry["outputs"]["75"]
    assert ref["animated"] == [True] and ref["images"][0]["subfolder"] == "video"
    video = output_file(simulator, ref["images"][0])
    assert video.name == "LTX_2.0_i2v_00001_.mp4" and video.stat().st_size > 100_000
    stream = probe(video)
    assert stream == {"codec_name": "h264", "width": 1280, "height": 720, "pix_fmt": "yuv420p",
                      "avg_frame_rate": "25/1", "nb_read_frames": "121"}
    first, last = frame(video, 0), frame(video, 120)
    assert ImageChops.difference(first, last).getbbox() is not None  # it moves
    source = Image.open(still).convert("RGB").resize(first.size)
    colour_gap = [abs(a - b) for a, b in zip(ImageStat.Stat(first).mean, ImageStat.Stat(source).mean)]
    assert max(colour_gap) < 25  # made from the uploaded picture, not from noise


def test_a_missing_start_image_is_a_validation_error(simulator: Simulator) -> None:
    graph = workflow("ltx2_image_to_video")
    graph["98"]["inputs"]["image"] = "never_uploaded.png"
    reply = requests.post(simulator.url + "/prompt", json={"prompt": graph}, timeout=10)
    assert reply.status_code == 400
    assert reply.json()["node_errors"]["98"]["errors"][0]["details"] == "image - Invalid image file: never_uploaded.png"


VIDEO_CASES = {
    "savevideo_createvideo_frontend_style": "video/ref_savevideo_00001_.mp4",
    "savevideo_mp4_h264": "video/ref_mp4_h264_00001_.mp4",
    "savevideo_webm": "video/ref_webm_00001_.webm",
    "save_webm": "ref/webm_00001_.webm",
    "repeat_batch_savevideo": "video/ref_repeat_00001_.mp4",
}


@pytest.mark.parametrize("case", sorted(VIDEO_CASES))
def test_captured_video_graphs_give_the_same_files(case: str, shared_simulator: Simulator) -> None:
    prompt = load_capture(f"post_prompt_video_{case}")["request"]["json"]["prompt"]
    prefix_node = next(node for node in prompt.values() if "filename_prefix" in node["inputs"])
    prefix_node["inputs"]["filename_prefix"] = f"{case}/{prefix_node['inputs']['filename_prefix']}"  # unique per case
    outputs = run(shared_simulator, prompt)["outputs"]
    (ref,) = [item for output in outputs.values() for item in output["images"]]
    expected = load_capture("video_files_probe")["files"][VIDEO_CASES[case]]
    assert ref["filename"] == Path(VIDEO_CASES[case]).name
    assert next(iter(outputs.values()))["animated"] == [True]
    stream = probe(output_file(shared_simulator, ref))
    assert int(stream["nb_read_frames"]) == expected["frames"]
    assert stream["avg_frame_rate"] == f"{expected['average_rate']}/1"
    shape = ("width", "height", "pix_fmt")
    assert [stream[key] for key in shape] == [expected[key] for key in shape]
    assert stream["codec_name"] == {"libdav1d": "av1"}.get(expected["codec"], expected["codec"])
    served = requests.get(shared_simulator.url + "/view", params=ref, timeout=10)
    assert served.headers["Content-Type"] == ("video/webm" if ref["filename"].endswith(".webm") else "video/mp4")


@pytest.mark.parametrize("case, image_format", [("save_animated_webp", "WEBP"), ("save_animated_png", "PNG")])
def test_captured_animated_image_graphs(case: str, image_format: str, shared_simulator: Simulator) -> None:
    prompt = load_capture(f"post_prompt_video_{case}")["request"]["json"]["prompt"]
    outputs = run(shared_simulator, prompt)["outputs"]
    expected = load_capture("summary_video_outputs")[case]["outputs"]
    assert outputs.keys() == expected.keys()
    (node,) = outputs
    assert outputs[node]["animated"] == [True]
    ref = outputs[node]["images"][0]
    assert ref["subfolder"] == expected[node]["images"][0]["subfolder"]
    with Image.open(output_file(shared_simulator, ref)) as picture:
        assert (picture.format, picture.size) == (image_format, (64, 64))
    # With frames that differ (a decoded batch of 3), every frame is kept.
    varied = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "ltx-2-19b-dev-fp8.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 3}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": case, "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 5, "steps": 2, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0,
            "model": ["4", 0], "positive": ["6", 0], "negative": ["6", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "2": prompt["2"] | {"inputs": prompt["2"]["inputs"] | {"images": ["8", 0]}},
    }
    ref = run(shared_simulator, varied)["outputs"]["2"]["images"][0]
    with Image.open(output_file(shared_simulator, ref)) as picture:
        assert picture.n_frames == 3
        if image_format == "PNG":  # Pillow reports frame durations for APNG only
            assert all(abs(shown.info["duration"] - 1000 / 6) <= 1 for shown in ImageSequence.Iterator(picture))


def test_savevideo_without_format_fails_at_run_time(simulator: Simulator) -> None:
    prompt = load_capture("post_prompt_runtime_error_savevideo_missing_format")["request"]["json"]["prompt"]
    reply = requests.post(simulator.url + "/prompt", json={"prompt": prompt}, timeout=10).json()
    entry = wait_for_history(simulator, reply["prompt_id"])
    event, data = entry["status"]["messages"][-1]
    assert (event, data["exception_type"], data["node_type"]) == ("execution_error", "TypeError", "SaveVideo")
    assert data["exception_message"] == "SaveVideo.execute() missing 1 required positional argument: 'format'\n"
