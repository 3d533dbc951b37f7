"""Command-line input, state files and output files: every bad input exits 2 naming the file or the value, with
no traceback; a dead run's partial downloads are cleaned up; outputs follow the umask; a read-only command
creates nothing."""

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from comfy_pipeline.batch import outputs
from comfy_pipeline.comfyui.files import save_stream
from comfy_pipeline.definitions import defs
from comfy_pipeline_tests.support.helpers import check


def cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "comfy_pipeline.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_a_timeout_that_is_not_a_finite_positive_number_is_refused(value, tmp_path):
    proc = check(tmp_path, "--test-type", "connection-only", "--timeout", value)
    assert proc.returncode == 2 and "--timeout must be a positive number" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_fifo_as_prompts_file_is_refused_instead_of_hanging(tmp_path):
    fifo = tmp_path / "prompts.json"
    os.mkfifo(fifo)
    proc = check(tmp_path, "--test-type", "image-only", "--prompts-file", str(fifo), timeout=300)  # a hang raises
    assert proc.returncode == 2 and f"--prompts-file {fifo}: not a regular file" in proc.stderr


@pytest.mark.parametrize("content", ["[" * 100_000 + "]" * 100_000, '["a list, not an object"]', '{"version": 1}'],
                         ids=["deeply nested", "wrong shape", "missing fields"])
def test_a_broken_progress_file_exits_2_naming_it(content, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "check-progress.json").write_text(content)
    proc = check(tmp_path, "--report")
    assert proc.returncode == 2, proc.stderr
    assert "check-progress.json" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("content", ["{" * 100_000, '{"a": ' * 1000 + "1" + "}" * 1000, "[1, 2]"],
                         ids=["unbalanced", "deeply nested", "wrong shape"])
def test_a_broken_session_file_exits_2_naming_it(content, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "session-8188.json").write_text(content)
    proc = cli("server", "status", "--state-dir", str(state), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "session-8188.json" in proc.stderr and "Traceback" not in proc.stderr


def test_a_negative_prompt_timeout_is_refused(instance, tmp_path):
    result = defs.resolve_job_def("image_generation_job").execute_in_process(
        run_config={"resources": {"comfy": {"config": {"prompt_timeout": -5, "output_dir": str(tmp_path)}}}},
        instance=instance, raise_on_error=False)
    assert not result.success
    errors = [str(e.dagster_event.event_specific_data.error) for e in instance.all_logs(result.run_id)
              if e.dagster_event and getattr(e.dagster_event.event_specific_data, "error", None)]
    assert any("prompt_timeout" in e and "greater than 0" in e for e in errors)


def temp_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("comfy-simulator-*")}


@pytest.mark.parametrize("port", ["99999", "-1", "in use"])
def test_the_simulator_refuses_a_bad_port_without_a_traceback_or_leftovers(port, tmp_path):
    before = temp_folders()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        number = str(taken.getsockname()[1]) if port == "in use" else port
        proc = cli("simulator", "--port", number, cwd=tmp_path, timeout=30)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and number in proc.stderr
    assert temp_folders() - before == set()


def test_the_next_run_removes_a_dead_runs_partial_download_and_nothing_else(tmp_path):
    images = tmp_path / "runs" / "20261201T000000Z_0b7c9d2e-1111-4a4a-8888-000000000003" / "images"
    images.mkdir(parents=True)
    dead = images / ".00_fox.png.abc123.part"
    dead.write_bytes(b"half a picture")
    live_run = tmp_path / "runs" / "20261201T000001Z_0b7c9d2e-1111-4a4a-8888-000000000004" / "images"
    live_run.mkdir(parents=True)
    live = live_run / ".00_owl.png.def456.part"
    live.write_bytes(b"being written")
    kept = images / "01_done.png"
    kept.write_bytes(b"a finished picture")
    own_folder = images / "upscaled_image"  # a component asset's own folder in the run's images/
    own_folder.mkdir()
    dead_too = own_folder / ".00_fox.png.fed789.part"
    dead_too.write_bytes(b"half a bigger picture")
    live_too = live_run / "upscaled_image" / ".00_owl.png.aaa111.part"
    live_too.parent.mkdir()
    live_too.write_bytes(b"being written")
    removed = outputs.remove_stale_parts(tmp_path, run_ended=lambda run_id: run_id.endswith("0003"))
    assert sorted(removed) == sorted([dead, dead_too]) and not dead.exists() and not dead_too.exists()
    assert live.exists() and kept.exists() and live_too.exists()


def test_outputs_follow_the_umask(tmp_path):
    written = save_stream([b"picture bytes"], tmp_path, "a.png", expected_bytes=None, max_bytes=1000, source="x")
    report = outputs.write_json(tmp_path / "report.json", {"ok": True})
    umask = os.umask(0)
    os.umask(umask)
    for path in (written, report):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_server_status_creates_nothing(tmp_path):
    proc = cli("server", "status", cwd=tmp_path)
    assert proc.returncode == 1 and "not running" in proc.stdout, proc.stderr  # 1: no session is running
    assert list(tmp_path.iterdir()) == []
