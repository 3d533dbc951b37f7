"""Dagster resources: the ComfyUI server and the quality thresholds of the output checks."""

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
from pydantic import Field, PrivateAttr, field_validator

from comfy_pipeline import settings
from comfy_pipeline.batch.records import COMFYUI, SIMULATOR, ServerInfo
from comfy_pipeline.comfyui.errors import ComfyUIError, NoServerConfigured
from comfy_pipeline.comfyui.redaction import redact_url
from comfy_pipeline.media import CONTENT_CHECKS, ContentThresholds, ImageThresholds, VideoThresholds
from comfy_pipeline.storage import Store


class ComfyUIResource(dg.ConfigurableResource):
    """One or several ComfyUI servers (`urls`, env COMFYUI_URLS; or `url`, env COMFYUI_URL). Each prompt goes to
    the server with the least work, and a server that stops answering hands its unstarted prompts to the others.

    The offline simulator, whose pictures are placeholders labelled `backend: simulator`, runs when it is chosen
    (`simulator` as the URL) or, for the zero-configuration local quick start, when no server is configured and
    the Dagster instance is a local one (SQLite or temporary). On a deployment's instance (PostgreSQL, or
    COMFY_PIPELINE_REQUIRE_SERVER=1) a run with no server fails instead of making placeholders.

    Setting it up is free (it also happens on every sensor tick): the server is contacted, or the
    simulator started, only when a step first asks for the client.

    Which server wins is decided by comfy_pipeline/settings.py (run config `urls`/`url` > COMFYUI_URLS >
    COMFYUI_URL > a running `comfy-pipeline server` session > the simulator), read when the client is made.
    Credentials are not fields: Dagster stores run config in plain text, so a run config naming a token or a
    password fails Dagster's config validation before a run exists. They come from the environment only
    (COMFYUI_TOKEN, or COMFYUI_USERNAME and COMFYUI_PASSWORD).
    """

    url: str | None = Field(
        default=None,
        description="ComfyUI base URL, e.g. http://gpu-box:8188; wins over COMFYUI_URLS and COMFYUI_URL. "
                    "`simulator` for the embedded simulator.",
    )
    urls: list[str] | None = Field(
        default=None,
        description="Several ComfyUI servers sharing the work (env COMFYUI_URLS, comma-separated); wins over `url`.",
    )
    connect_timeout: float = Field(default=5.0, description="Seconds to wait for a TCP connection.")
    request_timeout: float = Field(default=30.0, description="Seconds to wait for an HTTP answer.")
    prompt_timeout: float = Field(
        default=900.0, gt=0,
        description="Seconds one prompt may run on the server, counted from the moment it starts executing; "
                    "past it the prompt is cancelled.",
    )
    queue_timeout: float = Field(
        default=3600.0, gt=0,
        description="Seconds one prompt may wait in the server's queue (behind other work) before it starts; "
                    "past it the prompt is cancelled.",
    )
    max_in_flight: int = Field(
        default=4, ge=1,
        description="Prompts queued on each server at once, so its GPU never waits for us.",
    )
    server_down_timeout: float = Field(
        default=60.0, gt=0,
        description="Seconds a server that stopped answering is waited for before its prompts fail.",
    )
    max_download_bytes: int = Field(
        default=2 * 1024**3, ge=1,
        description="Largest output file accepted; a bigger one is refused before anything is written.",
    )
    output_dir: str | None = Field(
        default=None,
        description="Where outputs go: a local folder, or s3://bucket/prefix on an S3-compatible store "
                    "(env COMFY_PIPELINE_OUTPUT_DIR; default ./comfy_outputs).",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="The S3 API endpoint of an S3-compatible store (MinIO, R2, GCS); default AWS_ENDPOINT_URL, else "
                    "AWS S3. Credentials come from the standard AWS chain (environment, profile, web identity), "
                    "never from run config.",
    )
    client_id: str | None = Field(
        default=None,
        description="Advanced: the WebSocket client id (default: a new one per run). `comfy-pipeline check` sets it to "
                    "the id it queued a test's prompts under ahead of the run, so that their progress reaches the run.",
    )
    simulator_image_seconds: float = Field(default=0.2, description="Simulated GPU time per image (simulator only).")
    simulator_video_seconds: float = Field(default=1.0, description="Simulated GPU time per video (simulator only).")

    _clients: list = PrivateAttr(default_factory=list)  # ComfyUIClients, made on first use
    _simulator: Any = PrivateAttr(default=None)
    _store: Any = PrivateAttr(default=None)
    _connect_seconds: float = PrivateAttr(default=0.0)
    _deployment: bool = PrivateAttr(default=False)  # the run's instance is a deployment's: no silent simulator

    @property
    def output_path(self) -> Path:
        """The output folder, for what only a local one has; like the URL it falls back to the environment when
        the run config leaves it out. An s3:// output location is a SettingError here: use output_store."""
        return settings.output_dir(self.output_dir)

    @property
    def output_store(self) -> Store:
        """Where outputs go, a local folder or an object store (one per resource: its client is reused)."""
        location = settings.output_location(self.output_dir)
        if self._store is None or self._store.location != location:
            self._store = settings.output_store(location, endpoint_url=self.s3_endpoint_url)
        return self._store

    @property
    def display_url(self) -> str:
        if self._clients:
            return ", ".join(client.url for client in self._clients)
        try:
            urls = self.configured_urls()
        except settings.SettingError:  # the failure itself names the problem
            return "unknown (see the error)"
        return ", ".join(redact_url(url) for url in urls) if urls else "embedded simulator"

    @property
    def secrets(self) -> list[str]:
        """The credential values to scrub from anything this resource's users log."""
        return settings.credentials().secrets

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        run = context.dagster_run
        if run is not None:
            refuse_secrets_in_run_config(run.run_config)
        self._deployment = context.instance is not None and is_deployment(context.instance)

    def configured_urls(self) -> list[str]:
        """The servers, chosen as settings.choose_servers says; [] when none is configured, ["simulator"] when
        the embedded simulator was chosen. Raises settings.SettingError (a ComfyUIError) for a corrupt session
        state file or `simulator` mixed with URLs."""
        return list(settings.choose_servers(config=self.urls or [self.url]).urls)

    def configured_url(self) -> str | None:
        """The first configured server (None: nothing configured)."""
        urls = self.configured_urls()
        return urls[0] if urls else None

    def close(self) -> None:
        """Close the clients and stop the embedded simulator, if any (also done after every run)."""
        for client in self._clients:
            client.close()
        self._clients = []
        if self._simulator is not None:
            self._simulator.stop()
            self._simulator = None

    def get_clients(self) -> list:
        """One ComfyUIClient per server of this run (starting the embedded simulator when it is the server)."""
        if not self._clients:
            started = time.monotonic()
            urls = self.configured_urls()
            if not urls and (self._deployment or settings.require_server()):
                raise NoServerConfigured()
            if not urls or urls == [SIMULATOR]:
                from comfy_pipeline.simulator import (
                    Simulator,  # only needed for the embedded simulator
                )

                self._simulator = Simulator(
                    image_seconds=self.simulator_image_seconds, video_seconds=self.simulator_video_seconds
                ).start()
                urls = [self._simulator.url]
            self._clients = [
                settings.make_client(
                    url,
                    connect_timeout=self.connect_timeout,
                    read_timeout=self.request_timeout,
                    server_down_timeout=self.server_down_timeout,
                    max_download_bytes=self.max_download_bytes,
                    client_id=self.client_id,
                )
                for url in urls
            ]
            self._connect_seconds = time.monotonic() - started
        return self._clients

    def get_client(self):
        """The first server's client (the only one, unless several servers are configured)."""
        return self.get_clients()[0]

    def server_info(self) -> ServerInfo:
        """Backend, version, GPU and VRAM of every server, from /system_stats; raises ServerUnreachable when
        none answers. The servers that did not answer are named under `unreachable` (the batch leaves them out)."""
        started = time.monotonic()
        found, down = [], []
        for client in self.get_clients():
            try:
                found.append((client, client.system_stats()))
            except ComfyUIError as exc:
                if len(self._clients) == 1:
                    raise
                down.append((client.url, exc))
        if not found:
            raise down[0][1]
        infos = [_describe(client, stats, self._simulator is not None) for client, stats in found]
        return ServerInfo.combine(infos, [f"{url}: {exc}" for url, exc in down],
                                  self._connect_seconds + time.monotonic() - started)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()


def refuse_secrets_in_run_config(run_config: dict) -> None:
    """A URL with a user and password in run config: Dagster stores run config in its run database as it is, so
    refuse it (the run fails before it talks to any server). Token and password are no config fields at all:
    Dagster's config validation refuses them before a run exists."""
    config = (((run_config or {}).get("resources") or {}).get("comfy") or {}).get("config") or {}
    url = config.get("url")
    if isinstance(url, str) and urlsplit(url if "://" in url else f"http://{url}").username is not None:
        raise dg.Failure(
            description=f"resources.comfy.config.url carries a user and password ({redact_url(url)}), and run "
            "config is stored in plain text: give the URL without them and set COMFYUI_USERNAME and "
            "COMFYUI_PASSWORD in the environment.",
            allow_retries=False,
        )


def gpu_pool(urls: list[str] | str | None = None) -> str:
    """The Dagster pool of the ComfyUI servers: steps in one pool share its concurrency limit (dagster.yaml
    `concurrency.pools`), and runs carry it as their SERVER_TAG for the run queue's limit per server, so runs
    against one GPU take turns instead of timing each other out. Named after each server's host and port
    (COMFYUI_URLS / COMFYUI_URL when the definitions load; the embedded simulator is per run), e.g.
    `comfyui-gpu-a-8188` or, for two servers, `comfyui-gpu-a-8188+gpu-b-8188`."""
    if urls is None:
        urls = list(settings.environment_urls())
    found = settings.split_urls([urls] if isinstance(urls, str) else urls or [])
    if not found or found == [SIMULATOR]:
        return "comfyui-embedded"
    return "comfyui-" + "+".join(sorted(_host_port(url) for url in found))


# Every job's runs carry their servers' pool under this tag: deploy/dagster.yaml limits queued runs per value.
SERVER_TAG = "comfy_pipeline/comfyui"


def is_deployment(instance: dg.DagsterInstance) -> bool:
    """A deployment's instance (run storage in PostgreSQL or MySQL, as deploy/dagster.yaml sets up) rather
    than a laptop's (SQLite under DAGSTER_HOME, or the temporary one of `dagster job execute`)."""
    storage = type(instance.run_storage).__name__
    return not storage.startswith(("Sqlite", "InMemory"))


def _host_port(url: str) -> str:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    host = (parts.hostname or "localhost").replace(".", "-").replace(":", "-")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{host}-{port}"


def _describe(client, stats: dict, embedded: bool) -> ServerInfo:
    device = (stats.get("devices") or [{}])[0]
    # A URL can point at `comfy-pipeline simulator` too: trust what the server says it is.
    simulated = embedded or "simulator" in str(device.get("name", "")).lower()
    return ServerInfo(
        backend=SIMULATOR if simulated else COMFYUI,
        url=client.url,
        servers=(client.url,),
        comfyui_version=(stats.get("system") or {}).get("comfyui_version"),
        gpu=device.get("name"),
        vram_total_gb=round((device.get("vram_total") or 0) / 1024**3, 2),
        vram_free_gb=round((device.get("vram_free") or 0) / 1024**3, 2),
    )


CONTENT = ContentThresholds()  # the content checks' documented defaults (media.content.ContentThresholds)


class QualityThresholds(dg.ConfigurableResource):
    """Limits of the output checks: the file checks (format, size) and the content checks (black, flat, frozen,
    off-start, silent; see comfy_pipeline.media.content.ContentThresholds for what each measures). A workflow
    turns content checks off for its own outputs with `skip_checks` in its .params.json."""

    image_formats: list[str] = ["PNG", "JPEG"]
    image_min_bytes: int = 10 * 1024
    image_max_bytes: int = 50 * 1024**2
    video_containers: list[str] = ["mp4", "webm"]
    video_min_bytes: int = 100 * 1024
    video_max_bytes: int = 500 * 1024**2
    min_mean_luma: float = Field(
        default=CONTENT.min_mean_luma, description="brightness: a picture darker than this mean luma (0-255) is black.")
    min_luma_spread: float = Field(
        default=CONTENT.min_luma_spread,
        description="detail: a picture whose luma varies less than this (standard deviation, 0-255) is flat.")
    max_one_colour_share: float = Field(
        default=CONTENT.max_one_colour_share,
        description="detail: a picture with more than this share in one colour is blank.")
    min_motion: float = Field(
        default=CONTENT.min_motion,
        description="motion: a clip whose sampled frames change less than this (mean luma difference) is frozen.")
    max_frozen_share: float = Field(
        default=CONTENT.max_frozen_share, description="motion: a clip frozen for more than this share of it fails.")
    max_blank_frame_share: float = Field(
        default=CONTENT.max_blank_frame_share,
        description="blank_frames: a clip with more than this share of black or flat frames fails.")
    min_start_similarity: float = Field(
        default=CONTENT.min_start_similarity,
        description="start_frame: a video whose first frame is less like its start image (SSIM) than this fails.")
    min_audio_level_db: float = Field(
        default=CONTENT.min_audio_level_db,
        description="audio: a sound track quieter than this (mean volume, dBFS) is silent.")
    content_retries: int = Field(
        default=0, ge=0,
        description="How many times a prompt whose output failed a content check is queued again, each time with "
                    "the next seed (on any server of the run). 0: never; the failed output is reported.")
    skip_checks: list[str] = Field(
        default_factory=list,
        description="Content checks turned off (brightness, detail, motion, blank_frames, start_frame, audio), besides "
                    "those a workflow's .params.json skips.")

    @field_validator("skip_checks")
    @classmethod
    def _known_checks(cls, names: list[str]) -> list[str]:
        unknown = sorted(set(names) - set(CONTENT_CHECKS))
        if unknown:
            raise ValueError(f"unknown content check(s) {', '.join(unknown)}; the content checks are "
                             f"{', '.join(CONTENT_CHECKS)}")
        return names

    def image(self) -> ImageThresholds:
        return ImageThresholds(tuple(self.image_formats), self.image_min_bytes, self.image_max_bytes)

    def video(self) -> VideoThresholds:
        return VideoThresholds(tuple(self.video_containers), self.video_min_bytes, self.video_max_bytes)

    def content(self) -> ContentThresholds:
        """The content checks' limits (a workflow's skip_checks are added by the step)."""
        return ContentThresholds(**{name: getattr(self, name) for name in CONTENT_THRESHOLD_NAMES},
                                 skip=frozenset(self.skip_checks))


# Every limit of ContentThresholds is a field of QualityThresholds, by the same name.
CONTENT_THRESHOLD_NAMES = tuple(name for name in ContentThresholds.__dataclass_fields__ if name != "skip")
