"""ffmpeg is called as the real binary, never through the pip wrapper script, so failures are failures and a
kill reaches it."""

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from comfy_pipeline.media import MediaError, binaries, probe
from comfy_pipeline_tests.support.helpers import ffmpeg_processes_since


@pytest.fixture
def fresh_lookup():
    binaries._find.cache_clear()
    yield
    binaries._find.cache_clear()


def test_the_binaries_found_are_real_executables(fresh_lookup):
    for path in (binaries.ffmpeg_path(), binaries.ffprobe_path()):
        assert not binaries.is_script(path), path
        assert Path(path).read_bytes()[:4] == b"\x7fELF"


def test_a_wrapper_script_first_on_path_is_skipped(tmp_path, monkeypatch, fresh_lookup):
    # What an activated venv puts first on PATH: a script that exits 0 whatever ffmpeg did.
    for name in ("ffmpeg", "ffprobe"):
        wrapper = tmp_path / name
        wrapper.write_text("#!/bin/sh\nexit 0\n")
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("COMFY_PIPELINE_FFMPEG", raising=False)
    assert binaries.ffmpeg_path() != str(tmp_path / "ffmpeg")
    # ... and so a failing ffmpeg is a failure: a missing input is not "0 frames, fine".
    missing = subprocess.run([binaries.ffmpeg_path(), "-nostdin", "-v", "error", "-i", str(tmp_path / "nope.mp4"),
                              "-f", "null", "-"], capture_output=True, timeout=30)
    assert missing.returncode != 0


def test_a_garbage_video_is_an_error_not_a_pass(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))
    with pytest.raises(MediaError):
        probe.decode_first_and_last_frame(bad)


def test_killing_ffmpeg_stops_it(tmp_path):
    started = time.time()
    endless = [binaries.ffmpeg_path(), "-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc2",
               "-f", "null", "-"]
    proc = subprocess.Popen(endless, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    time.sleep(0.2)
    assert ffmpeg_processes_since(started) == []
