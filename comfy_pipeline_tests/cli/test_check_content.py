"""`comfy-pipeline check` and bad pictures: a black image fails the check with exit 1 and its reason, no video is
made from it, and --content-retries makes it again. Subprocesses against a simulator on a real port."""

import pytest

from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import check, report_of

SMALL = ["--frames", "9"]


@pytest.fixture
def sim(tmp_path):
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.05, video_seconds=0.1) as simulator:
        yield simulator


def test_a_black_image_fails_check_with_exit_1_and_its_reason(sim, tmp_path):
    sim.set_fault("black-output")
    proc = check(tmp_path, "--test-type", "full-pipeline", "--comfyui-url", sim.url, "--prompt", "a dark harbour",
                 "--json", *SMALL)
    assert proc.returncode == 1, proc.stderr
    assert "FAIL pipeline-1" in proc.stderr
    assert "prompt 0 ('a dark harbour')" in proc.stderr and "image is black: mean luma 0.0/255" in proc.stderr
    assert "Traceback" not in proc.stderr
    (test,) = report_of(proc)["tests"]
    assert not test["success"]
    assert [p.rsplit(".", 1)[-1] for p in test["outputs"]] == ["png"]  # kept, and no video was made from it
    brightness = [c for c in test["checks"] if c["name"] == "brightness"]
    assert brightness and not brightness[0]["passed"] and brightness[0]["message"].startswith("image is black")
    assert any("image is black" in error for error in test["errors"])
    assert not list((tmp_path / "out").rglob("*.mp4"))


def test_content_retries_makes_the_image_again_and_the_check_passes(sim, tmp_path):
    sim.set_fault("black-output", count=1)  # the first attempt only
    proc = check(tmp_path, "--test-type", "image-only", "--comfyui-url", sim.url, "--prompt", "a second chance",
                 "--seed", "3", "--content-retries", "1", "--json", COMFY_PIPELINE_CHECK_QUEUE_AHEAD="0")
    assert proc.returncode == 0, proc.stderr
    (test,) = report_of(proc)["tests"]
    assert test["success"] and len(test["outputs"]) == 1 and test["outputs"][0].endswith("_seed4.png")
    assert "queueing it again with seed 4" in proc.stderr  # the run says why it made the image again
    pngs = sorted(p.name for p in (tmp_path / "out").rglob("*.png"))
    assert pngs == ["00_a-second-chance_seed3.png", "00_a-second-chance_seed4.png"]  # the black one is kept


def test_a_bad_content_retries_value_is_a_usage_error(sim, tmp_path):
    proc = check(tmp_path, "--test-type", "image-only", "--comfyui-url", sim.url, "--content-retries", "-1")
    assert proc.returncode == 2 and "--content-retries" in proc.stderr and "expected 0 or more" in proc.stderr
