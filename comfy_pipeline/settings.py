"""Every setting of the pipeline, in one place, read when it is used (never at import, so a test or a deployment
can change the environment at any time before the work starts). Core code: no Dagster.

Which ComfyUI server(s), first match wins:
  1. a command-line flag (`--comfyui-url`),
  2. the run config (`resources.comfy.config.urls`, then `.url`),
  3. COMFYUI_URLS (comma-separated),
  4. COMFYUI_URL,
  5. the running `comfy-pipeline server` session (a corrupt session state file is an error naming the file),
  6. the embedded simulator (refused on a deployment's instance: see defs/resources.py).
`simulator` as the URL chooses the embedded simulator on purpose.

Credentials come from the environment only (COMFYUI_TOKEN, or COMFYUI_USERNAME + COMFYUI_PASSWORD): run config is
stored in plain text by Dagster, so they are not run-config fields at all. `make_client` is the one place that
builds a client from them.

Output folder: run config `output_dir` > COMFY_PIPELINE_OUTPUT_DIR > ./comfy_outputs; a local folder, or
`s3://bucket/prefix` on an S3-compatible store (credentials from the standard AWS chain, its endpoint from the
run config's `s3_endpoint_url` or AWS_ENDPOINT_URL). Retries of a GPU step after
a transient server fault: COMFY_PIPELINE_STEP_RETRIES (3) with a backoff from COMFY_PIPELINE_RETRY_DELAY_S (10 s).
Read when the definitions load, by nature: the GPU pool's name (COMFYUI_URLS / COMFYUI_URL) and the daily
schedule's cron and timezone.
"""

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from comfy_pipeline.comfyui.errors import ComfyUIError
from comfy_pipeline.storage import Store, StoreError, is_store_url, open_store

SIMULATOR = "simulator"
URLS_ENV = "COMFYUI_URLS"
URL_ENV = "COMFYUI_URL"
TOKEN_ENV = "COMFYUI_TOKEN"
USERNAME_ENV = "COMFYUI_USERNAME"
PASSWORD_ENV = "COMFYUI_PASSWORD"
OUTPUT_DIR_ENV = "COMFY_PIPELINE_OUTPUT_DIR"
DEFAULT_OUTPUT_DIR = "comfy_outputs"
REQUIRE_SERVER_ENV = "COMFY_PIPELINE_REQUIRE_SERVER"
STEP_RETRIES_ENV = "COMFY_PIPELINE_STEP_RETRIES"
RETRY_DELAY_ENV = "COMFY_PIPELINE_RETRY_DELAY_S"
INBOX_SETTLE_ENV = "COMFY_PIPELINE_INBOX_SETTLE_S"
DAILY_CRON_ENV = "COMFY_PIPELINE_DAILY_CRON"
TIMEZONE_ENV = "COMFY_PIPELINE_TIMEZONE"


class SettingError(ComfyUIError):
    """A setting that cannot be used (a bad number, a corrupt session state file): the message names it."""


# --- servers -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerChoice:
    """The chosen servers and where the choice came from (for messages: "from COMFYUI_URLS")."""

    urls: tuple[str, ...]  # () when nothing is configured: the embedded simulator by default
    source: str  # "--comfyui-url", "run config", COMFYUI_URLS, COMFYUI_URL, "session", "default"

    @property
    def simulator(self) -> bool:
        """The embedded simulator runs: by default (nothing configured) or chosen by name."""
        return self.urls in ((), (SIMULATOR,))

    @property
    def by_default(self) -> bool:
        """Nothing was configured: the simulator would run only because no server was named."""
        return not self.urls


def split_urls(values: Iterable[str | None]) -> tuple[str, ...]:
    """`["http://a:8188, http://b:8188", None]` -> each URL once, in order."""
    urls = [u.strip() for value in values if value for u in str(value).split(",") if u.strip()]
    return tuple(dict.fromkeys(urls))


def choose_servers(flag: str | None = None, config: Iterable[str | None] = (), *,
                   state_dir: str | Path | None = None) -> ServerChoice:
    """The servers to use, in the order of this module's docstring. `flag` is a command line's URL (several may
    be comma-separated), `config` the run config's `urls` then `url`. Raises SettingError for a corrupt session
    state file, and when `simulator` is mixed with real URLs."""
    candidates = (("--comfyui-url", [flag]), ("run config", list(config)),
                  (URLS_ENV, [os.environ.get(URLS_ENV)]), (URL_ENV, [os.environ.get(URL_ENV)]))
    for source, values in candidates:
        urls = split_urls(values)
        if urls:
            if SIMULATOR in urls and len(urls) > 1:
                raise SettingError(f"`simulator` cannot be mixed with real server URLs (from {source}): "
                                   "give one or the other")
            return ServerChoice(urls, source)
    session = running_session_url(state_dir)
    return ServerChoice((session,), "session") if session else ServerChoice((), "default")


def environment_urls() -> tuple[str, ...]:
    """The servers the environment names (COMFYUI_URLS, else COMFYUI_URL): what the definitions can know when they
    load, before any run config or session (the GPU pool's name comes from it)."""
    return split_urls([os.environ.get(URLS_ENV)]) or split_urls([os.environ.get(URL_ENV)])


def running_session_url(state_dir: str | Path | None = None) -> str | None:
    """The URL of a session started with `comfy-pipeline server start` that is still running; a state file that
    cannot be read is an error naming it, never silently "no session"."""
    from comfy_pipeline.comfyui.session import SessionError, StateFileError, current_session

    try:
        session = current_session(state_dir)
    except StateFileError as exc:
        raise SettingError(str(exc)) from None
    except SessionError:  # e.g. no way to check the process on this system: as if no session were recorded
        return None
    return session.url if session else None


def require_server() -> bool:
    """COMFY_PIPELINE_REQUIRE_SERVER=1: a run with no server configured fails instead of using the simulator."""
    return os.environ.get(REQUIRE_SERVER_ENV) == "1"


# --- credentials ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def secrets(self) -> list[str]:
        """The values that must never appear in logs, metadata or errors."""
        return [s for s in (self.token, self.password) if s]


NO_CREDENTIALS = Credentials()  # for servers this program started itself (the bench's simulators)


def credentials() -> Credentials:
    """The credentials in the environment (COMFYUI_TOKEN, COMFYUI_USERNAME, COMFYUI_PASSWORD); empty means unset."""
    return Credentials(*(os.environ.get(name) or None for name in (TOKEN_ENV, USERNAME_ENV, PASSWORD_ENV)))


def make_client(url: str, *, creds: Credentials | None = None, **options):
    """A ComfyUIClient for `url` with the environment's credentials (or `creds`); `options` are the client's
    (timeouts, max_download_bytes, client_id, ...)."""
    from comfy_pipeline.comfyui.client import ComfyUIClient  # requests and websocket: only when a client is made

    chosen = creds or credentials()
    return ComfyUIClient(url, token=chosen.token, username=chosen.username, password=chosen.password, **options)


# --- folders, timeouts, retries -------------------------------------------------------------------------------


def output_dir(configured: str | None = None) -> Path:
    """The output folder, absolute (paths in metadata and reports lead to the files from anywhere). Only for a
    local one: an `s3://` location is an error here (use output_store)."""
    location = output_location(configured)
    if is_store_url(location):
        raise SettingError(f"{location} is an object store; this needs a local folder")
    return Path(location)


def output_location(configured: str | None = None) -> str:
    """Where outputs go: `s3://bucket/prefix` as given, or the absolute path of a local folder."""
    chosen = (configured or os.environ.get(OUTPUT_DIR_ENV) or DEFAULT_OUTPUT_DIR).strip()
    return chosen.rstrip("/") if is_store_url(chosen) else str(Path(chosen).expanduser().absolute())


def output_store(configured: str | None = None, endpoint_url: str | None = None) -> Store:
    """The output location as a store (storage.open_store). A malformed `s3://` location is a SettingError."""
    try:
        return open_store(output_location(configured), endpoint_url=endpoint_url)
    except StoreError as exc:
        raise SettingError(str(exc)) from None


@dataclass(frozen=True)
class RetrySettings:
    """How often a GPU step is tried again after a transient server fault, and its first backoff delay."""

    max_retries: int
    delay_s: float


def gpu_retry_settings() -> RetrySettings:
    return RetrySettings(_number(STEP_RETRIES_ENV, 3, int), _number(RETRY_DELAY_ENV, 10.0, float))


def daily_schedule() -> tuple[str, str]:
    """(cron, timezone) of the daily schedule: COMFY_PIPELINE_DAILY_CRON (02:00) and COMFY_PIPELINE_TIMEZONE (UTC).
    A schedule is defined when the definitions load, so these are read then."""
    return os.environ.get(DAILY_CRON_ENV, "0 2 * * *"), os.environ.get(TIMEZONE_ENV, "UTC")


def inbox_settle_s(default: float) -> float:
    """Seconds an inbox file must stay unchanged before it is read (COMFY_PIPELINE_INBOX_SETTLE_S)."""
    return _number(INBOX_SETTLE_ENV, default, float)


def _number(variable: str, default, kind):
    text = os.environ.get(variable)
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = -1
    if not value >= 0:  # also NaN
        raise SettingError(f"{variable} must be a number, 0 or more; got {text!r}")
    return value
