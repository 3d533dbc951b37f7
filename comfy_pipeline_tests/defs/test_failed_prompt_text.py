"""What a person reads when a prompt fails, through a real Dagster run on the simulator: the exception type,
message and node in the check message, the report row and the run failure; ComfyUI's Python traceback only in
the items report (JSON). And a manifest an older version wrote still feeds a run."""

import json
from pathlib import Path

import dagster as dg
from PIL import Image

from comfy_pipeline_tests.support.helpers import SMALL, execute, failure_text, materializations, run_config

TRACEBACK_MARKS = ('File "', "Traceback", "^^^", "executor.py", "line ")


def _no_traceback(text: str) -> bool:
    return not any(mark in text for mark in TRACEBACK_MARKS)


def test_a_failed_prompt_reads_as_type_message_and_node_with_its_traceback_only_in_the_items_json(simulator, tmp_path):
    simulator.set_fault("execution-error", count=1)  # the first prompt to run meets a node error
    prompts = [{"text": "the unlucky one", **SMALL}, {"text": "the lucky one", **SMALL, "seed": 9}]
    with dg.instance_for_test() as instance:
        result = execute("image_to_video_job", instance, run_config(simulator.url, tmp_path / "out", prompts))
        assert not result.success

        run_failure = failure_text(result)
        assert "prompt 0 ('the unlucky one')" in run_failure and "node 57:3 (KSampler)" in run_failure
        assert "RuntimeError: CUDA error" in run_failure and _no_traceback(run_failure)

        (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "image_quality"]
        assert not check.passed and "RuntimeError: CUDA error" in check.description
        assert _no_traceback(check.description)

        (report,) = materializations(result, "validation_report")
        rows = json.loads(Path(report.metadata["report_json"].value).read_text())["rows"]
        (row,) = [r for r in rows if r["verdict"] == "failed"]
        assert "57:3 (KSampler)" in row["reason"] and _no_traceback(row["reason"])
        csv = Path(report.metadata["report_csv"].value).read_text()
        assert "CUDA error" in csv and _no_traceback(csv)

        (images,) = materializations(result, "generated_image")
        (failed,) = json.loads(Path(images.metadata["items_json"].value).read_text())["failed"]
        assert failed["error_type"] == "ExecutionError" and failed["comfyui_node"] == "57:3 (KSampler)"
        assert _no_traceback(failed["error"])
        frames = "".join(failed["server_traceback"])
        assert 'File "' in frames and "CUDA error" in frames  # for whoever needs it: the server's own traceback
        manifest = result.asset_value("generated_image")
        assert "server_traceback" not in manifest["failed"][0]  # not handed downstream, not in the run's storage


def _old_manifest(image: Path) -> dict:
    """generated_image's value as the first version with the manifest IO manager (d4ee6c9) stored it: items
    without the server that made them."""
    spec = {"text": "an old fox", "motion_prompt": None, "negative_prompt": None, "seed": 7, "width": 512,
            "height": 384, "frames": 17, "fps": 24}
    checks = [{"name": name, "passed": True, "value": None, "expected": None, "message": "ok"}
              for name in ("format", "file_size", "decodes", "dimensions")]
    item = {"job": "prompt 2", "prompt": "an old fox", "spec": spec, "seed": 7, "requested_size": "512x384",
            "workflow": "z_image_turbo", "workflow_sha256": "ab" * 32, "prompt_id": "p-old", "backend": "simulator",
            "comfyui_version": "0.33.0", "gpu": "simulated", "path": str(image), "size_bytes": image.stat().st_size,
            "sha256": "cd" * 32, "timings_s": {"execution": 1.0}, "cached_nodes": [], "checks": checks,
            "width": 512, "height": 384, "format": "PNG"}
    return {"items": [item], "failed": [], "backend": "simulator", "comfyui_url": "http://127.0.0.1:1",
            "workflow": "z_image_turbo", "workflow_sha256": "ab" * 32, "timings_s": {"execution": 1.0}}


def test_a_manifest_an_older_version_wrote_still_feeds_the_video_step(simulator, tmp_path):
    image = tmp_path / "old" / "02_an-old-fox_seed7.png"
    image.parent.mkdir()
    Image.effect_noise((512, 384), 64).convert("RGB").save(image)
    stored = tmp_path / "old" / "generated_image.json"
    stored.write_text(json.dumps({"asset": "generated_image", "run_id": "old", "value": _old_manifest(image)}))
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization(
            "generated_image", metadata={"manifest": dg.MetadataValue.path(str(stored))}))
        result = execute("video_generation_job", instance, run_config(simulator.url, tmp_path / "out"))
        assert result.success, failure_text(result)
        (videos,) = materializations(result, "ltx2_video")
        assert videos.metadata["outputs"].value == 1
        (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "video_quality"]
        (row,) = check.metadata["outputs"].records
        assert row.data["prompt"] == "an old fox" and row.data["seed"] == 7 and row.data["verdict"] == "passed"
        (item,) = result.asset_value("ltx2_video")["items"]
        assert item["job"] == "video 2" and item["input_image"] == str(image)
