"""ComfyUIClient: submit a workflow to a ComfyUI server, wait for it, fetch its files.

The server's traps this client is built around (details in docs/PROTOCOL.md):
- GET /history/{id} is `{}` for pending, running and unknown prompts: "not done" is cross-checked with /queue;
- the history entry is written after `execution_success`, so only `executing` with `node: null` means done;
- POST /prompt may answer 200 *and* node_errors (only part of the graph would run): cancelled and raised;
- the server does not reject a reused prompt_id, it runs the prompt again: submit() checks before posting;
- a POST /prompt that timed out may have been queued: it is looked up, never blindly resubmitted;
- WebSockets die silently: wait() falls back to polling and the listener reconnects;
- a server that goes away mid-prompt is waited for `server_down_timeout` seconds, not for the whole prompt timeout;
- a restart wipes the history: a prompt whose end was heard on the socket is not called lost (nor run again).
"""

import base64
import hashlib
import logging
import mimetypes
import queue
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests
import urllib3
from urllib3.exceptions import NewConnectionError

from . import answers, deadlines
from . import files as _files
from .errors import (
    AuthenticationError,
    ComfyUIError,
    DownloadError,
    ExecutionError,
    PromptInterrupted,
    PromptLost,
    PromptTimeout,
    ServerError,
    ServerUnreachable,
    WorkflowValidationError,
)
from .events import DISCONNECTED, EventListener, ProgressEvent
from .files import OutputFile
from .redaction import redact_url, scrub, scrub_json
from .rejections import rejection_from_response

GET_RETRY_DELAYS = deadlines.RETRY_PAUSES  # 5xx and resets, idempotent calls only; POST /prompt is never retried
MIN_DOWNLOAD_RATE = deadlines.MIN_DOWNLOAD_RATE  # bytes/s: slower than this on average, a download is given up
SAFETY_CHECK_SECONDS = 2.0  # with a healthy socket, still look at /history this often (sockets die silently)
TERMINAL_EVENTS = ("execution_success", "execution_error", "execution_interrupted")
MAX_REMEMBERED = 1000


@dataclass
class _Submitted:
    workflow: dict  # for the class types in progress events
    submitted_at: float | None  # time.time(), when the server does not say when it queued the prompt
    on_our_socket: bool  # submitted under this client's client_id, so its events come to our WebSocket


@dataclass
class PromptResult:
    """A prompt that finished successfully. Times are time.time() values (server clock where the server says)."""

    prompt_id: str
    outputs: list[OutputFile]
    history: dict
    cached_nodes: list[str] = field(default_factory=list)
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    noticed_at: float | None = None  # when this client learnt that the prompt was done
    via: str = "polling"  # "websocket" when the socket's terminal event told us, else "polling"

    @property
    def queue_wait(self) -> float | None:
        return _span(self.queued_at, self.started_at)

    @property
    def execution_time(self) -> float | None:
        return _span(self.started_at, self.finished_at)

    @property
    def notice_latency(self) -> float | None:
        return _span(self.finished_at, self.noticed_at)


def _span(a: float | None, b: float | None) -> float | None:
    return max(0.0, b - a) if a is not None and b is not None else None


def _nothing_sent(exc: Exception) -> bool:
    """True when the request never reached the server (refused, DNS, connect timeout)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    inner = exc.args[0] if exc.args else None
    return isinstance(getattr(inner, "reason", inner), NewConnectionError)


def is_canonical_uuid(value: str) -> bool:
    """The lowercase hyphenated form str(uuid.uuid4()) gives: the only prompt ids this client uses."""
    try:
        return str(uuid.UUID(value)) == value
    except (ValueError, TypeError, AttributeError):
        return False


class ComfyUIClient:
    """One ComfyUI server, one pooled HTTP session, one WebSocket (opened on the first submit/wait)."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        headers: dict[str, str] | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_download_bytes: int = 2 * 1024**3,
        server_down_timeout: float = 60.0,
        client_id: str | None = None,
        poll_interval: float = 0.25,
        logger: logging.Logger | None = None,
    ):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"ComfyUI URL {redact_url(base_url)!r} must look like http://host:8188 or https://host")
        if parts.username is not None:  # credentials in the URL: move them to a header, keep them out of URLs
            if username or password:
                raise ValueError("Give the ComfyUI credentials either in the URL or as username/password, not both.")
            username, password = parts.username, parts.password or ""
            netloc = parts.netloc.rsplit("@", 1)[1]
            parts = parts._replace(netloc=netloc)
        if token and username:
            raise ValueError("Give either a bearer token or a username/password for ComfyUI, not both.")
        self._base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        self.url = redact_url(base_url)
        self.client_id = client_id or uuid.uuid4().hex
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_download_bytes = max_download_bytes
        self.server_down_timeout = server_down_timeout
        self.poll_interval = poll_interval
        self.log = logger or logging.getLogger("comfy_pipeline.comfyui")

        auth_headers = dict(headers or {})
        if token:
            auth_headers["Authorization"] = f"Bearer {token}"
        elif username:
            basic = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            auth_headers["Authorization"] = f"Basic {basic}"
        # Every header value may be a credential (API keys come in custom headers): scrub them all.
        self._secrets: list[str | None] = [token, password, *auth_headers.values()]
        if username and password:
            self._secrets.append(f"{username}:{password}")

        self._session = requests.Session()
        adapter = deadlines.DeadlineAdapter(pool_connections=4, pool_maxsize=16)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update(auth_headers)
        self._session.trust_env = False  # the URL and credentials given are the whole truth: no env proxies, no .netrc

        ws_scheme = "wss" if parts.scheme == "https" else "ws"
        ws_url = urlunsplit((ws_scheme, parts.netloc, parts.path.rstrip("/") + "/ws", f"clientId={self.client_id}", ""))
        self._events = EventListener(
            ws_url,
            [f"{k}: {v}" for k, v in auth_headers.items()],
            display_url=self.url,
            secrets=self._secrets,
            connect_timeout=connect_timeout,
            logger=self.log,
        )
        self._object_info: dict | None = None
        self._lock = threading.Lock()
        self._submitted: OrderedDict[str, _Submitted] = OrderedDict()
        self._downloads: set[deadlines.RateFloor] = set()  # under way, for abort_downloads()
        self._aborted: set[deadlines.RateFloor] = set()
        self._downloads_lock = threading.Lock()  # not self._lock: that one is held while /object_info comes

    def __repr__(self) -> str:
        return f"ComfyUIClient(url={self.url!r}, client_id={self.client_id!r})"

    def __enter__(self) -> "ComfyUIClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._events.stop()
        self._session.close()

    # -- HTTP ---------------------------------------------------------------------------------------------

    def _clean(self, text: str) -> str:
        return scrub(text, self._secrets)

    def _reason(self, exc: Exception) -> str:
        # requests wraps the cause twice (ConnectionError(MaxRetryError(reason))); the innermost one is readable.
        inner = exc.args[0] if exc.args else exc
        return self._clean(f"{type(exc).__name__}: {getattr(inner, 'reason', inner)}")

    def _request(self, method: str, path: str, *, retry: bool = False, **kwargs: Any) -> requests.Response:
        """One HTTP call. Connection problems become ServerUnreachable, 401/403 AuthenticationError, 5xx
        ServerError; with retry=True (idempotent GETs) 5xx answers and connection resets are retried first."""
        kwargs.setdefault("timeout", (self.connect_timeout, self.read_timeout))
        attempts = len(GET_RETRY_DELAYS) + 1 if retry else 1
        # A total deadline, not just one per read: a trickling server or proxy cannot hold us forever.
        total = self.connect_timeout + self.read_timeout
        began = time.monotonic()
        for attempt in range(attempts):
            # Retries start within the first `total` seconds only: the whole call ends within 2 x total + pauses.
            last = attempt == attempts - 1 or time.monotonic() - began >= total
            try:
                with deadlines.deadline(total) as limit:
                    response = self._session.request(method, self._base + path, **kwargs)
            except (requests.Timeout, requests.ConnectionError) as exc:
                if limit.expired:
                    raise self._too_slow(method, path, total) from None
                if isinstance(exc, requests.Timeout):  # waiting the whole timeout again would rarely help
                    raise ServerUnreachable(self.url, self._clean(f"{type(exc).__name__} on {method} {path}")) from None
                # Refused/DNS: the server is down, a retry a second later rarely helps; a reset may be a blip.
                if last or _nothing_sent(exc):
                    raise ServerUnreachable(self.url, self._reason(exc)) from None
            else:
                if limit.expired:  # cut off mid-body: what was read is not the answer
                    raise self._too_slow(method, path, total)
                self._check_auth(response, method, path)
                if response.status_code < 500 or last:
                    return self._check_5xx(response, method, path)
                response.close()
            time.sleep(GET_RETRY_DELAYS[attempt])
        raise AssertionError("unreachable")

    def _too_slow(self, method: str, path: str, seconds: float) -> ServerUnreachable:
        return ServerUnreachable(self.url, f"no complete answer to {method} {path} within {seconds:g} s "
                                 "(connect + request timeout): the server or a proxy is too slow")

    def _check_auth(self, response: requests.Response, method: str, path: str) -> None:
        if response.status_code in (401, 403):
            raise AuthenticationError(
                f"ComfyUI at {self.url} refused {method} {path} with HTTP {response.status_code}: "
                "check the token / username / password / headers given for it."
            )

    def _check_5xx(self, response: requests.Response, method: str, path: str) -> requests.Response:
        if response.status_code >= 500:
            # ComfyUI's generic answer is text/plain "500 Internal Server Error\n\nServer got itself in trouble".
            # Redact first, then cut: a cut made first can leave the start of an echoed token behind.
            body = self._clean(self._error_text(response))[:300].strip().replace("\n\n", ": ").replace("\n", " ")
            raise ServerError(
                f"ComfyUI at {self.url} failed on {method} {path} with HTTP {response.status_code} ({body!r}). "
                "The request was malformed or the server hit a bug: look at the ComfyUI server log.",
                status=response.status_code,
            )
        return response

    def _error_text(self, response: requests.Response) -> str:
        """The start of an error answer's text; a streamed one (GET /view) is read within one read timeout, as
        its body may trickle as slowly as any other (this keeps a failed download within download_bound)."""
        if getattr(response, "_content_consumed", True) or response.raw is None:
            return response.text[:65536]
        try:
            with response, deadlines.deadline(self.read_timeout) as limit:
                limit.note(response.raw.connection)
                data = response.raw.read(65536, decode_content=True)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            return f"(its text could not be read: {type(exc).__name__})"
        return "" if limit.expired else data.decode(response.encoding or "utf-8", "replace")

    def _json(self, response: requests.Response, what: str) -> Any:
        try:
            return scrub_json(response.json(), self._secrets)  # the one door server JSON comes in by
        except ValueError:
            raise ServerError(
                f"ComfyUI at {self.url} answered {what} with HTTP {response.status_code} and a body that is not "
                f"JSON ({self._clean(response.text[:65536])[:200]!r}); is this really a ComfyUI server?",
                status=response.status_code,
            ) from None

    def _get_json(self, path: str, **kwargs: Any) -> Any:
        response = self._request("GET", path, retry=True, **kwargs)
        if response.status_code != 200:
            raise ServerError(f"ComfyUI at {self.url} answered GET {path} with HTTP {response.status_code}.",
                              status=response.status_code)
        endpoint = "/history" if path.startswith("/history") else path
        return answers.checked(endpoint, self._json(response, f"GET {path}"), self.url)

    # -- server state -------------------------------------------------------------------------------------

    def system_stats(self) -> dict:
        return self._get_json("/system_stats")

    def version(self) -> str | None:
        """The server's ComfyUI version, as /system_stats reports it (None when it does not say)."""
        return (self.system_stats().get("system") or {}).get("comfyui_version")

    def queue(self) -> dict:
        return self._get_json("/queue")

    def queue_remaining(self) -> int:
        """Prompts running or pending on the server, everyone's: GET /prompt, a few bytes where /queue lists
        every queued graph in full."""
        return max(0, int(self._get_json("/prompt")["exec_info"]["queue_remaining"]))

    def object_info(self) -> dict:
        """All node classes the server knows (1.6 MB on a stock server), fetched once per client."""
        with self._lock:
            if self._object_info is None:
                self._object_info = self._get_json("/object_info")
            return self._object_info

    def health(self) -> dict:
        """Reachability, version, devices and queue length; never raises for a server that is down."""
        report: dict[str, Any] = {"ok": False, "url": self.url, "version": None, "devices": [],
                                  "queue_running": 0, "queue_pending": 0, "error": None}
        try:
            stats = self.system_stats()
            report["version"] = (stats.get("system") or {}).get("comfyui_version")
            report["devices"] = [
                {k: d.get(k) for k in ("name", "type", "vram_total", "vram_free")} for d in stats.get("devices") or []
            ]
            q = self.queue()
            report["queue_running"] = len(q.get("queue_running") or [])
            report["queue_pending"] = len(q.get("queue_pending") or [])
            report["ok"] = True
        except (ComfyUIError, requests.RequestException, AttributeError, TypeError) as exc:
            report["error"] = self._clean(str(exc))
        return report

    def _history_entry(self, prompt_id: str) -> dict | None:
        """The finished prompt's history entry, or None ({} means pending, running or unknown)."""
        answer = self._get_json(f"/history/{quote(prompt_id, safe='')}")
        entry = answer.get(prompt_id) if isinstance(answer, dict) else None
        return entry if isinstance(entry, dict) and entry else None

    def _queue_state(self, prompt_id: str) -> str | None:
        q = self.queue()
        for state, key in (("running", "queue_running"), ("pending", "queue_pending")):
            if any(len(item) > 1 and item[1] == prompt_id for item in q.get(key) or []):
                return state
        return None

    def _locate(self, prompt_id: str) -> tuple[dict | None, str]:
        """(history entry or None, "done" | "pending" | "running" | "unknown")."""
        entry = self._history_entry(prompt_id)
        if entry:
            return entry, "done"
        state = self._queue_state(prompt_id)
        if state:
            return None, state
        entry = self._history_entry(prompt_id)  # it may have left the queue for the history in between
        return entry, "done" if entry else "unknown"

    def status(self, prompt_id: str) -> str:
        """"pending", "running", "done" (in history: success, error or interrupted) or "unknown"."""
        return self._locate(prompt_id)[1]

    # -- submit -------------------------------------------------------------------------------------------

    def submit(self, workflow: dict, *, prompt_id: str | None = None, client_id: str | None = None) -> str:
        """Queue an API-format workflow and return its prompt_id (a new lowercase uuid4 unless given).

        Idempotent per prompt_id: when the server already knows the given id (queued, running or finished),
        nothing is posted, because ComfyUI would run it again. Raises WorkflowValidationError when the server
        rejects the graph, also when it accepts only part of it (that part is cancelled first).
        """
        if not isinstance(workflow, dict) or not workflow:
            raise WorkflowValidationError("the workflow must be a non-empty dict of nodes (API format)")
        if "nodes" in workflow and "links" in workflow:
            raise WorkflowValidationError(
                "this is a UI-format workflow (nodes/links); save it with 'Export (API)' in ComfyUI and use that file"
            )
        if prompt_id is None:
            prompt_id = str(uuid.uuid4())
        elif not is_canonical_uuid(prompt_id):
            # ComfyUI itself takes any string; this client only uses lowercase hyphenated UUIDs, the form
            # str(uuid4()) gives, so that looking an id up after a lost answer finds it exactly as submitted.
            raise ValueError(f"prompt_id {prompt_id!r} must be a lowercase hyphenated UUID, as str(uuid.uuid4()) "
                             "gives: ComfyUI 0.33 refuses other forms (0.8 takes them), and this client looks ids up "
                             "exactly as submitted.")
        else:
            state = self.status(prompt_id)
            if state != "unknown":
                self.log.info("prompt %s is already %s on %s; not submitting it again", prompt_id, state, self.url)
                # Queued ahead (or before a restart of ours): its events name node classes from this graph, and
                # reach our socket if it was queued under our client id. Polling covers it either way.
                self._remember(prompt_id, _Submitted(workflow, time.time(), False))
                self._events.watch(prompt_id)
                self._events.start()
                return prompt_id

        on_our_socket = (client_id or self.client_id) == self.client_id
        self._remember(prompt_id, _Submitted(workflow, time.time(), on_our_socket))
        if on_our_socket:
            self._events.watch(prompt_id)  # before the POST, so that no event of this prompt is missed
            self._events.start()
            self._events.wait_first_attempt(min(self.connect_timeout, 2.0))
        body = {"prompt": workflow, "client_id": client_id or self.client_id, "prompt_id": prompt_id}
        try:
            response = self._session.post(
                self._base + "/prompt", json=body, timeout=(self.connect_timeout, self.read_timeout)
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            if _nothing_sent(exc):
                self._forget(prompt_id)
                raise ServerUnreachable(self.url, self._reason(exc)) from None
            return self._confirm_submitted(prompt_id, exc)  # it may have been queued: look it up
        try:
            answer = self._prompt_answer(response)
        except ComfyUIError:
            self._forget(prompt_id)
            raise
        if answer.get("node_errors"):
            # Partial acceptance: only the valid outputs would run. Never run half a graph.
            self._cancel_quietly(prompt_id)
            self._forget(prompt_id)
            rejection = rejection_from_response(answer)
            raise WorkflowValidationError(
                f"only part of the workflow was valid ({rejection.summary}); "
                f"prompt {prompt_id} was cancelled on the server so that no half graph runs",
                rejection.errors,
            )
        self.log.info("submitted prompt %s to %s (number %s)", prompt_id, self.url, answer.get("number"))
        return prompt_id

    def _prompt_answer(self, response: requests.Response) -> dict:
        """The JSON of an accepted POST /prompt; every other answer raised as what it means."""
        self._check_auth(response, "POST", "/prompt")
        self._check_5xx(response, "POST", "/prompt")  # ComfyUI's 500 is text/plain
        answer = self._json(response, "POST /prompt")
        if response.status_code == 400 and isinstance(answer, dict):
            raise rejection_from_response(answer)
        if response.status_code != 200 or not isinstance(answer, dict):
            raise ServerError(f"ComfyUI at {self.url} answered POST /prompt with HTTP {response.status_code}: "
                              f"{self._clean(str(answer)[:65536])[:200]}", status=response.status_code)
        return answers.checked("POST /prompt", answer, self.url)

    def _confirm_submitted(self, prompt_id: str, exc: Exception) -> str:
        """The POST went out but no answer came back: look the prompt up instead of posting it again."""
        reason = self._reason(exc)
        self.log.warning("no answer to POST /prompt for %s (%s); checking whether the server queued it",
                         prompt_id, reason)
        for delay in (0.0, 0.5, 1.5):  # the server may still be validating the graph
            time.sleep(delay)
            state = self.status(prompt_id)
            if state != "unknown":
                self.log.info("prompt %s was queued after all (%s)", prompt_id, state)
                return prompt_id
        self._forget(prompt_id)
        raise ServerUnreachable(
            self.url, f"{reason}; prompt {prompt_id} is not on the server, so it is safe to submit it again"
        )

    def _remember(self, prompt_id: str, submitted: "_Submitted") -> None:
        with self._lock:
            self._submitted[prompt_id] = submitted
            while len(self._submitted) > MAX_REMEMBERED:
                self._submitted.popitem(last=False)

    def _forget(self, prompt_id: str) -> None:
        with self._lock:
            self._submitted.pop(prompt_id, None)
        self._events.unwatch(prompt_id)

    # -- wait ---------------------------------------------------------------------------------------------

    def run(self, workflow: dict, timeout: float,
            on_progress: Callable[[ProgressEvent], None] | None = None) -> PromptResult:
        return self.wait(self.submit(workflow), timeout, on_progress)

    def wait(self, prompt_id: str, timeout: float,
             on_progress: Callable[[ProgressEvent], None] | None = None, *,
             queue_timeout: float | None = None) -> PromptResult:
        """Wait until the prompt is done and return its outputs, or raise ExecutionError, PromptInterrupted,
        PromptLost (the server forgot it), PromptTimeout (after cancelling it on the server) or ServerUnreachable
        (no usable answer for `server_down_timeout` seconds).

        `timeout` counts from the moment the prompt starts executing, so time spent queued behind other prompts
        (another run's, on a shared server) never eats into it; `queue_timeout` (default: `timeout`) bounds the
        wait before it starts on its own."""
        queue_timeout = timeout if queue_timeout is None else queue_timeout
        started: float | None = None  # monotonic time the prompt was seen executing
        deadline = time.monotonic() + queue_timeout
        submitted = self._submitted.get(prompt_id) or _Submitted({}, None, False)
        workflow = submitted.workflow
        # Submitted here, on our socket, with the socket up: its events are queued already, let them tell the
        # story. Otherwise look right away (it may have finished before wait() was called) and keep polling
        # fast, as no events will come for a prompt submitted under another client_id.
        socket_covers = submitted.on_our_socket and self._events.connected
        events = self._events.watch(prompt_id)
        self._events.start()
        next_check = time.monotonic() + (SAFETY_CHECK_SECONDS if socket_covers else 0.0)
        fast_until = 0.0 if submitted.on_our_socket else float("inf")  # poll fast until then
        via = "polling"
        gone = 0  # consecutive checks that found the prompt in neither the queue nor the history
        down_since: float | None = None  # first of the consecutive checks that got no usable answer
        heard = {"outputs": {}, "status": {"messages": []}}  # the history entry, as told by the socket
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    raise PromptTimeout(prompt_id, timeout if started is not None else queue_timeout,
                                        cancel_error=self._cancel_quietly(prompt_id), queued=started is None)
                if not self._events.connected:
                    fast_until = max(fast_until, now + SAFETY_CHECK_SECONDS)
                try:
                    # Events already received come before any check, so callbacks see every step in order.
                    kind, data = events.get(timeout=max(0.0, min(deadline, next_check) - now))
                except queue.Empty:
                    if time.monotonic() < next_check:
                        continue
                    try:
                        entry, state = self._locate(prompt_id)
                    except answers.ProtocolError:
                        self._cancel_quietly(prompt_id)  # we cannot read its result: it must not run on
                        raise
                    except (ServerUnreachable, ServerError) as exc:  # restarting, proxy hiccup: keep trying
                        down_since = down_since if down_since is not None else time.monotonic()
                        if time.monotonic() - down_since >= self.server_down_timeout:
                            # A dead server would otherwise hold the run for the whole prompt timeout. A slow
                            # one may still take the cancel: the prompt must not run on after we gave up on it.
                            self._cancel_quietly(prompt_id)
                            raise ServerUnreachable(
                                self.url, f"no usable answer for {self.server_down_timeout:g} s while waiting for "
                                f"prompt {prompt_id} ({exc}); whether it ran is unknown",
                                prompt_started=started is not None,  # never seen running: may move
                            ) from None
                        self.log.info("checking prompt %s failed (%s); trying again", prompt_id, exc)
                        entry, state = None, "unreachable"
                    else:
                        down_since = None
                    if entry:
                        return self._result(prompt_id, entry, via, on_progress, workflow)
                    if state == "running" and started is None:
                        started, deadline = time.monotonic(), time.monotonic() + timeout
                    gone = gone + 1 if state == "unknown" else 0
                    if gone >= 2:  # confirmed twice, a moment apart: the server forgot it
                        messages = heard["status"]["messages"]
                        if messages and messages[-1][0] in TERMINAL_EVENTS:
                            # It ended before a restart wiped the history; running it again would run it twice.
                            self.log.warning("the server forgot prompt %s after it ended (restart?); taking its "
                                             "outcome and outputs from the WebSocket events", prompt_id)
                            heard = answers.checked("/ws", heard, self.url)
                            return self._result(prompt_id, heard, "websocket", on_progress, workflow)
                        raise PromptLost(prompt_id)
                    if state in ("unknown", "unreachable"):
                        next_check = time.monotonic() + max(self.poll_interval, 0.5)
                    elif time.monotonic() < fast_until:
                        next_check = time.monotonic() + self.poll_interval
                    else:
                        next_check = time.monotonic() + SAFETY_CHECK_SECONDS
                    continue
                if (kind, data) == DISCONNECTED:
                    next_check = time.monotonic()
                    fast_until = max(fast_until, next_check + SAFETY_CHECK_SECONDS)
                    continue
                if started is None and kind in ("execution_start", "executing", "progress", "executed"):
                    started, deadline = time.monotonic(), time.monotonic() + timeout
                for event in self._progress_events(prompt_id, kind, data, workflow):
                    self._emit(on_progress, event)
                if kind == "executed" and isinstance(data.get("output"), dict):
                    heard["outputs"][str(data.get("node"))] = data["output"]
                elif kind in ("execution_start", "execution_cached", *TERMINAL_EVENTS):
                    heard["status"]["messages"].append([kind, data])
                if kind == "executing" and data.get("node") is None:
                    via = "websocket"
                    next_check = time.monotonic()  # done: the history entry is written before this event
                elif kind in TERMINAL_EVENTS:
                    next_check = min(next_check, time.monotonic() + 0.5)  # in case `executing null` is lost
        finally:
            self._events.unwatch(prompt_id)
            with self._lock:
                self._submitted.pop(prompt_id, None)

    def _cancel_quietly(self, prompt_id: str) -> str | None:
        """Cancel; on failure log it and return why (the caller's error matters more)."""
        try:
            self.cancel(prompt_id)
        except ComfyUIError as exc:
            self.log.warning("could not cancel prompt %s on %s: %s", prompt_id, self.url, exc)
            return f"{type(exc).__name__}: {exc}"
        return None

    def _progress_events(self, prompt_id: str, kind: str, data: dict, workflow: dict) -> list[ProgressEvent]:
        def class_of(node: Any) -> str | None:
            return (workflow.get(str(node)) or {}).get("class_type") if node is not None else None

        if kind == "execution_cached":
            nodes = data.get("nodes") if isinstance(data.get("nodes"), list) else []
            return [ProgressEvent(prompt_id, "cached", str(n), class_type=class_of(n)) for n in nodes]
        names = {"execution_start": "started", "execution_success": "success", "execution_error": "error",
                 "execution_interrupted": "interrupted"}
        node = data.get("node") if kind in ("executing", "progress", "executed") else data.get("node_id")
        if kind == "executing" and node is None:
            return [ProgressEvent(prompt_id, "done")]
        return [ProgressEvent(prompt_id, names.get(kind, kind), None if node is None else str(node),
                              data.get("value"), data.get("max"), class_of(node))]

    def _emit(self, on_progress: Callable[[ProgressEvent], None] | None, event: ProgressEvent) -> None:
        if on_progress is None:
            return
        try:
            on_progress(event)
        except Exception:  # a broken callback must not leave a prompt running unwatched
            self.log.exception("on_progress callback failed for %s", event)

    def _result(self, prompt_id: str, entry: dict, via: str,
                on_progress: Callable[[ProgressEvent], None] | None, workflow: dict) -> PromptResult:
        status = entry.get("status") or {}
        messages = [m for m in status.get("messages") or [] if isinstance(m, list) and len(m) == 2]
        last_kind, last = messages[-1] if messages else (None, {})
        if last_kind == "execution_error":
            raise ExecutionError(
                prompt_id=prompt_id,
                node_id=last.get("node_id"),
                node_type=last.get("node_type"),
                exception_type=str(last.get("exception_type") or "Exception"),
                exception_message=str(last.get("exception_message") or ""),
                server_traceback=_frames(last.get("traceback")),
            )
        if last_kind == "execution_interrupted":
            raise PromptInterrupted(prompt_id, last.get("node_id"))
        if status.get("status_str") == "error":
            raise ExecutionError(prompt_id, None, None, "UnknownError",
                                 "the server marked the prompt as failed without saying why")
        stamps = {kind: data.get("timestamp") / 1000 for kind, data in messages
                  if isinstance(data, dict) and isinstance(data.get("timestamp"), (int, float))}
        cached = [str(n) for kind, data in messages if kind == "execution_cached" for n in data.get("nodes") or []]
        prompt = entry.get("prompt") or []
        extra = prompt[3] if len(prompt) > 3 and isinstance(prompt[3], dict) else {}
        queued_at = extra["create_time"] / 1000 if isinstance(extra.get("create_time"), (int, float)) else None
        noticed_at = time.time()
        if via == "polling":
            self._emit(on_progress, ProgressEvent(prompt_id, "done"))
        return PromptResult(
            prompt_id=prompt_id,
            outputs=self.outputs(entry),
            history=entry,
            cached_nodes=cached,
            queued_at=queued_at if queued_at is not None
            else getattr(self._submitted.get(prompt_id), "submitted_at", None),
            started_at=stamps.get("execution_start"),
            finished_at=stamps.get("execution_success"),
            noticed_at=noticed_at,
            via=via,
        )

    # -- cancel -------------------------------------------------------------------------------------------

    def cancel(self, prompt_id: str) -> None:
        """Remove the prompt from the queue if pending; interrupt it if running. Other prompts are not touched.

        The delete comes first: if the prompt starts between the delete and the queue check, the check sees it
        running. Only a running prompt is interrupted, because servers older than the targeted /interrupt
        treat it as a global interrupt. Both calls are idempotent, so they are retried like GETs.
        """
        self._request("POST", "/queue", retry=True, json={"delete": [prompt_id]})
        if self._queue_state(prompt_id) == "running":
            self._request("POST", "/interrupt", retry=True, json={"prompt_id": prompt_id})
            self.log.info("interrupted running prompt %s on %s", prompt_id, self.url)
        else:
            self.log.info("removed prompt %s from the queue of %s", prompt_id, self.url)

    # -- files --------------------------------------------------------------------------------------------

    def outputs(self, history_entry: dict) -> list[OutputFile]:
        return _files.outputs(history_entry)

    def upload_image(self, path: str | Path, *, subfolder: str = "comfy_pipeline") -> str:
        """Upload an input image under a content-addressed name; returns the value for LoadImage.image.

        The name carries the sha256 of the bytes ("photo-1a2b3c4d5e6f.png"), so the same bytes always get the
        same name (the server keeps one copy) and different bytes never collide as "photo (1).png".
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Image to upload not found: {path}")
        if subfolder.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", subfolder):
            raise ValueError(f"upload subfolder {subfolder!r} must be a relative folder without '..'")
        data = path.read_bytes()
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("._") or "image"
        name = f"{stem[:80]}-{hashlib.sha256(data).hexdigest()[:12]}{path.suffix.lower()}"
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        response = self._request(
            "POST", "/upload/image", retry=True,  # idempotent: same name, same bytes, one stored copy
            files={"image": (name, data, mime)},
            data={"subfolder": subfolder, "type": "input"},
        )
        if response.status_code == 413:
            raise ServerError(f"{path.name} ({len(data)} bytes) is larger than the server's upload limit "
                              "(ComfyUI --max-upload-size, 100 MB by default).", status=413)
        if response.status_code != 200:
            raise ServerError(f"ComfyUI at {self.url} refused the upload of {path.name} with HTTP "
                              f"{response.status_code}.", status=response.status_code)
        answer = answers.checked("POST /upload/image", self._json(response, "POST /upload/image"), self.url)
        # Use what the server says it stored: it renames on a clash instead of failing.
        stored, folder = answer.get("name"), answer.get("subfolder") or ""
        if not isinstance(stored, str) or not stored:
            raise ServerError(f"ComfyUI at {self.url} accepted the upload of {path.name} but named no file.")
        if stored != name:
            self.log.warning("server stored %s as %s", name, stored)
        return f"{folder}/{stored}" if folder else stored

    def download(self, file: OutputFile, dest_dir: str | Path, *, filename: str | None = None) -> Path:
        """Stream one output file into dest_dir (1 MiB chunks, temp file, fsync, atomic rename).

        The local name is `filename` or the server's name, sanitised to a plain file name (no folders, no
        '..', no leading dot), so nothing is written outside dest_dir. An existing file is never overwritten:
        the new one becomes name_1.ext, name_2.ext, ... Returns the path written. The body must keep up the
        minimum average rate (see deadlines); abort_downloads() ends it from another thread.
        """
        name = _files.safe_filename(filename or file.filename)
        params = {"filename": file.filename, "subfolder": file.subfolder, "type": file.type}
        source = f"output {file.filename!r} of node {file.node_id}"
        response = self._request("GET", "/view", retry=True, params=params, stream=True)
        length = response.headers.get("Content-Length")
        encoded = response.headers.get("Content-Encoding", "identity") != "identity"
        expected = int(length) if length and length.isdigit() and not encoded else None
        grace = deadlines.download_grace(self.read_timeout)
        # A known length also bounds the whole body: one read timeout plus that many bytes at the minimum rate.
        cap = self.read_timeout + expected / MIN_DOWNLOAD_RATE if expected is not None else float("inf")
        with response, deadlines.rate_floor(grace, cap=cap) as limit:
            limit.note(response.raw.connection)  # the connection the body arrives on
            if response.status_code != 200:
                raise DownloadError(f"ComfyUI at {self.url} answered HTTP {response.status_code} for {source} "
                                    f"(subfolder {file.subfolder!r}, type {file.type!r}).")
            with self._downloads_lock:
                self._downloads.add(limit)
            try:
                return _files.save_stream(
                    self._counted(response.iter_content(deadlines.CHUNK_BYTES), limit), dest_dir, name,
                    expected_bytes=expected, max_bytes=self.max_download_bytes, source=source,
                )
            except (requests.RequestException, DownloadError) as exc:  # before OSError: requests' are OSErrors
                if isinstance(exc, DownloadError) and not limit.expired:
                    raise
                if limit in self._aborted:
                    raise DownloadError(f"Download of {source} was stopped (the run is ending); the partial file "
                                        "was deleted.") from None
                if limit.expired:
                    raise DownloadError(
                        f"Download of {source} did not finish within {time.monotonic() - limit.started:.0f} s: it "
                        f"must average {MIN_DOWNLOAD_RATE // 1024} KiB/s at least after the first {grace:g} s; the "
                        "partial file was deleted.") from None
                raise DownloadError(f"Download of {source} broke off ({self._clean(type(exc).__name__)}); "
                                    "the partial file was deleted. Try again.") from None
            except OSError as exc:  # disk full, quota, file size limit, read-only folder
                raise DownloadError(f"Writing {source} into {dest_dir} failed ({exc.strerror or exc}); "
                                    "the partial file was deleted. Free some space and run again.") from None
            finally:
                with self._downloads_lock:
                    self._downloads.discard(limit)
                    self._aborted.discard(limit)

    @staticmethod
    def _counted(chunks: Iterator[bytes], limit: deadlines.RateFloor) -> Iterator[bytes]:
        """The chunks, counted for the rate floor. A body the floor cut off ends like a whole one when no
        Content-Length says otherwise (the shut socket reads as the end): it is refused here, before it is kept."""
        for chunk in chunks:
            limit.add(len(chunk))
            yield chunk
        if limit.expired:
            raise DownloadError("cut off by its deadline")  # reworded by download()

    def abort_downloads(self) -> None:
        """End every download of this client that is under way, from any thread: each raises DownloadError
        and deletes its partial file. For a run that is being interrupted."""
        with self._downloads_lock:
            running = list(self._downloads)
            self._aborted.update(running)
        for limit in running:
            limit.expire()


def _frames(traceback: object) -> list[str]:
    """ComfyUI's traceback (a list of format_tb strings) as such, whatever shape a server sends."""
    if isinstance(traceback, list):
        return [str(frame) for frame in traceback]
    return [str(traceback)] if traceback else []
