"""Both stores keep the same promises, over a real folder and a real S3 API server on loopback."""

import os
from pathlib import Path

import pytest

from comfy_pipeline.storage import ObjectExists, ObjectMissing, StoreError, open_store
from comfy_pipeline.storage import s3 as s3_store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path: Path):
    if request.param == "local":
        return open_store(str(tmp_path / "out"))
    server = request.getfixturevalue("s3_env")
    return open_store(f"s3://{server.new_bucket()}/some/prefix")


def test_bytes_round_trip_and_no_overwrite(store):
    assert store.put_bytes("runs/r1/reports/a.json", b"{}") == "runs/r1/reports/a.json"
    assert store.get_bytes("runs/r1/reports/a.json") == b"{}"
    with pytest.raises(ObjectExists, match="never overwritten"):
        store.put_bytes("runs/r1/reports/a.json", b"other")
    assert store.get_bytes("runs/r1/reports/a.json") == b"{}"
    store.put_bytes("runs/r1/reports/a.json", b"new", replace=True)
    assert store.get_bytes("runs/r1/reports/a.json") == b"new"
    with pytest.raises(ObjectMissing):
        store.get_bytes("runs/r1/reports/none.json")


def test_files_take_the_next_free_name(store, tmp_path: Path):
    source = tmp_path / "00_fox.png"
    source.write_bytes(b"png-bytes")
    assert store.put_file(source, "runs/r/images/00_fox.png") == "runs/r/images/00_fox.png"
    with pytest.raises(ObjectExists):
        store.put_file(source, "runs/r/images/00_fox.png")
    assert store.put_file(source, "runs/r/images/00_fox.png", free_name=True) == "runs/r/images/00_fox_1.png"
    fetched = store.get_file("runs/r/images/00_fox_1.png", tmp_path / "fetched")
    assert fetched.read_bytes() == b"png-bytes"
    assert store.key_of(store.uri("runs/r/images/00_fox_1.png")) == "runs/r/images/00_fox_1.png"


def test_listing_in_pages_and_one_level(store):
    for i in range(7):
        store.put_bytes(f"inbox/p{i}.txt", b"x" * i)
    store.put_bytes("inbox/rejected/old.txt", b"x")
    flat = list(store.objects("inbox", recursive=False, page_size=3))
    assert [o.key for o in flat] == [f"inbox/p{i}.txt" for i in range(7)]
    assert [o.size for o in flat] == list(range(7))
    assert "inbox/rejected/old.txt" in [o.key for o in store.objects("inbox", page_size=2)]
    assert list(store.objects("nothing-here")) == []


def test_move_and_delete(store):
    store.put_bytes("inbox/bad.txt", b"bad")
    store.put_bytes("inbox/rejected/taken.txt", b"t")
    with pytest.raises(ObjectExists):
        store.move("inbox/bad.txt", "inbox/rejected/taken.txt")
    assert store.move("inbox/bad.txt", "inbox/rejected/bad.txt") == "inbox/rejected/bad.txt"
    assert not store.exists("inbox/bad.txt") and store.get_bytes("inbox/rejected/bad.txt") == b"bad"
    store.delete("inbox/rejected/bad.txt")
    store.delete("inbox/rejected/bad.txt")  # already gone: no error
    assert store.stat("inbox/rejected/bad.txt") is None


def test_keys_cannot_leave_the_store(store):
    for key in ("../escape.txt", "/abs.txt", "a/../../b"):
        with pytest.raises(StoreError, match="refusing key"):
            store.put_bytes(key, b"x")


@pytest.fixture
def big(tmp_path: Path, monkeypatch) -> Path:
    """An 11 MiB file, with parts of 5 MiB from 6 MiB on: three parts."""
    monkeypatch.setattr(s3_store, "MULTIPART_FROM", 6 * 1024 * 1024)
    monkeypatch.setattr(s3_store, "PART_BYTES", 5 * 1024 * 1024)
    path = tmp_path / "big.mp4"
    path.write_bytes(os.urandom(11 * 1024 * 1024))
    return path


def test_a_big_file_goes_up_in_parts_and_never_replaces(s3_env, big: Path):
    bucket = s3_env.new_bucket()
    store = open_store(f"s3://{bucket}/p")
    assert store.put_file(big, "runs/r/videos/v.mp4") == "runs/r/videos/v.mp4"
    head = s3_env.client().head_object(Bucket=bucket, Key="p/runs/r/videos/v.mp4")
    assert head["ContentLength"] == big.stat().st_size and head["ETag"].strip('"').endswith("-3")  # 3 parts
    with pytest.raises(ObjectExists):
        store.put_file(big, "runs/r/videos/v.mp4")
    assert s3_env.uploads(bucket) == []  # the refused upload was aborted, not left behind


def test_an_upload_cut_short_leaves_nothing_under_the_key(s3_env, big: Path, monkeypatch):
    bucket = s3_env.new_bucket()
    store = open_store(f"s3://{bucket}")
    calls = []
    real_upload_part = store.client.upload_part

    def interrupted(**kwargs):
        calls.append(kwargs["PartNumber"])
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a SIGTERM turned into an exception does mid-upload
        return real_upload_part(**kwargs)

    monkeypatch.setattr(store.client, "upload_part", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.put_file(big, "runs/r/videos/v.mp4")
    assert s3_env.keys(bucket) == [] and s3_env.uploads(bucket) == []


def test_abandoned_uploads_are_swept_by_key(s3_env):
    bucket = s3_env.new_bucket()
    store = open_store(f"s3://{bucket}/pre")
    client = s3_env.client()
    for key in ("pre/runs/dead/videos/a.mp4", "pre/runs/live/videos/b.mp4"):
        client.create_multipart_upload(Bucket=bucket, Key=key)
    assert store.abort_uploads("runs", lambda key: "/dead/" in key) == ["runs/dead/videos/a.mp4"]
    assert s3_env.uploads(bucket) == ["pre/runs/live/videos/b.mp4"]


def test_errors_say_what_to_fix_without_secrets(s3_env, monkeypatch):
    store = open_store("s3://no-such-bucket-here/p")
    with pytest.raises(StoreError, match="bucket does not exist") as missing:
        store.put_bytes("a.txt", b"x")
    assert s3_env.env()["AWS_SECRET_ACCESS_KEY"] not in str(missing.value)
    with pytest.raises(StoreError, match="s3://bucket/prefix"):
        open_store("s3://user:pw@bucket/p")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "not-a-url")
    with pytest.raises(StoreError, match="is not a URL"):
        open_store("s3://bucket-x/p").put_bytes("a.txt", b"x")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(StoreError, match="endpoint http://127.0.0.1:9"):
        open_store("s3://bucket-x/p").put_bytes("a.txt", b"x")
