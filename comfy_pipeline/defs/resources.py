"""Dagster resources: the ComfyUI server and the quality thresholds of the output checks."""

import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
from pydantic import Field, PrivateAttr

from comfy_pipeline.comfyui.redaction import redact_url
from comfy_pipeline.media import ImageThresholds, VideoThresholds

SIMULATOR = "simulator"
COMFYUI = "comfyui"


class ComfyUIResource(dg.ConfigurableResource):
    """A ComfyUI server. With no `url` (env COMFYUI_URL unset), an offline ComfyUI simulator is started on
    loopback for the run, and everything it makes is labelled `backend: simulator`.

    Setting it up is free (it also happens on every sensor tick): the server is contacted, or the
    simulator started, only when a step first asks for the client.

    URL and credentials left unset fall back to the environment when the client is made: a run config that
    sets any field of this resource (`comfy-pipeline check` sets the URL, a launchpad user the timeout)
    replaces its whole definition-time config, EnvVars included, and the run must not lose its server or
    credentials because of that.
    """

    url: str | None = Field(default=None, description="ComfyUI base URL, e.g. http://gpu-box:8188 (env COMFYUI_URL). Unset: the embedded simulator.")
    token: str | None = Field(default=None, description="Bearer token for a proxy in front of ComfyUI (env COMFYUI_TOKEN).")
    username: str | None = Field(default=None, description="Basic-auth user (env COMFYUI_USERNAME).")
    password: str | None = Field(default=None, description="Basic-auth password (env COMFYUI_PASSWORD).")
    connect_timeout: float = Field(default=5.0, description="Seconds to wait for a TCP connection.")
    request_timeout: float = Field(default=30.0, description="Seconds to wait for an HTTP answer.")
    prompt_timeout: float = Field(default=900.0, gt=0, description="Seconds one prompt may run on the server, counted from the moment it starts executing; past it the prompt is cancelled.")
    queue_timeout: float = Field(default=3600.0, gt=0, description="Seconds one prompt may wait in the server's queue (behind other work) before it starts; past it the prompt is cancelled.")
    max_in_flight: int = Field(default=4, ge=1, description="Prompts queued on the server at once, so the GPU never waits for us.")
    server_down_timeout: float = Field(default=60.0, gt=0, description="Seconds a server that stopped answering is waited for before its prompts fail.")
    max_download_bytes: int = Field(default=2 * 1024**3, ge=1, description="Largest output file accepted; a bigger one is refused before anything is written.")
    output_dir: str | None = Field(default=None, description="Where outputs go (env COMFY_PIPELINE_OUTPUT_DIR; default ./comfy_outputs).")
    simulator_image_seconds: float = Field(default=0.2, description="Simulated GPU time per image (simulator only).")
    simulator_video_seconds: float = Field(default=1.0, description="Simulated GPU time per video (simulator only).")

    _client: Any = PrivateAttr(default=None)  # a ComfyUIClient, made on first use
    _simulator: Any = PrivateAttr(default=None)
    _connect_seconds: float = PrivateAttr(default=0.0)

    @property
    def output_path(self) -> Path:
        """The output folder; like the URL it falls back to the environment when the run config leaves it out."""
        # Absolute, so the paths recorded in metadata and reports lead to the files from anywhere.
        return Path(self.output_dir or os.environ.get("COMFY_PIPELINE_OUTPUT_DIR") or "comfy_outputs").absolute()

    @property
    def display_url(self) -> str:
        if self._client is not None:
            return self._client.url
        url = self.url or os.environ.get("COMFYUI_URL")
        return redact_url(url) if url else "embedded simulator"

    def _credentials(self) -> dict[str, str | None]:
        configured = {"token": self.token, "username": self.username, "password": self.password}
        if any(configured.values()):
            return {k: v or None for k, v in configured.items()}
        return {k: os.environ.get(f"COMFYUI_{k.upper()}") or None for k in configured}

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        run = context.dagster_run
        if run is not None:
            refuse_secrets_in_run_config(run.run_config)

    def configured_url(self) -> str | None:
        """The server's URL from config, the environment or a running `comfy-pipeline server` session; None
        means the embedded simulator."""
        return self.url or os.environ.get("COMFYUI_URL") or _recorded_session_url()

    def close(self) -> None:
        """Close the client and stop the embedded simulator, if any (also done after every run)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._simulator is not None:
            self._simulator.stop()
            self._simulator = None

    def get_client(self):
        """The ComfyUIClient of this run (starting the embedded simulator when there is no server)."""
        if self._client is None:
            from comfy_pipeline.comfyui.client import ComfyUIClient

            started = time.monotonic()
            url = self.configured_url()
            if not url:
                from comfy_pipeline.simulator import Simulator  # only needed for the embedded default

                self._simulator = Simulator(
                    image_seconds=self.simulator_image_seconds, video_seconds=self.simulator_video_seconds
                ).start()
                url = self._simulator.url
            self._client = ComfyUIClient(
                url,
                **self._credentials(),
                connect_timeout=self.connect_timeout,
                read_timeout=self.request_timeout,
                server_down_timeout=self.server_down_timeout,
                max_download_bytes=self.max_download_bytes,
            )
            self._connect_seconds = time.monotonic() - started
        return self._client

    def server_info(self) -> dict[str, Any]:
        """Backend, version, GPU and VRAM from /system_stats; raises ServerUnreachable when down."""
        started = time.monotonic()
        client = self.get_client()
        stats = client.system_stats()
        devices = stats.get("devices") or [{}]
        device = devices[0]
        # A URL can point at `comfy-pipeline simulator` too: trust what the server says it is.
        simulated = self._simulator is not None or "simulator" in str(device.get("name", "")).lower()
        return {
            "backend": SIMULATOR if simulated else COMFYUI,
            "url": client.url,
            "comfyui_version": (stats.get("system") or {}).get("comfyui_version"),
            "gpu": device.get("name"),
            "vram_total_gb": round((device.get("vram_total") or 0) / 1024**3, 2),
            "vram_free_gb": round((device.get("vram_free") or 0) / 1024**3, 2),
            "connection_s": round(self._connect_seconds + time.monotonic() - started, 4),
        }

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()


SECRET_FIELDS = {"token": "COMFYUI_TOKEN", "password": "COMFYUI_PASSWORD"}


def refuse_secrets_in_run_config(run_config: dict) -> None:
    """Dagster stores run config in its run database as it is, so a credential written there is readable by
    anyone who can read runs. Refuse it (the run fails before it talks to any server) and name the variable."""
    config = (((run_config or {}).get("resources") or {}).get("comfy") or {}).get("config") or {}
    for field, variable in SECRET_FIELDS.items():
        if isinstance(config.get(field), str) and config[field]:
            raise dg.Failure(
                description=f"resources.comfy.config.{field} holds a secret in the run config, which Dagster "
                f"stores in plain text: remove it and set the environment variable {variable} instead "
                f"(or write {{env: {variable}}}).",
                allow_retries=False,
            )
    url = config.get("url")
    if isinstance(url, str) and urlsplit(url if "://" in url else f"http://{url}").username is not None:
        raise dg.Failure(
            description=f"resources.comfy.config.url carries a user and password ({redact_url(url)}), and run "
            "config is stored in plain text: give the URL without them and set COMFYUI_USERNAME and "
            "COMFYUI_PASSWORD in the environment.",
            allow_retries=False,
        )


def gpu_pool(url: str | None = None) -> str:
    """The Dagster pool of a ComfyUI server: steps in one pool share its concurrency limit (dagster.yaml
    `concurrency.pools`), so runs against one GPU take turns instead of timing each other out. Named after the
    server's host and port (env COMFYUI_URL when the definitions load; the embedded simulator is per run)."""
    url = url if url is not None else os.environ.get("COMFYUI_URL")
    if not url:
        return "comfyui-embedded"
    parts = urlsplit(url if "://" in url else f"http://{url}")
    host = (parts.hostname or "localhost").replace(".", "-").replace(":", "-")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"comfyui-{host}-{port}"


def _recorded_session_url() -> str | None:
    """The URL of a session started with `comfy-pipeline server start`, if one is running."""
    from comfy_pipeline.cli.session import SessionError, current_session

    try:
        session = current_session()
    except SessionError:
        return None
    return session.url if session else None


class QualityThresholds(dg.ConfigurableResource):
    """Limits of the output checks (the seed design's quality validator)."""

    image_formats: list[str] = ["PNG", "JPEG"]
    image_min_bytes: int = 10 * 1024
    image_max_bytes: int = 50 * 1024**2
    video_containers: list[str] = ["mp4", "webm"]
    video_min_bytes: int = 100 * 1024
    video_max_bytes: int = 500 * 1024**2

    def image(self) -> ImageThresholds:
        return ImageThresholds(tuple(self.image_formats), self.image_min_bytes, self.image_max_bytes)

    def video(self) -> VideoThresholds:
        return VideoThresholds(tuple(self.video_containers), self.video_min_bytes, self.video_max_bytes)
