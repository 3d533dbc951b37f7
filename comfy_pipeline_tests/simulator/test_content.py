"""What the simulator's outputs hold, measured with numpy and ffmpeg on the real files: LTX-2 clips start from
the uploaded picture fitted to the frame (cover, centre crop), move on every frame and carry a sound track when
the workflow makes one; generated pictures have detail; each content fault makes the bad output it names."""

import io
import json
import re
import subprocess
from pathlib import Path

import ffmpeg
import numpy as np
import requests
from PIL import Image, ImageOps

from comfy_pipeline.media.binaries import ffmpeg_command, ffprobe_path
from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import REPO_WORKFLOWS, load_capture, wait_for_history

WIDTH, HEIGHT, FRAMES, FPS = 320, 192, 25, 25
ENCODING_NOISE = 4.0  # mean absolute difference per channel (0-255) that H.264 at crf 23 leaves on these pictures


def textured_picture(size: tuple[int, int], seed: int) -> Image.Image:
    """Colour blocks of a few sizes: detail everywhere, so a shifted or different picture differs a lot."""
    rng = np.random.default_rng(seed)
    layers = [Image.fromarray(rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)).resize(size)
              for cells in (4, 16, 48)]
    return Image.fromarray(np.mean([np.asarray(layer, np.float32) for layer in layers], axis=0).astype(np.uint8))


def upload(simulator: Simulator, picture: Image.Image, name: str) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    files = {"image": (name, buffer.getvalue(), "image/png")}
    reply = requests.post(simulator.url + "/upload/image", files=files, timeout=10).json()
    return reply["name"]


def run(simulator: Simulator, prompt: dict) -> Path:
    """Queue `prompt`, wait for it, return the one file it saved."""
    reply = requests.post(simulator.url + "/prompt", json={"prompt": prompt}, timeout=10)
    assert reply.status_code == 200, reply.text
    entry = wait_for_history(simulator, reply.json()["prompt_id"], timeout=60)
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"][-1]
    (ref,) = [ref for output in entry["outputs"].values() for ref in output["images"]]
    return simulator.output_dir / ref["subfolder"] / ref["filename"]


def ltx2_clip(simulator: Simulator, start: Image.Image, seed: int = 10) -> Path:
    graph = json.loads((REPO_WORKFLOWS / "ltx2_image_to_video.json").read_text(encoding="utf-8"))
    graph["98"]["inputs"]["image"] = upload(simulator, start, f"start_{seed}.png")
    graph["102"]["inputs"].update({"resize_type.width": WIDTH, "resize_type.height": HEIGHT})
    graph["92:62"]["inputs"]["value"] = FRAMES
    graph["92:97"]["inputs"]["fps"] = FPS
    graph["92:11"]["inputs"]["noise_seed"] = seed
    return run(simulator, graph)


def text_to_image(simulator: Simulator, seed: int = 7) -> Path:
    graph = json.loads((REPO_WORKFLOWS / "z_image_turbo_generation.json").read_text(encoding="utf-8"))
    graph["57:3"]["inputs"]["seed"] = seed
    graph["57:13"]["inputs"].update(width=WIDTH, height=HEIGHT)
    return run(simulator, graph)


def video_without_audio(simulator: Simulator) -> Path:
    return run(simulator, load_capture("post_prompt_video_savevideo_mp4_h264")["request"]["json"]["prompt"])


def frames_of(video: Path) -> np.ndarray:
    """Every decoded frame as float RGB, shape (frames, height, width, 3)."""
    size = json.loads(subprocess.run(
        [ffprobe_path(), "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
         "-of", "json", str(video)], capture_output=True, text=True, check=True, timeout=60).stdout)["streams"][0]
    decode = ffmpeg.input(str(video)).output("-", f="rawvideo", pix_fmt="rgb24")
    raw = subprocess.run(ffmpeg_command(decode, "-v", "error"), capture_output=True, check=True, timeout=60).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, size["height"], size["width"], 3).astype(np.float32)


def audio_streams(video: Path) -> list[dict]:
    result = subprocess.run(
        [ffprobe_path(), "-v", "error", "-select_streams", "a", "-show_entries",
         "stream=codec_name,sample_rate,channels,duration", "-of", "json", str(video)],
        capture_output=True, text=True, check=True, timeout=60)
    return json.loads(result.stdout)["streams"]


def audio_level_db(video: Path) -> float:
    """ffmpeg volumedetect's mean volume of the first audio stream (-91 dB is digital silence)."""
    measure = ffmpeg.input(str(video)).audio.filter("volumedetect").output("-", f="null")
    result = subprocess.run(ffmpeg_command(measure, "-hide_banner"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-500:]
    return float(re.search(r"mean_volume: (-?[\d.]+) dB", result.stderr).group(1))


def fitted(picture: Image.Image) -> np.ndarray:
    """The workflow's fit: scale to cover the frame, crop the centre."""
    return np.asarray(ImageOps.fit(picture, (WIDTH, HEIGHT), Image.Resampling.LANCZOS), np.float32)


def difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


START = textured_picture((400, 400), seed=1)  # square: the 5:3 frame crops its top and bottom
OTHER = textured_picture((400, 400), seed=2)


def test_an_ltx2_clip_starts_from_the_fitted_start_image_moves_and_sounds(simulator: Simulator) -> None:
    video = ltx2_clip(simulator, START)
    frames = frames_of(video)
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert difference(frames[0], fitted(START)) < ENCODING_NOISE
    assert difference(frames[0], fitted(OTHER)) > 5 * ENCODING_NOISE
    assert difference(frames[0], np.asarray(START.resize((WIDTH, HEIGHT)), np.float32)) > ENCODING_NOISE  # cropped
    steps = [difference(frames[i], frames[i + 1]) for i in range(FRAMES - 1)]
    assert min(steps) > 1, steps  # every frame moves, to the end of the clip
    away = [difference(frames[0], frames[i]) for i in (FRAMES // 4, FRAMES // 2, FRAMES - 1)]
    assert away == sorted(away) and away[-1] > 3 * max(steps), away  # a steady move away, not flicker
    (audio,) = audio_streams(video)
    assert (audio["codec_name"], audio["sample_rate"], audio["channels"]) == ("aac", "48000", 2)
    assert abs(float(audio["duration"]) - FRAMES / FPS) < 0.1
    assert audio_level_db(video) > -40


def test_workflows_without_audio_save_video_only_files(simulator: Simulator) -> None:
    video = video_without_audio(simulator)
    assert audio_streams(video) == []
    assert len(frames_of(video)) > 1


def test_generated_pictures_have_detail(simulator: Simulator) -> None:
    pixels = np.asarray(Image.open(text_to_image(simulator)).convert("L"), np.float32)
    assert pixels.mean() > 40 and pixels.std() > 20
    _, counts = np.unique(pixels, return_counts=True)
    assert counts.max() / pixels.size < 0.2  # no colour covers the picture


def faulted(simulator: Simulator, kind: str) -> Path:
    simulator.set_fault(kind, count=1)
    video = ltx2_clip(simulator, START)
    assert simulator.fault_hits() == {kind: 1}
    return video


def test_black_output_is_all_zero_pixels(simulator: Simulator) -> None:
    frames = frames_of(faulted(simulator, "black-output"))
    assert len(frames) == FRAMES and frames.max() <= 2
    simulator.set_fault("black-output", count=1)
    assert np.asarray(Image.open(text_to_image(simulator))).max() == 0


def test_flat_output_is_one_mid_colour(simulator: Simulator) -> None:
    frames = frames_of(faulted(simulator, "flat-output"))
    assert np.abs(frames - frames.mean(axis=(0, 1, 2))).max() <= 3 and 60 < frames.mean() < 200
    simulator.set_fault("flat-output", count=1)
    picture = np.asarray(Image.open(text_to_image(simulator)).convert("RGB"))
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) == 1 and 60 < picture.mean() < 200


def test_frozen_output_repeats_the_start_frame(simulator: Simulator) -> None:
    frames = frames_of(faulted(simulator, "frozen-output"))
    assert len(frames) == FRAMES
    assert max(difference(frame, fitted(START)) for frame in frames) < ENCODING_NOISE
    steps = sorted(difference(frames[i], frames[i + 1]) for i in range(FRAMES - 1))
    assert steps[-1] < ENCODING_NOISE / 2 and steps[len(steps) * 3 // 4] < 0.1, steps  # the encoder settling only


def test_off_start_output_animates_another_picture(simulator: Simulator) -> None:
    frames = frames_of(faulted(simulator, "off-start-output"))
    assert difference(frames[0], fitted(START)) > 5 * ENCODING_NOISE
    assert min(difference(frames[i], frames[i + 1]) for i in range(FRAMES - 1)) > 1  # it still moves


def test_silent_output_has_an_all_zero_track_even_without_workflow_audio(simulator: Simulator) -> None:
    video = faulted(simulator, "silent-output")
    (audio,) = audio_streams(video)
    assert audio["codec_name"] == "aac" and abs(float(audio["duration"]) - FRAMES / FPS) < 0.1
    assert audio_level_db(video) <= -90
    assert difference(frames_of(video)[0], fitted(START)) < ENCODING_NOISE  # the pictures are unharmed
    simulator.set_fault("silent-output", count=1)
    no_audio_workflow = video_without_audio(simulator)
    assert len(audio_streams(no_audio_workflow)) == 1 and audio_level_db(no_audio_workflow) <= -90


def test_content_faults_hit_only_the_prompts_drawn(simulator: Simulator) -> None:
    simulator.set_fault("black-output", count=1)
    assert frames_of(ltx2_clip(simulator, START, seed=1)).max() <= 2
    assert difference(frames_of(ltx2_clip(simulator, START, seed=2))[0], fitted(START)) < ENCODING_NOISE
