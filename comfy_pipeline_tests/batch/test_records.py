"""The typed records: JSON at the edges, and manifests written by older versions still load."""

import json
from pathlib import Path

from comfy_pipeline.batch.outputs import RunFolder
from comfy_pipeline.batch.records import (
    CheckResult,
    FailedPrompt,
    GenerationManifest,
    Lineage,
    OutputItem,
    PromptManifest,
    ReportManifest,
    ServerInfo,
)
from comfy_pipeline.batch.report import write_report
from comfy_pipeline.storage import LocalStore
from comfy_pipeline.workflows.prompts import PromptSpec

SPEC = {"text": "a red fox", "motion_prompt": None, "negative_prompt": None, "seed": 7, "width": 512,
        "height": 384, "frames": 17, "fps": 24}
CHECKS = [{"name": "format", "passed": True, "value": "PNG", "expected": "PNG or JPEG", "message": "ok"},
          {"name": "dimensions", "passed": False, "value": "10x10", "expected": "512x384", "message": "too small"}]

# What the image asset stored before items named their server (the first version with the manifest IO manager,
# d4ee6c9), as the IO manager hands it downstream: the stored value plus its `source`.
OLD_IMAGE_MANIFEST = {
    "items": [{
        "job": "prompt 0", "prompt": "a red fox", "spec": SPEC, "seed": 7, "requested_size": "512x384",
        "workflow": "z_image_turbo", "workflow_sha256": "ab" * 32, "prompt_id": "5f0c1c52-0000-4000-8000-000000000000",
        "backend": "simulator", "comfyui_version": "0.33.0", "gpu": "simulated", "path": "/out/00_a-red-fox.png",
        "size_bytes": 12345, "sha256": "cd" * 32, "timings_s": {"queue_wait": 0.1, "execution": 1.0},
        "cached_nodes": [], "checks": CHECKS, "width": 10, "height": 10, "format": "PNG",
    }],
    "failed": [{
        "job": "prompt 1", "prompt": "a blue fox", "spec": {**SPEC, "text": "a blue fox"}, "prompt_id": "p-1",
        "error": "ComfyUI prompt p-1 failed in node 57:3 (KSampler): RuntimeError: boom",
        "error_type": "ExecutionError", "comfyui_node": "57:3 (KSampler)",
    }],
    "backend": "simulator", "comfyui_url": "http://127.0.0.1:8188", "workflow": "z_image_turbo",
    "workflow_sha256": "ab" * 32, "timings_s": {"connection": 0.01, "execution": 1.0},
    "source": {"run_id": "old-run", "how": "latest materialization"},
}


def test_an_old_image_manifest_loads_with_defaults_for_what_it_did_not_record():
    manifest = GenerationManifest.from_json(OLD_IMAGE_MANIFEST)
    (item,) = manifest.items
    assert item.job == "prompt 0" and item.spec == PromptSpec(**SPEC) and item.seed == 7
    assert item.comfyui_url == "" and item.facts == {"width": 10, "height": 10, "format": "PNG"}
    assert item.measures == {} and item.attempt == 1 and manifest.rejected == ()
    assert item.checks[1] == CheckResult("dimensions", False, "10x10", "512x384", "too small") and not item.passed
    (failed,) = manifest.failed
    assert failed.comfyui_url is None and failed.comfyui_node == "57:3 (KSampler)" and failed.server_traceback == ()
    assert manifest.source == Lineage("old-run", "latest materialization")


def test_an_old_manifest_still_makes_a_report(tmp_path):
    old = GenerationManifest.from_json(OLD_IMAGE_MANIFEST)
    report = write_report(_folder(tmp_path), "run-1", {"generated_image": old})
    rows = json.loads(Path(report.json_path).read_text())["rows"]
    assert [(r["job"], r["verdict"], r["reason"]) for r in rows] == [
        ("prompt 0", "failed", "too small"),
        ("prompt 1", "failed", "ComfyUI prompt p-1 failed in node 57:3 (KSampler): RuntimeError: boom")]
    assert rows[0]["mean_luma"] is None and rows[0]["attempt"] == 1 and len(rows[0]["checks"]) == 2


def test_what_is_written_reads_back_the_same():
    item = OutputItem.from_json(OLD_IMAGE_MANIFEST["items"][0])
    failed = FailedPrompt("prompt 1", "a blue fox", PromptSpec(text="a blue fox"), "boom", "ExecutionError",
                          "57:3 (KSampler)", "p-1", "http://gpu:8188", ('  File "x.py", line 1\n',))
    manifest = GenerationManifest((item,), (failed,), "comfyui", "http://gpu:8188", "z", "ab", {"execution": 1.0})
    again = GenerationManifest.from_json(json.loads(json.dumps(manifest.to_json())))
    assert again.items == (item,)
    assert again.failed[0] == FailedPrompt(**{**failed.__dict__, "server_traceback": ()})  # not in the manifest
    assert again.timings_s == {"execution": 1.0} and again.backend == "comfyui" and again.source is None
    spec_json = OutputItem.from_json(OLD_IMAGE_MANIFEST["items"][0]).to_json()
    new_keys = ("comfyui_url", "measures", "attempt")
    assert {k: v for k, v in spec_json.items() if k not in new_keys} == OLD_IMAGE_MANIFEST["items"][0]


def test_measures_attempts_and_rejected_attempts_read_back_the_same():
    first = OutputItem.from_json(OLD_IMAGE_MANIFEST["items"][0])
    black = CheckResult("brightness", False, 0.0, ">= 16.0", "image is black: mean luma 0.0/255, spread 0.0")
    rejected = OutputItem(**{**first.__dict__, "checks": first.checks + (black,),
                             "measures": {"mean_luma": 0.0, "luma_spread": 0.0, "one_colour_share": None}})
    kept = OutputItem(**{**first.__dict__, "spec": PromptSpec(**{**SPEC, "seed": 8}), "attempt": 2,
                         "measures": {"mean_luma": 112.5, "luma_spread": 40.25, "one_colour_share": 0.01}})
    raw = json.loads(json.dumps(GenerationManifest((kept,), rejected=(rejected,)).to_json()))
    assert raw["items"][0]["measures"]["mean_luma"] == 112.5 and raw["items"][0]["attempt"] == 2
    assert raw["rejected"][0]["checks"][-1]["message"].startswith("image is black")
    again = GenerationManifest.from_json(raw)
    assert again.items == (kept,) and again.rejected == (rejected,) and again.items[0].seed == 8
    assert again.rejected[0].measures["one_colour_share"] is None and not again.rejected[0].passed
    assert GenerationManifest.from_json(again.listing_json()).rejected == (rejected,)


def test_the_server_traceback_goes_only_into_the_items_listing():
    failed = FailedPrompt("prompt 0", "a fox", PromptSpec(text="a fox"), "RuntimeError: boom",
                          server_traceback=('  File "/srv/ComfyUI/nodes.py", line 9\n',))
    manifest = GenerationManifest((), (failed,))
    assert "server_traceback" not in manifest.to_json()["failed"][0]
    assert manifest.listing_json()["failed"][0]["server_traceback"] == ['  File "/srv/ComfyUI/nodes.py", line 9\n']
    assert FailedPrompt.from_json(manifest.listing_json()["failed"][0]) == failed


def test_the_other_records_round_trip():
    info = ServerInfo("comfyui", "http://a:8188", ("http://a:8188",), "0.33.0", "RTX 4090", 24.0, 20.5, (), 0.12)
    assert ServerInfo.from_json(json.loads(json.dumps(info.to_json()))) == info
    prompts = PromptManifest((PromptSpec(text="a fox", extra={"source": "prompts.json"}),))
    raw = {**json.loads(json.dumps(prompts.to_json())), "source": {"run_id": "r", "how": "this run"}}
    assert PromptManifest.from_json(raw).prompts == prompts.prompts
    assert PromptManifest.from_json(raw).source == Lineage("r", "this run")
    report = ReportManifest("/r.json", "/r.csv", 3, 1)
    assert ReportManifest.from_json(report.to_json()) == report


def test_server_info_of_several_servers_lists_each_once():
    a = ServerInfo("comfyui", "http://a:8188", ("http://a:8188",), "0.33.0", "RTX 4090", 24.0, 20.0)
    b = ServerInfo("simulator", "http://b:8188", ("http://b:8188",), "0.33.0", "sim", 8.0, 8.0)
    both = ServerInfo.combine([a, b], ["http://c:8188: refused"], 0.123456)
    assert both.backend == "simulator" and both.servers == ("http://a:8188", "http://b:8188")
    assert both.comfyui_version == "0.33.0" and both.gpu == "RTX 4090, sim" and both.vram_total_gb == 32.0
    assert both.unreachable == ("http://c:8188: refused",) and both.connection_s == 0.1235


def _folder(path: Path) -> RunFolder:
    return RunFolder(LocalStore(path), "run")
