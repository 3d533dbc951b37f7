"""The real-server tier with the outputs on an object store: the model-free workflows on a real ComfyUI, the
image fetched from the bucket and uploaded to the server for the video, everything checked and kept in the
bucket (a real S3 API server on loopback)."""

import io
import os

import dagster as dg
import pytest
from PIL import Image

from comfy_pipeline.definitions import defs

URL = os.environ.get("COMFYUI_URL")
pytestmark = [
    pytest.mark.real_comfyui,
    pytest.mark.skipif(not URL, reason="set COMFYUI_URL to a real ComfyUI to run the real-server tier"),
]


def test_the_pipeline_on_a_real_server_keeps_its_outputs_in_a_bucket(s3_env, monkeypatch):
    bucket = s3_env.new_bucket()
    monkeypatch.setenv("COMFY_PIPELINE_OUTPUT_DIR", f"s3://{bucket}/pipe")  # the IO manager follows it too
    config = {
        "resources": {"comfy": {"config": {"url": URL}},
                      "quality": {"config": {"image_min_bytes": 100, "video_min_bytes": 100}}},  # flat colours
        "ops": {"generated_image": {"config": {"workflow": "smoke_image"}},
                "ltx2_video": {"config": {"workflow": "smoke_video"}},
                "prompt": {"config": {"prompts": [
                    {"text": "real-server s3 smoke", "width": 320, "height": 256, "frames": 9, "fps": 8}]}}},
    }
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("image_to_video_job").execute_in_process(
            run_config=config, instance=instance, raise_on_error=False)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        assert all(e.passed for e in result.get_asset_check_evaluations())
    keys = s3_env.keys(bucket, "pipe/")
    (png,) = [k for k in keys if k.endswith(".png")]
    (mp4,) = [k for k in keys if k.endswith(".mp4")]
    assert png.startswith("pipe/runs/") and "/images/" in png and "/videos/" in mp4
    with Image.open(io.BytesIO(s3_env.read(bucket, png))) as picture:
        assert picture.size == (320, 256)
    assert {k.split("/")[2] for k in keys if k.startswith("pipe/manifests/")} == {
        "prompt", "generated_image", "ltx2_video", "validation_report"}
    assert s3_env.uploads(bucket) == []
