"""Media checks without Dagster: probe images and videos, validate them against the request, make previews."""

from comfy_pipeline.media.checks import Check, ImageThresholds, VideoThresholds, check_image, check_video
from comfy_pipeline.media.content import (
    CONTENT_CHECKS,
    MEASURE_KEYS,
    ContentThresholds,
    Validation,
    validate_image,
    validate_video,
)
from comfy_pipeline.media.previews import image_preview_markdown, video_preview_markdown
from comfy_pipeline.media.probe import ImageInfo, MediaError, VideoInfo, probe_image, probe_video, sha256_file

__all__ = [
    "CONTENT_CHECKS",
    "ContentThresholds",
    "MEASURE_KEYS",
    "Validation",
    "Check",
    "ImageInfo",
    "ImageThresholds",
    "MediaError",
    "VideoInfo",
    "VideoThresholds",
    "check_image",
    "check_video",
    "image_preview_markdown",
    "probe_image",
    "probe_video",
    "sha256_file",
    "validate_image",
    "validate_video",
    "video_preview_markdown",
]
