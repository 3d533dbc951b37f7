"""Total deadlines for HTTP calls: a server or proxy that trickles its answer cannot hold a run forever.

requests' timeouts bound each wait for the next bytes, not the whole answer: headers, a JSON body or a /view
download sent one byte at a time never trip them. Here every request runs under a deadline. The client's
connections note themselves in a per-thread record when they connect or send, and a watcher shuts the socket
down when the deadline passes, so the blocked read fails at once and the call raises. No Dagster here.

The bounds, with T = connect timeout + read timeout (5 + 30 s by default):
- one request, headers and (unless streamed) body: at most T;
- retries (idempotent GETs, after a 5xx answer or a connection reset only, never after a deadline) start only
  within the first T of the call, so a call with its retries ends within 2 T + the retry pauses (1.7 s);
- a download's body must keep an average of at least MIN_DOWNLOAD_RATE from the moment its headers came, after a
  grace of the read timeout plus one chunk at that rate (download_grace): at any time t it must have brought
  (t - grace) x MIN_DOWNLOAD_RATE bytes, Content-Length or not (a known length also caps the body at one read
  timeout plus that length at the rate). A body trickling far below that rate is cut off when the grace ends;
- so a trickling download fails within T + grace (69 s by default), or 2 T + 1.7 s + grace (106 s) when the
  server first answered 5xx or reset the connection (download_bound). The text of a 5xx answer to a download is
  read within one read timeout, which the grace covers. A body cut off by its deadline is never taken for a
  whole one, even when no Content-Length says how long it should be.
"""

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

MIN_DOWNLOAD_RATE = 256 * 1024  # bytes/s a download must average; far below any useful rate for an output file
RETRY_PAUSES = (0.2, 0.5, 1.0)  # before each retry of an idempotent GET; POST /prompt is never retried
CHUNK_BYTES = 1024 * 1024  # a download is read (and counted) in chunks this big

_local = threading.local()


def download_grace(read_timeout: float) -> float:
    """Seconds a download's body may bring fewer bytes than the minimum rate asks: one read timeout, plus the
    time one chunk takes at that rate (bytes are counted a chunk at a time)."""
    return read_timeout + CHUNK_BYTES / MIN_DOWNLOAD_RATE


def download_bound(connect_timeout: float, read_timeout: float, *, retried: bool = False) -> float:
    """The longest a download whose body trickles far below MIN_DOWNLOAD_RATE can take before it fails (plus the
    watcher's slack of a few milliseconds): its headers' request (2 T with retries), then the grace."""
    request = connect_timeout + read_timeout
    headers = 2 * request + sum(RETRY_PAUSES) if retried else request
    return headers + download_grace(read_timeout)


class Deadline:
    """One call's deadline: which connection it uses, and whether time ran out."""

    def __init__(self) -> None:
        self.connection: HTTPConnection | None = None
        self.expired = False
        self._lock = threading.Lock()

    def note(self, connection: HTTPConnection) -> None:
        with self._lock:
            self.connection = connection
            expired = self.expired
        if expired:
            self._shut(connection)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            connection = self.connection
        if connection is not None:
            self._shut(connection)

    @staticmethod
    def _shut(connection: HTTPConnection) -> None:
        # http.client lets go of the socket of an answer that ends when the connection closes (no length);
        # the answer still reads from it, so shut the one the connection was using.
        sock = getattr(connection, "sock", None) or getattr(connection, "tracked_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _note(connection: HTTPConnection) -> None:
    for deadline in getattr(_local, "stack", ()):
        deadline.note(connection)


class RateFloor(Deadline):
    """A deadline that moves on with every byte received: expired once fewer than `min_rate` bytes a second
    (counted from the start, after `grace` seconds) have come. `add()` counts what arrived."""

    def __init__(self, grace: float, min_rate: float, cap: float) -> None:
        super().__init__()
        self.started = time.monotonic()
        self.received = 0
        self._grace, self._rate, self._cap = grace, min_rate, cap

    def add(self, count: int) -> None:
        self.received += count  # one writer (the reading thread); the watcher only reads it

    def ends_at(self) -> float:
        return self.started + min(self._cap, self._grace + self.received / self._rate)


@contextlib.contextmanager
def _running(current: Deadline, ends_at) -> Iterator[Deadline]:
    """Push `current` on this thread's stack and expire it once time.monotonic() passes ends_at()."""
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    if stack:  # a deadline set inside another one (a download's body) cuts the connection already in use
        current.connection = stack[-1].connection
    stack.append(current)
    done = threading.Event()

    def watch() -> None:
        while not done.wait(max(0.0, ends_at() - time.monotonic())):
            if time.monotonic() >= ends_at():
                current.expire()
                return

    watcher = threading.Thread(target=watch, name="comfy-deadline", daemon=True)
    watcher.start()
    try:
        yield current
    finally:
        done.set()
        stack.remove(current)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """Calls made by this thread inside the block are cut off after `seconds` in all; `.expired` says so."""
    ends = time.monotonic() + seconds
    with _running(Deadline(), lambda: ends) as current:
        yield current


@contextlib.contextmanager
def rate_floor(grace: float, min_rate: float = MIN_DOWNLOAD_RATE, cap: float = float("inf")) -> Iterator[RateFloor]:
    """Like deadline(), for a body: cut off once it falls below `min_rate` on average after `grace` seconds, or
    after `cap` seconds in all (a body whose length is known); count the bytes with `.add()`."""
    current = RateFloor(grace, min_rate, cap)
    with _running(current, current.ends_at) as running:
        yield running


class _Tracked:
    """Makes a connection note itself in the running deadlines when it connects or sends."""

    tracked_sock: socket.socket | None = None

    def connect(self) -> None:
        super().connect()
        self.tracked_sock = self.sock
        _note(self)

    def request(self, *args, **kwargs):  # a kept-alive connection is reused without connect()
        if self.sock is not None:
            self.tracked_sock = self.sock
        _note(self)
        return super().request(*args, **kwargs)


class _TrackedHTTPConnection(_Tracked, HTTPConnection):
    pass


class _TrackedHTTPSConnection(_Tracked, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter whose connections a deadline can cut off."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
