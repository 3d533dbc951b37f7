"""A small HTTP server that misbehaves on purpose, in its own thread on loopback: it records every request it
gets (so a test can see which credentials reached it) and answers each path the way a test tells it to."""

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# path -> (status, headers, body); or a callable(handler) that writes the whole answer itself
Answer = tuple[int, dict[str, str], bytes] | Callable[[BaseHTTPRequestHandler], None]


class HostileServer:
    def __init__(self, answers: dict[str, Answer] | None = None, fallback: Answer = (404, {}, b"not here")):
        """`fallback` answers every path not in `answers` (a callable can forward it to a real server)."""
        self.answers: dict[str, Answer] = dict(answers or {})
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, headers)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _answer(self) -> None:
                server.requests.append((self.command, self.path, dict(self.headers)))
                answer = server.answers.get(self.path.split("?")[0], fallback)
                if callable(answer):
                    answer(self)
                    return
                status, headers, body = answer
                self.send_response(status)
                for key, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> "HostileServer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def saw(self, text: str) -> bool:
        """Did any request carry `text` in a header or its path?"""
        return any(text in path or any(text in v for v in headers.values()) for _, path, headers in self.requests)


def forward_to(target: str, corrupt):
    """An answer that passes the request on to `target` and hands back its answer, a finished /history entry
    passed through `corrupt` first: a proxy that mangles exactly one kind of answer."""

    def answer(handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        request = urllib.request.Request(target + handler.path, data=body, method=handler.command,
                                         headers={"Content-Type": handler.headers.get("Content-Type", "")})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, content_type, data = response.status, response.headers.get("Content-Type", ""), response.read()
        except urllib.error.HTTPError as error:
            status, content_type, data = error.code, error.headers.get("Content-Type", ""), error.read()
        if handler.path.startswith("/history/") and status == 200:
            value = json.loads(data)
            data = json.dumps({key: corrupt(item) for key, item in value.items()}).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return answer
