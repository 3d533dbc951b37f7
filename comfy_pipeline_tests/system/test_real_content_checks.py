"""The real-server tier of the content checks: black, flat, frozen, off-start and silent outputs made by a real
ComfyUI with core nodes only (no model files) fail `comfy-pipeline check` with exit 1 and their reason; a
textured picture and a moving clip that starts from its start image pass with exit 0. Skipped unless
COMFYUI_URL is set; run it against 0.33.0 and 0.8.0:

    COMFYUI_URL=http://127.0.0.1:8188 pytest -m real_comfyui comfy_pipeline_tests/system/test_real_content_checks.py

The workflows are fixtures (fixtures/content_workflows/): the size limits are lowered so that only the content
is judged. The pictures are made here: a photo-like still, and an animated PNG that pans across a wider one
(LoadImage gives one frame per PNG frame, on both versions).
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from comfy_pipeline.comfyui import ComfyUIClient
from comfy_pipeline_tests.support.helpers import FIXTURES, check

URL = os.environ.get("COMFYUI_URL")
pytestmark = [
    pytest.mark.real_comfyui,
    pytest.mark.skipif(not URL, reason="set COMFYUI_URL to a real ComfyUI to run the real-server tier"),
]
WORKFLOWS = FIXTURES / "content_workflows"
ONLY_CONTENT = ("--image-min-bytes", "0", "--video-min-bytes", "0")  # flat pictures compress to a few KB
FRAMES = 25  # the animated PNG's frames: the clips' length (1 s at 25 fps), as `check --frames` expects it
CHECK_TIMEOUT = 600  # seconds: Dagster's start-up and a CPU server's encoding, on a busy machine


def photo_like(width: int, height: int, seed: int = 20) -> Image.Image:
    """What photographs have and flat outputs lack: a graded sky, shapes of many colours, fine grain."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    picture = np.stack([90 + 100 * y / height, 140 + 60 * y / height, 220 - 80 * y / height], axis=-1)
    for _ in range(40):
        cx, cy = rng.uniform(0, width), rng.uniform(height * 0.2, height)
        rx, ry = rng.uniform(width * 0.02, width * 0.15), rng.uniform(height * 0.02, height * 0.15)
        inside = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1
        picture[inside] = rng.uniform(20, 235, size=3) * (0.7 + 0.3 * (y[inside, None] / height))
    picture += rng.normal(0, 6, size=picture.shape)
    return Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.2))


def save_panning_png(path: Path, *, moving: int = FRAMES, width: int = 640, height: int = 360, step: int = 12) -> Path:
    """An animated PNG of FRAMES frames panning `step` pixels a frame across a wider photo-like picture; after
    `moving` frames it stands still (the rest repeat the last one)."""
    wide = photo_like(width + step * moving, height)
    frames = [wide.crop((i * step, 0, i * step + width, height)) for i in range(moving)]
    for i in range(FRAMES - moving):
        # Pillow merges identical frames into one: touch two corner pixels so each still frame is kept whole.
        still = np.asarray(frames[moving - 1]).copy()
        still[0, 0, 0] = still[-1, -1, 0] = i % 2 * 255
        frames.append(Image.fromarray(still))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40, loop=0)
    return path


def run_check(tmp_path: Path, *args: str):
    proc = check(tmp_path, "--comfyui-url", URL, "--json", *ONLY_CONTENT, *args, timeout=CHECK_TIMEOUT)
    report = json.loads(proc.stdout) if proc.stdout.strip() else {}
    checks = [c for test in report.get("tests", []) for c in test["checks"]]
    return proc, {c["name"]: c for c in checks}


def check_image(tmp_path: Path, workflow: Path):
    return run_check(tmp_path, "--test-type", "image-only", "--workflows", str(workflow))


def check_video(tmp_path: Path, workflow: str, start_image: Path):
    return run_check(tmp_path, "--test-type", "video-only", "--image", str(start_image), "--frames", str(FRAMES),
                     "--workflows", f"smoke_image,{WORKFLOWS / workflow}")


def failed(proc, checks: dict, name: str, reason: str, *, also: frozenset[str] = frozenset()) -> None:
    """`check` exited 1 and printed `reason`; the content check `name` failed, and no other check but `also`."""
    said = proc.stderr + proc.stdout
    assert proc.returncode == 1, said
    assert reason in said, said
    assert {n for n, c in checks.items() if not c["passed"]} == {name} | also, checks


def passed(proc, checks: dict, names: tuple[str, ...]) -> None:
    assert proc.returncode == 0, proc.stderr
    assert set(names) <= set(checks), sorted(checks)
    assert all(c["passed"] for c in checks.values()), [c for c in checks.values() if not c["passed"]]


def test_a_black_image_fails_as_black(tmp_path):
    proc, checks = check_image(tmp_path, WORKFLOWS / "black_image.json")
    failed(proc, checks, "brightness", "image is black", also=frozenset({"detail"}))  # black is flat too


def test_a_flat_image_fails_for_lack_of_detail(tmp_path):
    proc, checks = check_image(tmp_path, WORKFLOWS / "flat_image.json")
    failed(proc, checks, "detail", "image is flat")


def test_a_textured_image_passes(tmp_path):
    photo = tmp_path / "photo.png"
    photo_like(640, 400).save(photo)
    with ComfyUIClient(URL) as client:
        name = client.upload_image(photo)
    # An image test uploads nothing: a workflow file of the user's own (beside its params) names the photo.
    graph = json.loads((WORKFLOWS / "textured_image.json").read_text())
    params = json.loads((WORKFLOWS / "textured_image.params.json").read_text())
    graph["98"]["inputs"]["image"] = params["parameters"]["image"]["default"] = name
    workflow = tmp_path / "textured_image.json"
    workflow.write_text(json.dumps(graph))
    (tmp_path / "textured_image.params.json").write_text(json.dumps(params))
    proc, checks = check_image(tmp_path, workflow)
    passed(proc, checks, ("brightness", "detail"))


def test_a_frozen_video_fails_as_frozen(tmp_path):
    start = tmp_path / "start.png"
    photo_like(640, 360).save(start)
    proc, checks = check_video(tmp_path, "frozen_video.json", start)
    failed(proc, checks, "motion", "video is frozen")


def test_a_moving_video_from_its_start_image_passes(tmp_path):
    proc, checks = check_video(tmp_path, "moving_video.json", save_panning_png(tmp_path / "start.png"))
    passed(proc, checks, ("motion", "blank_frames", "start_frame"))


def test_a_video_frozen_for_most_of_its_length_fails(tmp_path):
    start = save_panning_png(tmp_path / "start.png", moving=5)  # 0.2 s of motion, then 0.8 s still
    proc, checks = check_video(tmp_path, "moving_video.json", start)
    failed(proc, checks, "motion", "video is frozen for most of its length")


def test_a_video_that_does_not_start_from_its_image_fails(tmp_path):
    proc, checks = check_video(tmp_path, "off_start_video.json", save_panning_png(tmp_path / "start.png"))
    failed(proc, checks, "start_frame", "video does not start from its start image")


def test_a_silent_sound_track_fails(tmp_path):
    with ComfyUIClient(URL) as client:
        if "EmptyAudio" not in client.object_info():
            pytest.skip("this ComfyUI has no EmptyAudio node to make a silent track with")
    proc, checks = check_video(tmp_path, "silent_video.json", save_panning_png(tmp_path / "start.png"))
    failed(proc, checks, "audio", "audio is silent")
