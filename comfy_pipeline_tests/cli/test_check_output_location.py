"""`comfy-pipeline check` keeps its outputs, prompt records and reports in a local folder: an object-store output
location (given, or from COMFY_PIPELINE_OUTPUT_DIR) is refused up front with one line saying what to pass."""

import subprocess
import sys

import pytest

from comfy_pipeline_tests.support.helpers import clean_env


def run_check(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "comfy_pipeline.cli", "check", "--test-type", "connection-only",
         "--comfyui-url", "http://127.0.0.1:9", "--state-dir", str(tmp_path / "state"), *args],
        cwd=tmp_path, env=clean_env(**env), capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize("how", ["environment", "argument"])
def test_an_object_store_output_location_is_a_usage_error(tmp_path, how):
    location = "s3://team-bucket/outputs"
    if how == "environment":
        proc = run_check(tmp_path, COMFY_PIPELINE_OUTPUT_DIR=location)
    else:
        proc = run_check(tmp_path, "--output-dir", location)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()  # one clear line, no traceback
    assert "s3://team-bucket/outputs" in line and "pass --output-dir DIR" in line
    assert not (tmp_path / "comfy_outputs").exists()


def test_credentials_in_the_location_are_never_echoed(tmp_path):
    proc = run_check(tmp_path, "--output-dir", "s3://AKIAEXAMPLE:canary-secret@team-bucket/outputs")
    assert proc.returncode == 2 and "canary-secret" not in proc.stderr and "AKIAEXAMPLE" not in proc.stderr


def test_a_local_folder_given_overrides_an_object_store_in_the_environment(tmp_path):
    proc = run_check(tmp_path, "--output-dir", str(tmp_path / "out"), COMFY_PIPELINE_OUTPUT_DIR="s3://b/o")
    # past the output location, on to the server, which is not there
    assert proc.returncode == 2 and "cannot reach ComfyUI" in proc.stderr and "object store" not in proc.stderr
