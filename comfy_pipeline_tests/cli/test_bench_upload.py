"""The bench's S3 upload memory figure on a small file (64 MiB: eight 8 MiB parts), against real S3 API servers on
loopback: the tests' own, and the one the bench starts itself."""

import os

import pytest
import requests

from comfy_pipeline.cli.bench.memory import UPLOAD_KEY, upload_memory
from comfy_pipeline.cli.bench.s3_target import THROWAWAY, S3Target, bench_bucket

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
