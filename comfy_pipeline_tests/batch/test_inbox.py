"""The inbox cannot be blocked or misled: a bad file is set aside and never blocks the others, a file still being
written waits, symlinks are never followed, prompts per file are limited, and the cursor makes a tick cost only
what is new."""

import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from comfy_pipeline.definitions import defs
from comfy_pipeline.defs.resources import ComfyUIResource
from comfy_pipeline.defs.sensors import prompt_inbox_sensor


@pytest.fixture
def comfy(tmp_path):
    return ComfyUIResource(url="http://127.0.0.1:9", output_dir=str(tmp_path / "out"))


@pytest.fixture
def box(comfy) -> Path:
    path = Path(comfy.output_dir) / "inbox"
    path.mkdir(parents=True)
    return path


def tick(instance, comfy, cursor: str | None = None):
    with dg.build_sensor_context(instance=instance, resources={"comfy": comfy}, definitions=defs,
                                 cursor=cursor) as context:
        result = prompt_inbox_sensor(context)
        return result, context.cursor


def requested_files(result) -> list[str]:
    if not isinstance(result, dg.SensorResult):
        return []
    return sorted(r.tags["comfy_pipeline/inbox_file"] for r in result.run_requests)


def test_a_deeply_nested_file_is_set_aside_and_the_others_still_run(instance, comfy, box):
    (box / "deep.json").write_text("[" * 50_000 + "]" * 50_000)
    (box / "good.txt").write_text("a heron at dawn")
    result, _ = tick(instance, comfy)
    assert requested_files(result) == ["good.txt"]
    (note,) = (box / "rejected").glob("*deep.json.reason.txt")
    assert "nested deeper than 20 levels" in note.read_text()
    assert not (box / "deep.json").exists()


def test_a_file_still_being_written_waits_until_it_settles(instance, comfy, box, monkeypatch):
    monkeypatch.setenv("COMFY_PIPELINE_INBOX_SETTLE_S", "2")
    (box / "slow.txt").write_text("a lighthouse in the fo")  # the writer is not done yet
    result, cursor = tick(instance, comfy)
    assert isinstance(result, dg.SkipReason) and "slow.txt: still being written" in result.skip_message
    (box / "slow.txt").write_text("a lighthouse in the fog")
    past = time.time() - 5
    os.utime(box / "slow.txt", (past, past))  # unchanged for longer than the settle period
    result, cursor = tick(instance, comfy, cursor)
    (request,) = result.run_requests
    assert request.run_config["ops"]["prompt"]["config"]["prompts"][0]["text"] == "a lighthouse in the fog"


def test_symlinks_are_never_followed(instance, comfy, box, tmp_path):
    (box / "passwd.txt").symlink_to("/etc/passwd")
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"not even read")
    (box / "scene.txt").write_text("a quiet harbour")
    (box / "scene.png").symlink_to(outside)
    result, _ = tick(instance, comfy)
    (request,) = result.run_requests
    assert request.tags["comfy_pipeline/inbox_file"] == "scene.txt"
    assert request.job_name == "image_to_video_job"  # the linked "image beside" was not used
    assert (box / "passwd.txt").is_symlink() and not (box / "rejected").exists()


def test_too_many_prompts_in_one_file_are_refused(instance, comfy, box):
    (box / "flood.json").write_text(json.dumps([{"text": f"prompt {i}"} for i in range(10_000)]))
    result, _ = tick(instance, comfy)
    assert isinstance(result, dg.SkipReason)
    assert "10,000 prompts in one file; the limit is 200" in result.skip_message


def test_an_inbox_path_that_is_a_file_is_a_clear_skip(instance, comfy):
    out = Path(comfy.output_dir)
    out.mkdir(parents=True)
    (out / "inbox").write_text("oops")
    result, _ = tick(instance, comfy)
    assert isinstance(result, dg.SkipReason) and "is not a folder" in result.skip_message


def test_the_cursor_makes_a_tick_cost_only_what_is_new(instance, comfy, box, monkeypatch):
    from comfy_pipeline.defs import sensors

    read = []
    real_read = sensors.read_prompt_file
    monkeypatch.setattr(sensors, "read_prompt_file", lambda path: read.append(path.name) or real_read(path))
    for i in range(300):
        (box / f"p{i:03d}.txt").write_text(f"prompt number {i}")
    result, cursor = tick(instance, comfy)
    assert len(result.run_requests) == 300 and len(read) == 300
    read.clear()
    result, cursor = tick(instance, comfy, cursor)
    assert isinstance(result, dg.SkipReason) and "no new prompt files" in result.skip_message
    assert read == []  # nothing was opened again
    (box / "p000.txt").write_text("prompt number 0, edited")
    past = time.time() - 5
    os.utime(box / "p000.txt", (past, past))
    result, _ = tick(instance, comfy, cursor)
    assert requested_files(result) == ["p000.txt"] and read == ["p000.txt"]  # an edited file is new again
