"""The simulator's ImageScaleBy and ImageScale against what real ComfyUI 0.33.0 and 0.8.0 gave for the same picture
(fixtures/real_server/image_resize/, made by its capture.py): the same size (each side round(side * scale_by),
half to even), the same file name, and the same pixels, within one level of 255 for the torch-computed methods."""

import json
import uuid

import numpy as np
import pytest
from PIL import Image

from comfy_pipeline.comfyui import ComfyUIClient
from comfy_pipeline.simulator.resample import common_upscale
from comfy_pipeline.workflows.workflow import load_workflow
from comfy_pipeline_tests.support.helpers import FIXTURES

HERE = FIXTURES / "real_server" / "image_resize"
CASES = json.loads((HERE / "cases.json").read_text())
RECORDED = json.loads((HERE / "recorded.json").read_text())


def pixels(path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB"), dtype=np.int16)


def test_the_recording_covers_both_versions_and_they_agree():
    assert sorted(RECORDED["servers"].values()) == ["0.33.0", "0.8.0"]
    for name in CASES:
        answers = RECORDED["cases"][name]
        assert answers["0.33.0"] == answers["0.8.0"], name


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_simulator_resizes_like_the_real_server(simulator, tmp_path, name):
    case, real = CASES[name], RECORDED["cases"][name]["0.33.0"]
    run = uuid.uuid4().hex[:8]
    prefix = f"comfy_pipeline/capture/{run}/{name}"
    with ComfyUIClient(simulator.url) as client:
        image = client.upload_image(HERE / "input.png")
        graph = {
            "1": {"class_type": "LoadImage", "inputs": {"image": image}},
            "2": {"class_type": case["node"], "inputs": {**case["inputs"], "image": ["1", 0]}},
            "9": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
        }
        (output,) = client.run(graph, timeout=60).outputs
        path = client.download(output, tmp_path)
    assert (output.filename, output.subfolder.replace(run, "RUN")) == (real["filename"], real["subfolder"])
    with Image.open(path) as picture:
        assert (picture.format, list(picture.size)) == ("PNG", real["size"])
    difference = np.abs(pixels(path) - pixels(HERE / f"{name}.png"))
    exact = case["inputs"]["upscale_method"] in ("lanczos", "nearest-exact")  # Pillow / plain indexing on both sides
    assert difference.max() <= (0 if exact else 1), (name, difference.max())
    assert (difference == 0).mean() > 0.95


@pytest.mark.parametrize("side, scale, expected", [(45, 1.5, 68), (35, 1.5, 52), (35, 3.3, 116), (45, 3.3, 148),
                                                   (35, 0.3, 10), (64, 1.01, 65)])
def test_scale_by_rounds_half_to_even_like_the_real_server(side, scale, expected):
    # Recorded sizes (45x35 in): 1.5 -> 68x52, 2.5 -> 112x88, 3.3 -> 148x116, 0.3 -> 14x10. Half up would differ.
    picture = Image.new("RGB", (side, 8))
    assert round(side * scale) == expected
    assert common_upscale(picture, (round(side * scale), 8), "area").size == (expected, 8)


def test_the_worked_example_upscales_on_the_simulator(simulator, tmp_path):
    workflow = load_workflow("image_upscale")
    with ComfyUIClient(simulator.url) as client:
        image = client.upload_image(HERE / "input.png")
        graph = workflow.inject({"image": image}, filename_prefix="comfy_pipeline/example/upscaled")
        (output,) = client.run(graph, timeout=60).outputs
        path = client.download(output, tmp_path)
    with Image.open(path) as picture:
        assert (picture.format, picture.size) == ("PNG", (90, 70))  # scale_by 2.0 by default: 45x35 doubled
    assert output.filename == "upscaled_00001_.png"
