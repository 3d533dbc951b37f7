"""The baseline: a ComfyUI client written the way the seed design does it, to measure ours against.

Submit, poll GET /history/{id} every 5 s (the seed's `wait_for_completion(poll_interval=5)`), download each
output into memory with `response.content`, write it out, then submit the next prompt. Its validator checks
what the seed's QualityValidator checks: format, size range, and (videos) a duration > 0 from ffprobe.
Deliberately naive: it is the yardstick, not something to use.
"""

import json
import subprocess
import time
from pathlib import Path

import requests
from PIL import Image

from comfy_pipeline.media.binaries import ffprobe_path

POLL_SECONDS = 5.0
CLIENT_DESCRIPTION = "seed-style client: serial submit, poll /history every 5 s, download into memory"
VALIDATOR_DESCRIPTION = "seed-style validator: extension, size, ffprobe duration > 0"
IMAGE_FORMATS = ("PNG", "JPEG")
IMAGE_MIN_BYTES, IMAGE_MAX_BYTES = 10 * 1024, 50 * 1024**2
VIDEO_FORMATS = (".mp4", ".webm")
VIDEO_MIN_BYTES, VIDEO_MAX_BYTES = 100 * 1024, 500 * 1024**2


class BaselineClient:
    def __init__(self, base_url: str, *, poll_seconds: float = POLL_SECONDS, timeout: float = 900.0):
        self.base = base_url.rstrip("/")
        self.poll_seconds = poll_seconds
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False

    def close(self) -> None:
        self.session.close()

    def submit(self, workflow: dict) -> str:
        response = self.session.post(f"{self.base}/prompt", json={"prompt": workflow, "client_id": "test_runner"})
        response.raise_for_status()
        return response.json()["prompt_id"]

    def wait_for_completion(self, prompt_id: str) -> dict:
        """The history entry, once GET /history/{id} has one; looks every `poll_seconds`."""
        deadline = time.monotonic() + self.timeout
        while True:
            history = self.session.get(f"{self.base}/history/{prompt_id}").json()
            if prompt_id in history:
                return history[prompt_id]
            if time.monotonic() > deadline:
                raise TimeoutError(f"prompt {prompt_id} did not finish within {self.timeout} s")
            time.sleep(self.poll_seconds)

    def download(self, item: dict) -> bytes:
        params = {"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                  "type": item.get("type", "output")}
        response = self.session.get(f"{self.base}/view", params=params)
        response.raise_for_status()
        return response.content  # the whole file in memory

    def upload_image(self, path: Path) -> str:
        with open(path, "rb") as handle:
            response = self.session.post(f"{self.base}/upload/image", files={"image": (path.name, handle.read())})
        response.raise_for_status()
        return response.json()["name"]

    def run(self, workflow: dict, dest_dir: Path) -> tuple[str, float, list[Path]]:
        """Submit, wait, download every output: (prompt_id, time.monotonic() when it knew it was done, files)."""
        prompt_id = self.submit(workflow)
        entry = self.wait_for_completion(prompt_id)
        noticed = time.monotonic()
        files = []
        for item in output_items(entry):
            path = dest_dir / item["filename"].rsplit("/", 1)[-1]
            path.write_bytes(self.download(item))
            files.append(path)
        return prompt_id, noticed, files


def output_items(entry: dict) -> list[dict]:
    return [
        item
        for node_output in (entry.get("outputs") or {}).values()
        for items in node_output.values()
        if isinstance(items, list)
        for item in items
        if isinstance(item, dict) and "filename" in item
    ]


def validate_image(path: Path) -> bool:
    """The seed's image criteria: PNG or JPEG, 10 KB - 50 MB, width and height > 0."""
    if not IMAGE_MIN_BYTES <= path.stat().st_size <= IMAGE_MAX_BYTES:
        return False
    with Image.open(path) as picture:
        return picture.format in IMAGE_FORMATS and picture.width > 0 and picture.height > 0


def validate_video(path: Path) -> bool:
    """The seed's video criteria: MP4 or WebM, 100 KB - 500 MB, duration > 0 (one ffprobe call)."""
    if path.suffix.lower() not in VIDEO_FORMATS:
        return False
    if not VIDEO_MIN_BYTES <= path.stat().st_size <= VIDEO_MAX_BYTES:
        return False
    probe = subprocess.run(
        [ffprobe_path(), "-v", "error", "-show_format", "-of", "json", str(path)],
        capture_output=True, timeout=60, check=False,
    )
    try:
        return float(json.loads(probe.stdout)["format"]["duration"]) > 0
    except (ValueError, KeyError):
        return False
