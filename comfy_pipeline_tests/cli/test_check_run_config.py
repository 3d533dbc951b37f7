"""The run config `comfy-pipeline check` gives each test's run: built from the assets' config classes, so every
field of a prompt reaches the run (the video test used to drop `negative_prompt`), and valid for its job."""

import json

import dagster as dg
from PIL import Image

from comfy_pipeline.cli import build_parser
from comfy_pipeline.cli.check import JOB_FOR_TEST_TYPE, _run_config, plan_tests
from comfy_pipeline.definitions import defs

PROMPTS = {"image_generation": [{"text": "a lighthouse", "negative_prompt": "blurry, static", "seed": 7}],
           "video_generation": ["waves roll in"]}


def planned(tmp_path, *args):
    (tmp_path / "prompts.json").write_text(json.dumps(PROMPTS))
    parsed = build_parser().parse_args(["check", "--prompts-file", str(tmp_path / "prompts.json"),
                                        "--output-dir", str(tmp_path / "out"), "--frames", "9", *args])
    return parsed, plan_tests(parsed)


def config_of(test, parsed) -> dict:
    config = _run_config(test, "http://127.0.0.1:8188", parsed)
    dg.validate_run_config(defs.resolve_job_def(JOB_FOR_TEST_TYPE[test.type]), config.to_config_dict())
    return config.to_config_dict()


def test_the_video_test_keeps_the_negative_prompt(tmp_path):
    Image.new("RGB", (64, 64), "red").save(tmp_path / "start.png")
    parsed, tests = planned(tmp_path, "--test-type", "video-only", "--image", str(tmp_path / "start.png"))
    (video,) = tests
    video_config = config_of(video, parsed)["ops"]["ltx2_video"]["config"]
    assert video_config["negative_prompt"] == video.spec.negative_prompt and video.spec.negative_prompt
    assert video_config["motion_prompt"] == "waves roll in"
    assert video_config["input_images"] == [str((tmp_path / "start.png").resolve())]
    assert (video_config["seed"], video_config["frames"]) == (7, 9)


def test_the_pipeline_test_keeps_every_prompt_field(tmp_path):
    parsed, tests = planned(tmp_path, "--test-type", "full-pipeline")
    (pipeline,) = tests
    prompt = config_of(pipeline, parsed)["ops"]["prompt"]["config"]["prompts"][0]
    assert prompt["text"] == "a lighthouse" and prompt["negative_prompt"] == pipeline.spec.negative_prompt
    assert (prompt["seed"], prompt["frames"]) == (7, 9)
