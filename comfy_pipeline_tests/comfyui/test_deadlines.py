"""Every request and every download has a total deadline: a server or proxy that trickles its answer one byte
at a time is given up on, in bounded time, however patient each read is."""

import time

import pytest

from comfy_pipeline.comfyui import ComfyUIClient
from comfy_pipeline.comfyui.errors import DownloadError, ServerUnreachable
from comfy_pipeline.comfyui.files import OutputFile
from comfy_pipeline_tests.support.hostile_server import HostileServer


def trickle(head: bytes, body: bytes, every: float):
    """An answer that sends `head` and then `body`, one byte every `every` seconds: each read gets a byte in
    time, so no per-read timeout ever trips."""

    def answer(handler) -> None:
        try:
            for byte in head + body:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(every)
        except OSError:
            pass  # the client gave up: as it should

    return answer


# Each trickle lasts minutes and the bounds asserted are tens of seconds: a loaded machine is slow, not that slow.
BOUND = 30


def test_headers_trickled_byte_by_byte_meet_the_total_deadline():
    pad = "x" * 400
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: {pad}\r\nContent-Length: 2\r\n\r\n"
    with HostileServer({"/system_stats": trickle(head.encode(), b"{}", 0.25)}) as server:
        with ComfyUIClient(server.url, connect_timeout=1.0, read_timeout=1.0) as client:
            started = time.monotonic()
            with pytest.raises(ServerUnreachable) as error:
                client.system_stats()
            elapsed = time.monotonic() - started
    assert "no complete answer to GET /system_stats within 2 s" in str(error.value)
    assert elapsed < BOUND  # the trickle would take 110 s; each byte came within the 1 s read timeout


def test_a_json_body_trickled_byte_by_byte_meets_the_total_deadline():
    body = b'{"queue_running": [], "queue_pending": []}' + b" " * 2000
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    with HostileServer({"/queue": trickle(head, body, 0.05)}) as server:  # 100 s in all
        with ComfyUIClient(server.url, connect_timeout=1.0, read_timeout=1.0) as client:
            started = time.monotonic()
            with pytest.raises(ServerUnreachable):
                client.queue()
    assert time.monotonic() - started < BOUND


def test_a_download_trickled_byte_by_byte_is_given_up_and_leaves_no_file(tmp_path):
    body = b"\x89PNG" + b"x" * 996
    head = f"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {len(body)}\r\n\r\n".encode()

    def view(handler) -> None:  # headers at once, then the body one byte every 0.3 s (300 s in all)
        handler.wfile.write(head)
        handler.wfile.flush()
        trickle(b"", body, 0.3)(handler)

    with HostileServer({"/view": view}) as server:
        with ComfyUIClient(server.url, connect_timeout=1.0, read_timeout=1.0) as client:
            started = time.monotonic()
            with pytest.raises(DownloadError) as error:
                client.download(OutputFile("9", "x_00001_.png", "", "output", "image"), tmp_path)
    assert "did not finish within" in str(error.value)
    assert time.monotonic() - started < BOUND
    assert list(tmp_path.iterdir()) == []  # no partial file, hidden or not
