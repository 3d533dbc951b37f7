"""A /view download that trickles far below any useful rate fails within the bound deadlines.py documents
(download_bound), with or without Content-Length, retries included; a body cut off without Content-Length is
refused, never kept as if whole. Each download runs in a thread the test waits for with a generous deadline, so
the old code (hours at 1 byte a second) fails the test instead of hanging it."""

import threading
import time

import pytest

from comfy_pipeline.comfyui import ComfyUIClient
from comfy_pipeline.comfyui.deadlines import download_bound
from comfy_pipeline.comfyui.errors import DownloadError, ServerError
from comfy_pipeline.comfyui.files import OutputFile
from comfy_pipeline_tests.support.hostile_server import HostileServer

CONNECT, READ = 1.0, 2.0  # the bound is then 3 s + 6 s: a trickle of hours shows as a plain failure
MARGIN = 20.0  # seconds allowed past the bound: a loaded machine is slow, not hours slow
OUTPUT = OutputFile("9", "x_00001_.png", "", "output", "image")


def trickling_body(head: bytes, every: float, stop: threading.Event):
    """Headers at once (no Content-Length), then one byte every `every` seconds until the client hangs up."""

    def answer(handler) -> None:
        try:
            handler.wfile.write(head)
            handler.wfile.flush()
            while not stop.wait(every):
                handler.wfile.write(b"x")
                handler.wfile.flush()
        except OSError:
            pass  # the client gave up, as it should

    return answer


def download_in_thread(client: ComfyUIClient, dest, timeout: float) -> tuple[object, float]:
    """(what download() returned or raised, seconds it took); fails the test if it runs past `timeout`."""
    outcome: list = []
    started = time.monotonic()

    def run() -> None:
        try:
            outcome.append(client.download(OUTPUT, dest))
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)
        outcome.append(time.monotonic() - started)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the download was still running after {timeout:.0f} s"
    return outcome[0], outcome[1]


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n"


def test_a_download_without_content_length_trickling_a_byte_a_second_fails_within_the_bound(tmp_path):
    stop = threading.Event()
    bound = download_bound(CONNECT, READ)
    with HostileServer({"/view": trickling_body(HEAD, 1.0, stop)}) as server:
        with ComfyUIClient(server.url, connect_timeout=CONNECT, read_timeout=READ) as client:
            outcome, seconds = download_in_thread(client, tmp_path, bound + MARGIN)
        stop.set()
    assert isinstance(outcome, DownloadError), outcome
    assert "did not finish within" in str(outcome) and "256 KiB/s" in str(outcome)
    assert seconds <= bound + MARGIN
    assert list(tmp_path.iterdir()) == []  # no partial file, hidden or not


def test_a_body_cut_off_without_content_length_is_refused_not_kept(tmp_path):
    """The shut socket reads as the end of a body that only the closing connection ends: what came must not pass
    for a whole file. (With a 1 MiB size limit the old deadline, read timeout + limit at 256 KiB/s, cut it at 6 s
    and kept the first bytes as the output.)"""
    stop = threading.Event()
    bound = download_bound(CONNECT, READ)
    with HostileServer({"/view": trickling_body(HEAD + b"\x89PNG", 0.5, stop)}) as server:
        with ComfyUIClient(server.url, connect_timeout=CONNECT, read_timeout=READ,
                           max_download_bytes=1024 * 1024) as client:
            outcome, seconds = download_in_thread(client, tmp_path, bound + MARGIN)
        stop.set()
    assert isinstance(outcome, DownloadError), f"a cut-off body was kept as {outcome}"
    assert seconds <= bound + MARGIN
    assert list(tmp_path.iterdir()) == []


def test_a_trickle_after_failed_attempts_still_fails_within_the_bound_with_retries(tmp_path):
    stop = threading.Event()
    attempts = []
    trickle = trickling_body(HEAD, 1.0, stop)

    def view(handler) -> None:  # two quick 503s (retried), then the trickle
        attempts.append(time.monotonic())
        if len(attempts) <= 2:
            handler.send_response(503)
            handler.send_header("Content-Length", "4")
            handler.end_headers()
            handler.wfile.write(b"busy")
        else:
            trickle(handler)

    bound = download_bound(CONNECT, READ, retried=True)
    with HostileServer({"/view": view}) as server:
        with ComfyUIClient(server.url, connect_timeout=CONNECT, read_timeout=READ) as client:
            outcome, seconds = download_in_thread(client, tmp_path, bound + MARGIN)
        stop.set()
    assert len(attempts) == 3
    assert isinstance(outcome, DownloadError), outcome
    assert seconds <= bound + MARGIN
    assert list(tmp_path.iterdir()) == []


def test_an_error_answer_to_a_download_trickling_its_text_fails_within_the_bound(tmp_path):
    """A 500 to GET /view, its text (no Content-Length) one byte a second: the text is read within one read
    timeout, not to its end."""
    stop = threading.Event()
    head = b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
    bound = download_bound(CONNECT, READ, retried=True)
    with HostileServer({"/view": trickling_body(head, 1.0, stop)}) as server:
        with ComfyUIClient(server.url, connect_timeout=CONNECT, read_timeout=READ) as client:
            outcome, seconds = download_in_thread(client, tmp_path, bound + MARGIN)
        stop.set()
    assert isinstance(outcome, ServerError) and outcome.status == 500, outcome
    assert seconds <= bound + MARGIN


@pytest.mark.parametrize("with_length", [True, False])
def test_a_download_at_a_useful_rate_is_kept_whole(tmp_path, with_length):
    """The floor is far below a useful rate: 4 MiB sent in 64 KiB pieces, with pauses, arrives intact."""
    body = bytes(range(256)) * (4 * 4096)
    length = f"Content-Length: {len(body)}\r\n".encode() if with_length else b""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n" + length + b"Connection: close\r\n\r\n"

    def view(handler) -> None:
        handler.wfile.write(head)
        for start in range(0, len(body), 65536):
            handler.wfile.write(body[start:start + 65536])
            handler.wfile.flush()
            time.sleep(0.01)

    with HostileServer({"/view": view}) as server:
        with ComfyUIClient(server.url, connect_timeout=CONNECT, read_timeout=READ) as client:
            outcome, _ = download_in_thread(client, tmp_path, 120)
    assert not isinstance(outcome, Exception), outcome
    assert outcome.read_bytes() == body
