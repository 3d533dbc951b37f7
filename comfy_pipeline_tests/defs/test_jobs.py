"""The Dagster jobs, run in-process on a real (temporary) Dagster instance against the simulator over HTTP."""

import json
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image

from comfy_pipeline.media import probe_video
from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import (
    SMALL,
    check_evaluations,
    execute,
    failure_text,
    items_of,
    materializations,
    run_config,
)


@pytest.fixture
def sim(tmp_path):
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.05, video_seconds=0.1) as simulator:
        yield simulator


def test_image_to_video_job_produces_validated_outputs_with_metadata_and_lineage(sim, tmp_path):
    out = tmp_path / "out"
    prompts = [
        {"text": "a red fox in snow", **SMALL},
        {"text": "a lighthouse at dusk", "motion_prompt": "slow zoom", **SMALL, "seed": 8},
    ]
    with dg.instance_for_test() as instance:
        result = execute("image_to_video_job", instance, run_config(sim.url, out, prompts))
        assert result.success, [e.message for e in result.all_events if e.is_failure]

        image_meta = materializations(result, "generated_image")[0].metadata
        assert image_meta["count"].value == 2
        assert image_meta["backend"].value == "simulator"  # the server says what it is, whatever the URL
        assert image_meta["workflow"].value == "z_image_turbo_generation"
        assert len(image_meta["workflow_sha256"].value) == 64
        assert image_meta["preview"].value.count("data:image/") == 2
        assert Path(image_meta["items_json"].value).is_relative_to(out)  # the list is a file, not metadata
        items = items_of(materializations(result, "generated_image")[0])
        for item in items:
            path = Path(item["path"])
            assert path.is_file() and path.is_relative_to(out)
            assert Image.open(path).size == (512, 384)
            assert all(c["passed"] for c in item["checks"])
            assert {"brightness", "detail"} <= {c["name"] for c in item["checks"]}  # the content checks ran
            assert item["measures"]["luma_spread"] > 4 and item["attempt"] == 1
            assert item["prompt_id"]

        video_items = items_of(materializations(result, "ltx2_video")[0])
        assert len(video_items) == 2
        info = probe_video(Path(video_items[0]["path"]))
        assert (info.width, info.height, info.frame_count, round(info.fps)) == (1280, 704, 17, 24)
        assert video_items[0]["input_image"] == items[0]["path"]
        # LTX-2 makes sound, and its clip starts from the image it was given: every video check ran and passed.
        video_checks = {c["name"]: c["passed"] for c in video_items[0]["checks"]}
        assert all(video_checks[name] for name in ("motion", "blank_frames", "start_frame", "audio"))
        assert video_items[0]["measures"]["start_similarity"] > 0.5

        assert all(check_evaluations(result).values())
        report_meta = materializations(result, "validation_report")[0].metadata
        assert report_meta["failed"].value == 0 and report_meta["passed"].value == 2 * (4 + 2) + 2 * (7 + 4)
        report = json.loads(Path(report_meta["report_json"].value).read_text())
        assert {row["asset"] for row in report["rows"]} == {"generated_image", "ltx2_video"}
        assert Path(report_meta["report_csv"].value).read_text().startswith("prompt,asset,check,passed")

        # Lineage recorded in the instance: the video's materialization points at this run's image event.
        video_event = instance.get_latest_materialization_event(dg.AssetKey("ltx2_video"))
        assert video_event.run_id == result.run_id
        tags = video_event.asset_materialization.tags or {}
        assert "dagster/input_event_pointer/generated_image" in tags

    # Files are organised by run and type, with descriptive names.
    run_dirs = list((out / "runs").iterdir())
    assert len(run_dirs) == 1 and result.run_id[:8] in run_dirs[0].name
    assert sorted(p.name for p in (run_dirs[0] / "images").iterdir()) == [
        "00_a-red-fox-in-snow_seed7.png",
        "01_a-lighthouse-at-dusk_seed8.png",
    ]
    assert not list(out.rglob("*.part"))


def test_corrupted_image_fails_blocking_check_and_keeps_the_file(sim, tmp_path):
    out = tmp_path / "out"
    sim.set_fault("corrupt-output", count=1)
    with dg.instance_for_test() as instance:
        config = run_config(sim.url, out, [{"text": "a broken picture", **SMALL}])
        result = execute("image_to_video_job", instance, config)
        assert not result.success
        checks = check_evaluations(result)
        assert checks["image_quality"] is False
        assert not materializations(result, "ltx2_video")  # the broken image never went on to the video step
        kept = list((out / "runs").rglob("*.png"))
        assert len(kept) == 1  # kept for inspection, marked failed by the check


def test_video_generation_job_from_an_input_image(sim, tmp_path):
    image = tmp_path / "start.png"
    Image.effect_noise((640, 480), 60).convert("RGB").save(image)
    video = {"input_images": [str(image)], "motion_prompt": "pan left", "frames": 9, "fps": 8}
    config = run_config(sim.url, tmp_path / "out", ltx2_video={"config": video})
    with dg.instance_for_test() as instance:
        result = execute("video_generation_job", instance, config)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        item = items_of(materializations(result, "ltx2_video")[0])[0]
        assert probe_video(Path(item["path"])).frame_count == 9


def test_video_generation_job_rejects_a_non_image_clearly(sim, tmp_path):
    bogus = tmp_path / "notes.png"
    bogus.write_text("not an image")
    config = run_config(sim.url, tmp_path / "out", ltx2_video={"config": {"input_images": [str(bogus)]}})
    with dg.instance_for_test() as instance:
        result = execute("video_generation_job", instance, config)
        assert not result.success
        assert "notes.png" in failure_text(result) and "cannot be used" in failure_text(result)


def test_unreachable_server_fails_fast_naming_the_url(tmp_path):
    config = run_config("http://127.0.0.1:9", tmp_path / "out")
    with dg.instance_for_test() as instance:
        result = execute("comfyui_connection_job", instance, config)
        assert not result.success
        assert "127.0.0.1:9" in failure_text(result) and "not reachable" in failure_text(result)


def test_connection_job_reports_server_facts(sim, tmp_path):
    with dg.instance_for_test() as instance:
        result = execute("comfyui_connection_job", instance, run_config(sim.url, tmp_path / "out"))
        assert result.success
        info = result.output_for_node("comfyui_connection")
        assert info["comfyui_version"] and info["queue_pending"] == 0 and info["gpu"]


def test_bad_prompt_in_run_config_is_a_clear_failure(sim, tmp_path):
    with dg.instance_for_test() as instance:
        result = execute("image_generation_job", instance, run_config(sim.url, tmp_path / "out", [{"text": "   "}]))
        assert not result.success
        assert "prompt is empty" in failure_text(result)
    assert sim.busy_intervals() == []  # nothing reached the GPU


def test_one_failed_prompt_costs_only_itself(sim, tmp_path):
    # The first prompt to run meets a node error; the two good ones still get their videos and the report.
    sim.set_fault("execution-error", count=1)
    prompts = [{"text": "the unlucky one", **SMALL}, {"text": "the lucky one", **SMALL, "seed": 9},
               {"text": "the other lucky one", **SMALL, "seed": 10}]
    with dg.instance_for_test() as instance:
        result = execute("image_to_video_job", instance, run_config(sim.url, tmp_path / "out", prompts))
        assert not result.success  # ... but only after everything good was made and reported
        text = failure_text(result)
        assert "1 prompt(s) failed" in text and "prompt 0 ('the unlucky one')" in text
        assert "node 57:3 (KSampler)" in text
        (images,) = materializations(result, "generated_image")
        assert [i["prompt"] for i in items_of(images)] == ["the lucky one", "the other lucky one"]
        assert images.metadata["failed_prompts"].value == 1
        assert check_evaluations(result)["image_quality"] is False  # a prompt without output is not a pass
        (videos,) = materializations(result, "ltx2_video")
        made = [probe_video(Path(i["path"])) for i in items_of(videos)]
        assert [v.frame_count for v in made] == [17, 17]
        assert [i["prompt"] for i in items_of(videos)] == ["the lucky one", "the other lucky one"]
        (report,) = materializations(result, "validation_report")
        rows = json.loads(Path(report.metadata["report_json"].value).read_text())["rows"]
        (missing,) = [r for r in rows if not r["passed"]]
        assert missing["prompt"] == "the unlucky one" and missing["check"] == "produced"
        assert "57:3 (KSampler)" in missing["message"]
        assert {r["asset"] for r in rows if r["passed"]} == {"generated_image", "ltx2_video"}
        table = report.metadata["report"]
        assert isinstance(table, dg.TableMetadataValue) and table.records[0].data["passed"] is False
