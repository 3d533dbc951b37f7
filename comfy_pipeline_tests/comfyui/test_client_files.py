"""Uploads and downloads against the real simulator: content-addressed upload names, streamed download of a
big file with flat memory, the size limit, and server-given names that try to leave the target folder."""

import hashlib
import os
import threading
import time

import psutil
import pytest
from PIL import Image

from comfy_pipeline.comfyui import ComfyUIClient, DownloadError, OutputFile
from comfy_pipeline.simulator import Simulator


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with Simulator(data_dir=tmp_path_factory.mktemp("sim_files"), image_seconds=0.05, video_seconds=0.2) as s:
        yield s


@pytest.fixture
def client(sim):
    sim.clear_faults()
    with ComfyUIClient(sim.url) as c:
        yield c
    sim.clear_faults()


def png(path, color) -> None:
    Image.new("RGB", (16, 12), color).save(path)


def test_upload_same_bytes_same_name_different_bytes_different_name(client, sim, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    png(a / "ref.png", (255, 0, 0))
    png(b / "ref.png", (0, 0, 255))  # same file name, other bytes

    first = client.upload_image(a / "ref.png")
    again = client.upload_image(a / "ref.png")
    other = client.upload_image(b / "ref.png")

    assert first == again
    assert first != other
    assert first.startswith("comfy_pipeline/ref-") and first.endswith(".png")
    assert "(1)" not in other
    sha = hashlib.sha256((a / "ref.png").read_bytes()).hexdigest()[:12]
    assert first == f"comfy_pipeline/ref-{sha}.png"
    assert (sim.input_dir / first).read_bytes() == (a / "ref.png").read_bytes()
    assert (sim.input_dir / other).read_bytes() == (b / "ref.png").read_bytes()

    # The returned value is what LoadImage takes, and the server finds the file.
    result = client.run({
        "1": {"class_type": "LoadImage", "inputs": {"image": first}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "client/loaded"}},
    }, timeout=20)
    assert result.outputs


def test_upload_of_a_missing_file_says_so(client, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        client.upload_image(tmp_path / "nope.png")


class PeakRSS:
    """Samples this process's resident memory in a thread; .growth is the peak over the start value."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self.start = self.peak = self._proc.memory_info().rss

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> "PeakRSS":
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.start


def test_large_download_is_streamed_with_flat_memory(client, sim, tmp_path):
    size = 300 * 1024 * 1024
    big = sim.output_dir / "client" / "big_00001_.mp4"
    big.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(1024 * 1024)
    digest = hashlib.sha256()
    with open(big, "wb") as out:
        for _ in range(size // len(block)):
            out.write(block)
            digest.update(block)

    file = OutputFile("9", big.name, "client", "output", "video")
    with PeakRSS() as rss:
        path = client.download(file, tmp_path)
    big.unlink()

    assert path.stat().st_size == size
    check = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            check.update(chunk)
    assert check.hexdigest() == digest.hexdigest()
    assert rss.growth < 64 * 1024 * 1024, f"memory grew by {rss.growth / 2**20:.0f} MiB during the download"


def test_size_limit_refuses_and_leaves_nothing(sim, tmp_path):
    result_dir = tmp_path / "dest"
    with ComfyUIClient(sim.url, max_download_bytes=100) as client:
        result = client.run({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 1}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "client/limit"}},
        }, timeout=20)
        with pytest.raises(DownloadError, match="limit of 100 bytes"):
            client.download(result.outputs[0], result_dir)
    assert not result_dir.exists() or list(result_dir.iterdir()) == []


def test_missing_output_file_is_a_download_error(client, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        client.download(OutputFile("2", "not_there.png", "", "output", "image"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_hostile_filenames_never_leave_dest_dir(client, sim, tmp_path):
    workflow = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 2}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "client/hostile"}},
    }
    dest = tmp_path / "a" / "b" / "dest"
    dest.mkdir(parents=True)

    # The history names the output "../../name.png" in subfolder "../..": the server itself refuses to serve
    # that (like ComfyUI's /view), and the client reports it without writing anything.
    sim.set_fault("hostile-filename")
    hostile = client.run(workflow, timeout=20)
    sim.clear_faults()
    (file,) = hostile.outputs
    assert file.filename.startswith("../../") and file.subfolder == "../.."
    with pytest.raises(DownloadError, match="HTTP 400"):
        client.download(file, dest)

    # A server that does serve such names: the bytes arrive, and the local name is cut down to a plain file name.
    (good,) = client.run({**workflow, "1": {**workflow["1"], "inputs": {**workflow["1"]["inputs"], "color": 3}}},
                         timeout=20).outputs
    written = [client.download(good, dest, filename=name)
               for name in ("../../../escape.png", "/tmp/absolute.png", "..\\win.png", ".hidden.png", "sub/dir/x.png")]
    assert [p.name for p in written] == ["escape.png", "absolute.png", "win.png", "hidden.png", "x.png"]
    everything = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert sorted(everything) == sorted(written)
    assert all(p.parent == dest for p in everything)
    with pytest.raises(DownloadError, match="not a usable file name"):
        client.download(good, dest, filename="..")
