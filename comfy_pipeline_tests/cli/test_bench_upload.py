"""The bench's S3 upload memory figure on a small file (64 MiB: eight 8 MiB parts), against real S3 API servers on
loopback: the tests' own, and the one the bench starts itself."""

import json
import os
import subprocess
import sys

import pytest
import requests

from comfy_pipeline.cli.bench.memory import UPLOAD_KEY, upload_memory
from comfy_pipeline.cli.bench.s3_target import MOTO_MISSING, THROWAWAY, S3Target, bench_bucket

MiB = 1024**2
SIZE = 64 * MiB


def test_the_upload_figure_puts_the_whole_file_in_parts_with_flat_memory(s3_server, tmp_path):
    bucket = s3_server.new_bucket()
    figure = upload_memory(SIZE, tmp_path, S3Target(s3_server.endpoint, bucket, s3_server.env()))

    assert figure.key == "upload_peak_memory_mb" and figure.error is None
    assert figure.target == 64.0 and figure.passed is True
    assert 0 < figure.ours <= 64
    assert figure.baseline >= 0.9 * SIZE / MiB  # the whole file in memory: what the figure guards against
    assert figure.details["parts"] == SIZE // (8 * MiB) and figure.details["stored_bytes"] == SIZE
    assert figure.details["seconds_ours"] > 0
    data = s3_server.read(bucket, UPLOAD_KEY)  # there, whole: every byte of the (sparse, all-zero) file
    assert len(data) == SIZE and data.count(0) == SIZE
    assert s3_server.uploads(bucket) == []  # no multipart upload left open
    (source,) = (tmp_path / "upload").iterdir()
    assert source.stat().st_size == SIZE and source.stat().st_blocks * 512 < MiB  # sparse: made without disk or RAM


def test_the_bench_starts_its_own_s3_server_and_removes_its_bucket(tmp_path):
    with bench_bucket(tmp_path) as target:
        figure = upload_memory(SIZE, tmp_path, target)
        client = target.client()
        assert client.head_object(Bucket=target.bucket, Key=UPLOAD_KEY)["ContentLength"] == SIZE
        assert target.endpoint.startswith("http://127.0.0.1:")
    assert figure.passed is True and figure.details["endpoint"] == target.endpoint
    # The throwaway credentials were only ever the upload subprocess's and the bench client's.
    assert THROWAWAY["AWS_SECRET_ACCESS_KEY"] not in os.environ.values()
    with pytest.raises(requests.ConnectionError):  # and its server is gone with the bench
        requests.get(target.endpoint, timeout=5)


# `comfy-pipeline bench --quick --json` as if moto were not installed (sys.modules["moto"] = None hides it from
# importlib), with the other measurements stubbed: only the skip is under test here.
WITHOUT_MOTO = """
import sys
sys.modules["moto"] = None
from unittest import mock
from comfy_pipeline.cli import main
from comfy_pipeline.cli.bench import definitions_load, measurements, memory, validation
from comfy_pipeline.cli.bench.report import Figure

def stub(key):
    return Figure(key, key, "s", "a baseline", 1.0, "at_most", 0.5, 1.0)

with mock.patch.object(memory, "download_memory", lambda *a: stub("download_peak_memory_mb")), \\
        mock.patch.object(measurements, "pipeline_figures", lambda *a: ([stub("gpu_utilisation")], None)), \\
        mock.patch.object(measurements, "video_validation", lambda *a: stub("video_validation_s")), \\
        mock.patch.object(validation, "validation_figures", lambda *a: [stub("content_validation_video_s")]), \\
        mock.patch.object(definitions_load, "definitions_validate", lambda *a: stub("definitions_validate_s")):
    sys.argv = ["comfy-pipeline", "bench", "--quick", "--json"]
    sys.exit(main())
"""


def test_without_moto_the_upload_figure_is_skipped_in_one_line_and_the_others_still_count(tmp_path):
    proc = subprocess.run([sys.executable, "-c", WITHOUT_MOTO], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["skipped"] == {"upload_peak_memory_mb": MOTO_MISSING}
    assert "upload_peak_memory_mb" not in {f["key"] for f in report["figures"]} and report["passed"] is True
    (line,) = [line for line in proc.stderr.splitlines() if "upload" in line]
    assert line == f"bench: S3 upload memory skipped: {MOTO_MISSING}" and 'pip install -e ".[dev]"' in line
