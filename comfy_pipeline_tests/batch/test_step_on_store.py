"""A GPU step with its outputs on an object store (a real S3 API server on loopback): made and checked in a local
staging folder, then uploaded whole; an image kept on the store is fetched before it is animated."""

import io
import logging
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from comfy_pipeline.batch import step
from comfy_pipeline.batch.outputs import STAGING_PREFIX, RunFolder
from comfy_pipeline.comfyui.client import ComfyUIClient
from comfy_pipeline.media import ImageThresholds, VideoThresholds
from comfy_pipeline.storage import open_store
from comfy_pipeline.workflows.prompts import PromptSpec
from comfy_pipeline_tests.support.helpers import StepServers

SMALL = {"width": 256, "height": 256, "seed": 3}


def _staging_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob(f"{STAGING_PREFIX}*")}


def test_images_then_videos_go_to_the_bucket_whole_and_leave_no_local_files(simulator, s3_env, tmp_path):
    bucket = s3_env.new_bucket()
    store = open_store(f"s3://{bucket}/team/out")
    run_folder = RunFolder.of(store, "run-s3-1", 1_700_000_000)
    before = _staging_folders()
    with ComfyUIClient(simulator.url) as client:
        servers = StepServers([client], store)
        images = step.run_gpu_step(
            step.IMAGES, [step.Source(0, PromptSpec(text="a red fox", **SMALL))],
            workflow_name="z_image_turbo_generation", prompt_ids=[], servers=servers,
            thresholds=ImageThresholds(min_bytes=1), run_id="run-s3-1", run_folder=run_folder,
            run_ended=lambda run_id: False, log=logging.getLogger("test"))
        (image,) = images.items
        assert image.passed and image.path.startswith(f"s3://{bucket}/team/out/runs/20231114T221320Z_run-s3-1/images/")
        key = image.path[len(f"s3://{bucket}/"):]
        with Image.open(io.BytesIO(s3_env.read(bucket, key))) as picture:
            assert picture.size == (256, 256)
        assert len(s3_env.read(bucket, key)) == image.size_bytes

        sources = step.sources_from_images(images.manifest())
        assert sources[0].image is None and sources[0].image_uri == image.path  # fetched by the step itself
        videos = step.run_gpu_step(
            step.VIDEOS, sources, workflow_name="ltx2_image_to_video", prompt_ids=[], servers=servers,
            thresholds=VideoThresholds(min_bytes=1), run_id="run-s3-1", run_folder=run_folder,
            run_ended=lambda run_id: False, log=logging.getLogger("test"))
    (video,) = videos.items
    assert video.path.startswith(f"s3://{bucket}/team/out/runs/20231114T221320Z_run-s3-1/videos/")
    assert video.input_image == image.path  # the records name the image where it is kept
    assert s3_env.uploads(bucket) == []
    assert _staging_folders() <= before  # the step's local staging folder is gone


def test_a_missing_input_image_on_the_store_is_refused_before_anything_is_queued(simulator, s3_env):
    bucket = s3_env.new_bucket()
    store = open_store(f"s3://{bucket}")
    spec = PromptSpec(text="slow push-in", motion_prompt="slow push-in", frames=9, fps=8)
    sources = step.sources_from_files(spec, [f"s3://{bucket}/inbox/none.png"])
    with ComfyUIClient(simulator.url) as client:
        with pytest.raises(step.StepInputError, match="none.png does not exist"):
            step.run_gpu_step(
                step.VIDEOS, sources, workflow_name="ltx2_image_to_video", prompt_ids=[],
                servers=StepServers([client], store), thresholds=VideoThresholds(), run_id="run-s3-2",
                run_folder=RunFolder.of(store, "run-s3-2", 1_700_000_000), run_ended=lambda run_id: False,
                log=logging.getLogger("test"))
    assert simulator.busy_intervals() == [] and s3_env.keys(bucket) == []
