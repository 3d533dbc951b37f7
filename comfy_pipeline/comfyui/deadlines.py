"""Total deadlines for HTTP calls: a server or proxy that trickles its answer cannot hold a run forever.

requests' timeouts bound each wait for the next bytes, not the whole answer: headers, a JSON body or a /view
download sent one byte at a time never trip them. Here every request runs under a deadline. The client's
connections note themselves in a per-thread record when they connect or send, and a timer shuts the socket
down when the deadline passes, so the blocked read fails at once and the call raises. No Dagster here.
"""

import contextlib
import socket
import threading
from collections.abc import Iterator

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_local = threading.local()


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
        sock = getattr(connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _note(connection: HTTPConnection) -> None:
    for deadline in getattr(_local, "stack", ()):
        deadline.note(connection)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """Calls made by this thread inside the block are cut off after `seconds` in all; `.expired` says so."""
    current = Deadline()
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    if stack:  # a deadline set inside another one (a download's body) cuts the connection already in use
        current.connection = stack[-1].connection
    stack.append(current)
    timer = threading.Timer(seconds, current.expire)
    timer.daemon = True
    timer.start()
    try:
        yield current
    finally:
        timer.cancel()
        stack.remove(current)


class _Tracked:
    """Makes a connection note itself in the running deadlines when it connects or sends."""

    def connect(self) -> None:
        super().connect()
        _note(self)

    def request(self, *args, **kwargs):  # a kept-alive connection is reused without connect()
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
