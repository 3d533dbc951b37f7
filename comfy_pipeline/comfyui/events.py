"""The client's one long-lived WebSocket (`/ws?clientId=...`) and the routing of its events to waiting prompts.

ComfyUI sends execution events only to the socket whose clientId submitted the prompt, and connecting again
with the same clientId replaces the old socket; so one listener per client_id serves every prompt in flight,
and each waiter reads its own queue. Sockets to ComfyUI are known to die silently, so the listener pings when the
line is quiet and reconnects when no answer comes. While it is down, waiters poll /history (see client.wait).
"""

import json
import logging
import queue
import socket
import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit

import websocket

from .redaction import redact_url, scrub, scrub_json

# Events that belong to one prompt and are routed by their prompt_id.
PROMPT_EVENTS = {
    "execution_start",
    "execution_cached",
    "executing",
    "progress",
    "executed",
    "execution_success",
    "execution_error",
    "execution_interrupted",
}
# Put into every waiter's queue when the socket drops: events may have been missed, look at /history now.
DISCONNECTED = ("disconnected", {})
MAX_WATCHES = 1000  # a submitted prompt nobody waits for must not keep its queue forever


@dataclass
class ProgressEvent:
    """One step of a running prompt, as given to `on_progress` callbacks."""

    prompt_id: str
    kind: str  # started | cached | executing | progress | executed | success | error | interrupted | done
    node: str | None = None
    value: int | None = None
    max: int | None = None
    class_type: str | None = None


class EventListener:
    """Background thread holding the WebSocket; call start() once, then watch()/unwatch() per prompt."""

    def __init__(
        self,
        ws_url: str,
        headers: list[str],
        *,
        display_url: str,
        secrets: list[str | None],
        connect_timeout: float,
        logger: logging.Logger,
        heartbeat: float = 10.0,
    ):
        self._ws_url = ws_url
        self._headers = headers
        self._display_url = display_url
        self._secrets = secrets
        self._connect_timeout = connect_timeout
        self._log = logger
        self._heartbeat = heartbeat
        self._watches: OrderedDict[str, queue.SimpleQueue] = OrderedDict()
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._attempted = threading.Event()  # the first connection attempt has finished, well or not
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ws: websocket.WebSocket | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="comfyui-ws", daemon=True)
                self._thread.start()

    def wait_first_attempt(self, timeout: float) -> bool:
        """Block until the first connection attempt is over; True when the socket is up."""
        self._attempted.wait(timeout)
        return self.connected

    def watch(self, prompt_id: str) -> queue.SimpleQueue:
        with self._lock:
            q = self._watches.get(prompt_id)
            if q is None:
                q = self._watches[prompt_id] = queue.SimpleQueue()
                while len(self._watches) > MAX_WATCHES:
                    self._watches.popitem(last=False)
            return q

    def unwatch(self, prompt_id: str) -> None:
        with self._lock:
            self._watches.pop(prompt_id, None)

    def stop(self) -> None:
        self._stop.set()
        ws = self._ws
        if ws is not None and ws.sock is not None:
            try:
                ws.sock.shutdown(socket.SHUT_RDWR)  # wakes recv() in the listener thread (a close() would not)
            except OSError:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    # -- the thread ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                # The same policy as the HTTP calls: no proxy from the environment (the credentials would go through
                # it: our own socket to the configured host is the only way websocket-client skips them) and no
                # redirect (the credentials would be sent again to wherever the server points).
                ws = websocket.create_connection(
                    self._ws_url, header=self._headers, timeout=self._connect_timeout, enable_multithread=True,
                    socket=self._open_socket(), redirect_limit=0,
                )
                if ws.getstatus() != 101:
                    where = (ws.getheaders() or {}).get("location", "?")
                    ws.shutdown()
                    raise ConnectionError(f"the WebSocket handshake answered HTTP {ws.getstatus()} (a redirect to "
                                          f"{redact_url(where)}); redirects are not followed")
            except Exception as exc:  # refused, 401, TLS, ...: keep trying, waiters poll meanwhile
                self._log.debug("WebSocket to %s not connected (%s); retrying in %.1f s",
                                self._display_url, self._clean(exc), backoff)
                self._attempted.set()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            self._ws = ws
            self._connected.set()
            self._attempted.set()
            self._log.debug("WebSocket to %s connected", self._display_url)
            try:
                self._read(ws)
            except Exception as exc:
                if not self._stop.is_set():
                    self._log.info("WebSocket to %s dropped (%s); polling /history until it is back",
                                   self._display_url, self._clean(exc))
            finally:
                self._connected.clear()
                self._ws = None
                try:
                    ws.shutdown()
                except Exception:
                    pass
                self._broadcast(DISCONNECTED)

    def _open_socket(self) -> socket.socket:
        """A TCP (TLS for wss) connection straight to the configured host and port."""
        parts = urlsplit(self._ws_url)
        secure = parts.scheme == "wss"
        host, port = parts.hostname or "", parts.port or (443 if secure else 80)
        sock = socket.create_connection((host, port), timeout=self._connect_timeout)
        if secure:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        return sock

    def _read(self, ws: websocket.WebSocket) -> None:
        ws.settimeout(1.0)
        last_frame = time.monotonic()
        ping_sent: float | None = None
        while not self._stop.is_set():
            try:
                opcode, frame = ws.recv_data_frame(control_frame=True)
            except websocket.WebSocketTimeoutException:
                now = time.monotonic()
                if ping_sent is None and now - last_frame > self._heartbeat:
                    ws.ping()
                    ping_sent = now
                elif ping_sent is not None and now - ping_sent > self._heartbeat:
                    raise ConnectionError(f"no answer to a ping for {self._heartbeat:g} s") from None
                continue
            last_frame = time.monotonic()
            ping_sent = None
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise ConnectionError("the server closed the socket")
            if opcode == websocket.ABNF.OPCODE_TEXT:
                self._dispatch(frame.data)
            # binary frames (previews) and pongs only prove the line is alive

    def _dispatch(self, data: bytes | str) -> None:
        try:
            message = scrub_json(json.loads(data), self._secrets)
            kind, payload = message["type"], message.get("data") or {}
        except (ValueError, KeyError, TypeError):
            self._log.debug("ignoring a WebSocket message that is not ComfyUI JSON")
            return
        if kind not in PROMPT_EVENTS or not isinstance(payload, dict):
            return
        with self._lock:
            q = self._watches.get(str(payload.get("prompt_id")))
        if q is not None:
            q.put((kind, payload))

    def _broadcast(self, item: tuple) -> None:
        with self._lock:
            queues = list(self._watches.values())
        for q in queues:
            q.put(item)

    def _clean(self, exc: BaseException) -> str:
        return scrub(f"{type(exc).__name__}: {exc}", self._secrets)
