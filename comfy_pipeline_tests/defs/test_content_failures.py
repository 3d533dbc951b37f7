"""Content checks in the pipeline: a black, flat or frozen output is a broken output (named, not animated, kept),
and content_retries makes it again with the next seed. Real simulator, real Dagster instance, real files."""

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image

from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import (
    REPO,
    check_evaluations,
    execute,
    failure_text,
    files_in,
    materializations,
    run_config,
)

SMALL = {"width": 256, "height": 256, "frames": 9, "fps": 8}


@pytest.fixture
def sim(tmp_path):
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.05, video_seconds=0.1) as simulator:
        yield simulator


def listing(result, asset: str) -> dict:
    (materialization,) = materializations(result, asset)
    return json.loads(Path(materialization.metadata["items_json"].value).read_text())


def with_quality(config: dict, **quality) -> dict:
    return {**config, "resources": {**config["resources"], "quality": {"config": quality}}}


def test_a_black_image_fails_its_check_is_named_with_the_reason_and_is_not_animated(sim, tmp_path):
    out = tmp_path / "out"
    sim.set_fault("black-output", count=1)  # the first prompt's image comes back black, the second is good
    prompts = [{"text": "a night that went black", "seed": 1, **SMALL}, {"text": "a sunny meadow", "seed": 2, **SMALL}]
    with dg.instance_for_test() as instance:
        result = execute("image_to_video_job", instance, run_config(sim.url, out, prompts))
    assert not result.success
    checks = check_evaluations(result)
    assert checks["image_quality"] is False and checks["video_quality"] is True
    assert checks["all_outputs_valid"] is False
    (image_check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "image_quality"]
    assert "prompt 0 ('a night that went black')" in image_check.description
    assert "image is black: mean luma 0.0/255" in image_check.description

    black, good = listing(result, "generated_image")["items"]
    brightness = {c["name"]: c for c in black["checks"]}["brightness"]
    assert not brightness["passed"] and brightness["message"].startswith("image is black: mean luma 0.0/255")
    assert black["measures"]["mean_luma"] == 0.0 and good["measures"]["mean_luma"] > 8
    assert Path(black["path"]).is_file()  # kept where it was written
    # Only the good image went on to a video.
    (video,) = listing(result, "ltx2_video")["items"]
    assert video["job"] == "video 1" and video["input_image"] == good["path"]
    # The report names the prompt as failed with the reason; the run's failure says it too.
    report = json.loads(next(p for p in files_in(out) if p.name == "validation_report.json").read_text())
    failed = [row for row in report["rows"] if not row["passed"]]
    assert failed and all(row["prompt"] == "a night that went black" for row in failed)
    assert any("image is black" in row["message"] for row in failed)
    assert "image is black" in failure_text(result)


def test_content_retries_makes_a_black_image_again_with_the_next_seed(sim, tmp_path):
    out = tmp_path / "out"
    sim.set_fault("black-output", count=1)  # hits the first attempt only
    config = with_quality(run_config(sim.url, out, [{"text": "a lucky second draw", "seed": 5, **SMALL}]),
                          content_retries=1)
    with dg.instance_for_test() as instance:
        result = execute("image_generation_job", instance, config)
    assert result.success, failure_text(result)
    assert check_evaluations(result)["image_quality"] is True
    found = listing(result, "generated_image")
    (kept,) = found["items"]
    (rejected,) = found["rejected"]
    assert kept["attempt"] == 2 and kept["seed"] == 6 and kept["spec"]["seed"] == 6
    assert all(c["passed"] for c in kept["checks"])
    assert rejected["attempt"] == 1 and rejected["seed"] == 5
    assert any(c["message"].startswith("image is black") for c in rejected["checks"] if not c["passed"])
    assert Path(rejected["path"]).is_file() and Path(kept["path"]).is_file() and kept["path"] != rejected["path"]
    # The asset's value (what the video step reads) keeps the second attempt and records the first.
    (materialization,) = materializations(result, "generated_image")
    assert materialization.metadata["seed"].value == 6
    assert len(sim.started_prompts()) == 2


def test_content_retries_stop_after_n_and_do_not_retry_a_bad_file(sim, tmp_path):
    sim.set_fault("black-output", count=3)  # black every time: two retries, then the third attempt is reported
    config = with_quality(run_config(sim.url, tmp_path / "out", [{"text": "always black", "seed": 0, **SMALL}]),
                          content_retries=2)
    with dg.instance_for_test() as instance:
        result = execute("image_generation_job", instance, config)
    assert not result.success and check_evaluations(result)["image_quality"] is False
    found = listing(result, "generated_image")
    assert [(i["attempt"], i["seed"]) for i in found["items"]] == [(3, 2)]
    assert [(r["attempt"], r["seed"]) for r in found["rejected"]] == [(1, 0), (2, 1)]
    assert "image is black" in failure_text(result)

    sim.clear_faults()
    sim.set_fault("corrupt-output", count=1)  # a broken file is a server fault, not a bad draw: no retry
    config = with_quality(run_config(sim.url, tmp_path / "out2", [{"text": "a torn file", "seed": 0, **SMALL}]),
                          content_retries=2)
    started = len(sim.started_prompts())
    with dg.instance_for_test() as instance:
        result = execute("image_generation_job", instance, config)
    assert not result.success
    found = listing(result, "generated_image")
    assert found["rejected"] == [] and found["items"][0]["attempt"] == 1
    assert len(sim.started_prompts()) == started + 1


def test_a_workflow_skip_checks_are_honoured(sim, tmp_path, monkeypatch):
    # The same flat picture fails "detail" under a workflow that checks it and passes under one that skips it.
    folder = tmp_path / "workflows"
    shutil.copytree(REPO / "workflows", folder)
    monkeypatch.setenv("COMFY_PIPELINE_WORKFLOWS_DIR", str(folder))
    sim.set_fault("flat-output")
    config = with_quality(run_config(sim.url, tmp_path / "out", [{"text": "a grey wall", "seed": 0, **SMALL}]),
                          image_min_bytes=100)  # a flat PNG is a few hundred bytes: only its content is judged
    with dg.instance_for_test() as instance:
        checked = execute("image_generation_job", instance, config)
        assert not checked.success
        (item,) = listing(checked, "generated_image")["items"]
        assert {c["name"]: c["passed"] for c in item["checks"]}["detail"] is False

        path = folder / "z_image_turbo_generation.params.json"
        params = json.loads(path.read_text())
        path.write_text(json.dumps({**params, "skip_checks": ["detail"]}))
        skipped = execute("image_generation_job", instance, config)
    assert skipped.success, failure_text(skipped)
    (item,) = listing(skipped, "generated_image")["items"]
    names = {c["name"] for c in item["checks"]}
    assert "detail" not in names and "brightness" in names
    assert item["measures"]["luma_spread"] < 4  # still measured: only the verdict is skipped


def test_a_video_from_another_picture_fails_start_frame(sim, tmp_path):
    image = tmp_path / "start.png"
    Image.effect_noise((320, 240), 60).convert("RGB").save(image)
    sim.set_fault("off-start-output")
    video = {"input_images": [str(image)], "frames": 9, "fps": 8}
    with dg.instance_for_test() as instance:
        result = execute("video_generation_job", instance,
                         run_config(sim.url, tmp_path / "out", ltx2_video={"config": video}))
    assert not result.success and check_evaluations(result)["video_quality"] is False
    (item,) = listing(result, "ltx2_video")["items"]
    start = {c["name"]: c for c in item["checks"]}["start_frame"]
    assert not start["passed"] and "does not start from its start image" in start["message"]
    assert "video does not start from its start image" in failure_text(result)


def test_the_quality_resource_carries_every_content_threshold_with_its_default():
    from comfy_pipeline.defs.resources import QualityThresholds
    from comfy_pipeline.media import ContentThresholds

    assert QualityThresholds().content() == ContentThresholds()
    assert QualityThresholds().content_retries == 0
    limits = {name: 1.0 for name in ContentThresholds.__dataclass_fields__ if name != "skip"}
    assert QualityThresholds(**limits).content() == ContentThresholds(**limits)
    with pytest.raises(Exception, match="content_retries"):
        QualityThresholds(content_retries=-1)
