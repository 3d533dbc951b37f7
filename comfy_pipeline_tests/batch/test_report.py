"""The validation report a person reads: one row per output, verdict and reason first, then the content measures;
earlier attempts that were regenerated and prompts without output are rows too. Real files, real checks."""

import csv
import io
import json
from pathlib import Path

from PIL import Image

from comfy_pipeline.batch.outputs import RunFolder
from comfy_pipeline.batch.records import CheckResult, FailedPrompt, GenerationManifest, OutputItem
from comfy_pipeline.batch.report import COLUMNS, batch_figures, verdict, write_report
from comfy_pipeline.media import ImageThresholds, validate_image
from comfy_pipeline.storage import LocalStore
from comfy_pipeline.workflows.prompts import PromptSpec

SIZE = (256, 192)


def _item(path: Path, job: str, text: str, seed: int, attempt: int = 1, server: str = "http://gpu-a:8188"):
    """An output as the step records it: the real checks and measures of the file at `path`."""
    spec = PromptSpec(text=text, seed=seed, width=SIZE[0], height=SIZE[1])
    found = validate_image(path, width=SIZE[0], height=SIZE[1], thresholds=ImageThresholds(min_bytes=1))
    return OutputItem(job=job, prompt=text, spec=spec, path=str(path), checks=tuple(map(CheckResult.of, found.checks)),
                      comfyui_url=server, measures=found.measures, attempt=attempt,
                      timings_s={"validation": 0.05})


def _manifest(tmp_path: Path) -> GenerationManifest:
    black, flat, good = tmp_path / "black.png", tmp_path / "flat.png", tmp_path / "good.png"
    Image.new("RGB", SIZE, (0, 0, 0)).save(black)
    Image.new("RGB", SIZE, (120, 160, 200)).save(flat)
    Image.effect_noise(SIZE, 60).convert("RGB").save(good)
    long_text = "a lighthouse on a cliff at dusk, waves breaking below, gulls overhead, " * 3
    kept = _item(good, "prompt 0", "a red fox in snow", seed=8, attempt=2)
    rejected = _item(black, "prompt 0", "a red fox in snow", seed=7, attempt=1)
    still_flat = _item(flat, "prompt 2", long_text, seed=3, server="http://gpu-b:8188")
    failed = FailedPrompt("prompt 1", "the unlucky one", PromptSpec(text="the unlucky one", seed=5),
                          "ComfyUI prompt p-1 failed in node 57:3 (KSampler): RuntimeError: CUDA error",
                          "ExecutionError", "57:3 (KSampler)", "p-1", "http://gpu-a:8188",
                          ('Traceback (most recent call last):\n', '  File "/srv/ComfyUI/nodes.py", line 9\n'))
    return GenerationManifest((kept, still_flat), (failed,), "comfyui", "http://gpu-a:8188", rejected=(rejected,))


def test_one_row_per_output_verdict_and_reason_first_then_the_measures(tmp_path):
    report = write_report(_folder(tmp_path / "reports"), "run-1", {"generated_image": _manifest(tmp_path)})
    written = json.loads(Path(report.json_path).read_text())
    rows = written["rows"]
    # Prompt order, a prompt's earlier attempt before the one it kept; the failed prompt in its place.
    assert [(r["job"], r["verdict"], r["attempt"], r["seed"]) for r in rows] == [
        ("prompt 0", "regenerated", 1, 7), ("prompt 0", "passed", 2, 8), ("prompt 1", "failed", 1, 5),
        ("prompt 2", "failed", 1, 3)]
    regenerated, kept, no_output, flat = rows
    assert regenerated["reason"].startswith("image is black: mean luma 0.0/255")
    assert regenerated["mean_luma"] == 0.0 and regenerated["path"].endswith("black.png")
    assert kept["reason"] == f"{len(kept['checks'])} checks passed" and kept["mean_luma"] > 60
    assert kept["luma_spread"] > 20 and kept["motion"] is None  # an image has no motion: not measured
    assert no_output["reason"] == "ComfyUI prompt p-1 failed in node 57:3 (KSampler): RuntimeError: CUDA error"
    assert no_output["path"] == "" and no_output["checks"] == [] and no_output["server"] == "http://gpu-a:8188"
    assert flat["reason"].startswith("image is flat: luma spread 0.0") and flat["server"] == "http://gpu-b:8188"
    assert flat["prompt"].endswith("...") and len(flat["prompt"]) == 60  # short; the full text is in the items
    assert {c["name"] for c in flat["checks"]} >= {"format", "decodes", "brightness", "detail"}  # every check
    assert list(rows[0])[:len(COLUMNS)] == COLUMNS
    assert (written["outputs"], written["passed"], written["failed"]) == (2, 1, 2)
    assert (written["failed_outputs"], written["failed_prompts"], written["regenerated"]) == (1, 1, 1)
    kept_lumas = (kept["mean_luma"], flat["mean_luma"])  # not the black attempt's: it was not kept
    assert written["batches"]["generated_image"]["mean_luma_min"] == min(kept_lumas) > 0

    text = Path(report.csv_path).read_text()
    assert text.splitlines()[0] == ",".join(COLUMNS)  # flat: verdict and reason first
    table = list(csv.DictReader(io.StringIO(text)))
    assert [r["verdict"] for r in table] == ["regenerated", "passed", "failed", "failed"]
    assert float(table[1]["mean_luma"]) == kept["mean_luma"] and table[1]["motion"] == ""
    assert "Traceback" not in text and 'File "' not in text and "Traceback" not in Path(report.json_path).read_text()


def test_the_failure_names_every_failed_prompt_and_output_with_its_reason(tmp_path):
    report = write_report(_folder(tmp_path), "run-1", {"generated_image": _manifest(tmp_path)})
    text = report.failure()
    first, *lines = text.splitlines()
    assert first.startswith("1 prompt(s) failed and 1 of 2 output(s) failed their checks") and first.endswith(":")
    assert lines[0] == ("prompt 1 ('the unlucky one'): ComfyUI prompt p-1 failed in node 57:3 (KSampler): "
                        "RuntimeError: CUDA error")
    assert lines[1].startswith("prompt 2 ('a lighthouse on a cliff at dusk, waves breaking below, gu...'): ")
    assert f"...'): {tmp_path / 'flat.png'}: image is flat: luma spread 0.0" in lines[1]
    assert len(lines) == 2  # the regenerated attempt is no failure: its prompt kept a good output
    only_outputs = write_report(_folder(tmp_path / "again"), "run-2", {"generated_image": GenerationManifest(
        _manifest(tmp_path).items)}).failure()
    assert only_outputs.startswith("1 of 2 output(s) failed their checks; everything good was made")
    said = verdict(report.rows)
    assert said.startswith("1 of 3 prompts made no output; 1 of 2 outputs failed (1 earlier attempts failed and "
                           "were regenerated): prompt 1 ('the unlucky one'): ")


def test_batch_figures_count_what_they_name_and_take_the_kept_outputs_measures(tmp_path):
    manifest = _manifest(tmp_path)
    figures = batch_figures(manifest)
    assert {k: figures[k] for k in ("prompts", "outputs", "passed_outputs", "failed_outputs", "failed_prompts",
                                    "regenerated")} == {"prompts": 3, "outputs": 2, "passed_outputs": 1,
                                                        "failed_outputs": 1, "failed_prompts": 1, "regenerated": 1}
    lumas = [item.measures["mean_luma"] for item in manifest.items]
    assert figures["mean_luma_mean"] == round(sum(lumas) / 2, 4) and figures["mean_luma_min"] == min(lumas)
    assert "motion_min" not in figures and "motion_mean" not in figures  # not measured: no figure, not a zero
    assert figures["validation_s"] == 0.1 and figures["validation_s_mean"] == 0.05
    assert all(isinstance(v, (int, float)) for v in figures.values())


def test_a_batch_that_passed_says_so(tmp_path):
    good = tmp_path / "good.png"
    Image.effect_noise(SIZE, 60).convert("RGB").save(good)
    manifest = GenerationManifest((_item(good, "prompt 0", "a fox", 1), _item(good, "prompt 1", "a hare", 2)))
    report = write_report(_folder(tmp_path), "run-2", {"generated_image": manifest})
    assert verdict(report.rows) == "2 of 2 outputs passed every check" and not report.failed
    assert json.loads(Path(report.json_path).read_text())["failed"] == 0


def _folder(path: Path) -> RunFolder:
    return RunFolder(LocalStore(path), "run")
