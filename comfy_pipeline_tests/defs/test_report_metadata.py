"""What a person sees in the Dagster UI, read back from a real instance's event log: the assets carry batch figures
as typed numbers (the UI plots them run after run), each quality check a table with one row per output (verdict
and reason first, then the measures) whose failed prompts are rows too, failures first, and a description that
counts what it names. Real simulator, real checks, real files."""

import csv
import io
import json
from pathlib import Path

import dagster as dg
import pytest

from comfy_pipeline.batch.report import COLUMNS
from comfy_pipeline.defs import metadata as ui_metadata
from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import execute, failure_text, run_config

SMALL = {"width": 256, "height": 256, "frames": 9, "fps": 8}
PROMPTS = [{"text": "the unlucky one", "seed": 1, **SMALL}, {"text": "a night that went black", "seed": 2, **SMALL},
           {"text": "a sunny meadow", "seed": 3, **SMALL}, {"text": "a harbour at noon", "seed": 4, **SMALL}]
FIRST_OUTPUT_FACTS = ("prompt", "seed", "width", "height", "size_bytes", "sha256", "prompt_id", "execution_s")


@pytest.fixture
def sim(tmp_path):
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.05, video_seconds=0.1) as simulator:
        yield simulator


def stored(instance: dg.DagsterInstance, run_id: str):
    """The run's materializations and check evaluations as the instance stored them: asset or check name ->
    (metadata, passed, description)."""
    found = {}
    for kind in (dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        for entry in instance.all_logs(run_id, of_type=kind):
            data = entry.dagster_event.event_specific_data
            if kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
                found[data.materialization.asset_key.to_user_string()] = data.materialization.metadata
            else:
                found[data.check_name] = (data.metadata, data.passed, data.description)
    return found


def rows_of(table: dg.TableMetadataValue) -> list[dict]:
    return [record.data for record in table.records]


def test_the_ui_shows_one_row_per_output_failures_first_and_plottable_batch_figures(sim, tmp_path, monkeypatch):
    monkeypatch.setattr(ui_metadata, "MAX_TABLE_ROWS", 3)  # fewer rows than the run makes: the failures stay in view
    # Prompt 0 meets a node error (no output); prompt 1's image comes back black; prompts 2 and 3 are good.
    sim.set_fault("execution-error", count=1)
    sim.set_fault("black-output", count=2)  # drawn by prompt 0 too, which fails before it makes any picture
    out = tmp_path / "out"
    with dg.instance_for_test() as instance:
        result = execute("image_to_video_job", instance, run_config(sim.url, out, PROMPTS))
        assert not result.success
        seen = stored(instance, result.run_id)
    images, videos, report = seen["generated_image"], seen["ltx2_video"], seen["validation_report"]

    # The image asset: batch figures as typed numbers, no unlabelled first-output facts, labelled previews.
    assert {k: images[k] for k in ("prompts", "outputs", "passed_outputs", "failed_outputs", "failed_prompts",
                                   "regenerated")} == {
        "prompts": dg.IntMetadataValue(4), "outputs": dg.IntMetadataValue(3), "passed_outputs": dg.IntMetadataValue(2),
        "failed_outputs": dg.IntMetadataValue(1), "failed_prompts": dg.IntMetadataValue(1),
        "regenerated": dg.IntMetadataValue(0)}
    for key in ("mean_luma_mean", "mean_luma_min", "luma_spread_min", "validation_s", "validation_s_mean",
                "execution_s_mean"):
        assert isinstance(images[key], dg.FloatMetadataValue), key
    assert images["mean_luma_min"].value == 0.0 and images["mean_luma_mean"].value > 0  # the black one, and all
    assert not set(FIRST_OUTPUT_FACTS) & set(images) and images["output_sizes"].value == "256x256"
    previews = images["previews (open with Show Markdown)"].value
    assert previews.count("data:image/") == 3 and "**prompt 1, FAILED: a night that went black**" in previews

    # The image check: red, saying which and why, over a table whose failed rows come first.
    metadata, passed, description = seen["image_quality"]
    assert not passed
    assert description.startswith("1 of 4 prompts made no output; 1 of 3 outputs failed: prompt 0 ('the unlucky "
                                   "one'): ComfyUI prompt ")
    assert "node 57:3 (KSampler)" in description and "Traceback" not in description
    assert "prompt 1 ('a night that went black'): " in description
    assert "image is black: mean luma 0.0/255" in description
    table = metadata["outputs"]
    assert [c.name for c in table.schema.columns] == [
        "verdict", "reason", "mean_luma", "luma_spread", "attempt", "seed", "prompt", "file", "server"]
    assert [c.type for c in table.schema.columns][2:6] == ["float", "float", "int", "int"]
    shown = rows_of(table)
    assert [(r["verdict"], r["prompt"], r["seed"]) for r in shown] == [
        ("failed", "the unlucky one", 1), ("failed", "a night that went black", 2), ("passed", "a sunny meadow", 3)]
    assert "57:3 (KSampler)" in shown[0]["reason"] and shown[0]["file"] == "" and shown[0]["mean_luma"] is None
    assert shown[1]["reason"].startswith("image is black: mean luma 0.0/255") and shown[1]["mean_luma"] == 0.0
    assert shown[1]["file"] == "01_a-night-that-went-black_seed2.png"
    assert list((out / "runs").glob(f"*/images/{shown[1]['file']}"))  # kept where it was written
    assert shown[2]["reason"].endswith("checks passed") and shown[2]["mean_luma"] > 8
    assert metadata["outputs_shown"].value.startswith("the first 3 of 4 rows, failed ones first")
    assert metadata["failed_prompts"] == dg.IntMetadataValue(1) and metadata["failed_outputs"] == dg.IntMetadataValue(1)
    assert isinstance(metadata["mean_luma_min"], dg.FloatMetadataValue)

    # The videos (of the two good images) measure motion and how like their start image they begin.
    assert videos["outputs"] == dg.IntMetadataValue(2) and videos["passed_outputs"] == dg.IntMetadataValue(2)
    for key in ("motion_min", "motion_mean", "start_similarity_min", "blank_frame_share_max"):
        assert isinstance(videos[key], dg.FloatMetadataValue), key
    assert videos["motion_min"].value > 0 and videos["output_frames"].value == "9 frames @ 8.0 fps"
    metadata, passed, description = seen["video_quality"]
    assert passed and description == "2 of 2 outputs passed every check"
    columns = [c.name for c in metadata["outputs"].schema.columns]
    assert columns[:2] == ["verdict", "reason"] and {"motion", "start_similarity"} <= set(columns)
    assert [r["verdict"] for r in rows_of(metadata["outputs"])] == ["passed", "passed"]

    # The report: one row per output and per failed prompt, failures first; counts named for what they count.
    assert {k: report[k].value for k in ("outputs", "passed_outputs", "failed_outputs", "failed_prompts")} == {
        "outputs": 5, "passed_outputs": 4, "failed_outputs": 1, "failed_prompts": 1}
    assert report["dagster/row_count"].value == 6
    table = report["report"]
    assert [c.name for c in table.schema.columns][:2] == ["verdict", "reason"]
    assert [(r["verdict"], r["asset"]) for r in rows_of(table)] == [
        ("failed", "generated_image"), ("failed", "generated_image"), ("passed", "generated_image")]
    metadata, passed, description = seen["all_outputs_valid"]
    assert not passed and description.startswith("1 of 6 prompts made no output; 1 of 5 outputs failed: ")
    assert [r["prompt"] for r in rows_of(metadata["failed_rows"])] == ["the unlucky one", "a night that went black"]

    # The files: every row, the JSON with each row's checks, the CSV flat; the run's failure names both.
    written = json.loads(Path(report["report_json"].value).read_text())
    assert [(r["job"], r["verdict"]) for r in written["rows"]] == [
        ("prompt 0", "failed"), ("prompt 1", "failed"), ("prompt 2", "passed"), ("prompt 3", "passed"),
        ("video 2", "passed"), ("video 3", "passed")]
    assert {c["name"] for c in written["rows"][4]["checks"]} >= {"decodes", "motion", "start_frame"}
    assert written["rows"][4]["motion"] == written["rows"][4]["measures"]["motion"] > 0
    table = list(csv.DictReader(io.StringIO(Path(report["report_csv"].value).read_text())))
    assert list(table[0]) == COLUMNS and len(table) == 6 and "checks" not in table[0]
    assert float(table[4]["motion"]) > 0 and table[0]["mean_luma"] == "" and table[1]["mean_luma"] == "0.0"
    text = failure_text(result)
    assert "1 prompt(s) failed and 1 of 5 output(s) failed their checks" in text
    assert "prompt 0 ('the unlucky one'): ComfyUI prompt" in text and "image is black" in text
