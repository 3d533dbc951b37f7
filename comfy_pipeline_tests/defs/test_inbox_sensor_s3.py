"""The inbox sensor with its inbox on an S3 API server (moto's, on loopback), evaluated on a real Dagster
instance: one run per content, settled objects only, bad objects set aside once with their reason, the image
beside a prompt passed on as its s3:// URI, a tick of a large handled inbox that only lists, and a store that
cannot be reached giving a skip reason that says what to fix."""

import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image

from comfy_pipeline.batch import inbox
from comfy_pipeline.definitions import defs
from comfy_pipeline.defs.resources import ComfyUIResource
from comfy_pipeline.defs.sensors import prompt_inbox_sensor
from comfy_pipeline.storage import open_store
from comfy_pipeline.storage.s3 import S3Store
from comfy_pipeline_tests.support.s3_server import SECRET_KEY


@pytest.fixture
def location(s3_env) -> str:
    return f"s3://{s3_env.new_bucket()}/out"


@pytest.fixture
def comfy(location) -> ComfyUIResource:
    return ComfyUIResource(url="http://127.0.0.1:9", output_dir=location)


@pytest.fixture
def store(location):
    return open_store(location)


@pytest.fixture
def s3_calls(monkeypatch) -> list[tuple[str, str | None]]:
    """Every S3 request made through a store in this test (the sensor's own included): (operation, key or
    listed prefix)."""
    calls, counted = [], set()
    real = S3Store.client

    def record(model, params, **_):
        calls.append((model.name, params.get("Key", params.get("Prefix"))))

    def client(self):
        made = real.fget(self)
        if id(made) not in counted:
            counted.add(id(made))
            made.meta.events.register("before-parameter-build.s3", record)
        return made

    monkeypatch.setattr(S3Store, "client", property(client))
    return calls


def tick(instance, comfy, cursor: str | None = None):
    with dg.build_sensor_context(instance=instance, resources={"comfy": comfy}, definitions=defs,
                                 cursor=cursor) as context:
        result = prompt_inbox_sensor(context)
        return result, context.cursor


def requests(result) -> list[dg.RunRequest]:
    return list(result.run_requests) if isinstance(result, dg.SensorResult) else []


def on_inbox(calls) -> list[tuple[str, str]]:
    """The requests about the inbox (not, say, the circuit breaker's look at its reset marker)."""
    return [(op, key) for op, key in calls if key and "/inbox/" in key]


def reads(calls) -> list[str]:
    return [key for op, key in on_inbox(calls) if op in ("GetObject", "HeadObject")]


def png(color: str = "red") -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/i.png"
        Image.new("RGB", (64, 64), color).save(path)
        with open(path, "rb") as fh:
            return fh.read()


def test_a_settled_prompt_runs_once_per_content(instance, comfy, store, s3_calls):
    store.put_bytes("inbox/fox.txt", b"a red fox in snow\n")
    batch = [{"text": "a lighthouse", "seed": 3}, {"text": "a harbour"}]
    store.put_bytes("inbox/batch.json", json.dumps(batch).encode())
    result, cursor = tick(instance, comfy)
    first = {r.tags["comfy_pipeline/inbox_file"]: r for r in requests(result)}
    assert set(first) == {"batch.json", "fox.txt"}
    assert first["fox.txt"].job_name == "image_to_video_job"
    config = first["batch.json"].run_config
    assert [p["text"] for p in config["ops"]["prompt"]["config"]["prompts"]] == ["a lighthouse", "a harbour"]
    dg.validate_run_config(defs.resolve_job_def("image_to_video_job"), config)

    # The same content uploaded again: not even read with the cursor, the same run key without it.
    store.put_bytes("inbox/fox.txt", b"a red fox in snow\n", replace=True)
    s3_calls.clear()
    result, cursor = tick(instance, comfy, cursor)
    assert isinstance(result, dg.SkipReason) and f"no new prompt files in {store.uri('inbox')}/" in result.skip_message
    assert reads(s3_calls) == []
    again, _ = tick(instance, comfy)
    assert {r.run_key for r in requests(again)} == {r.run_key for r in first.values()}

    # An edited object is read again and gets a new run key.
    store.put_bytes("inbox/fox.txt", b"a red fox in deep snow\n", replace=True)
    s3_calls.clear()
    result, cursor = tick(instance, comfy, cursor)
    (edited,) = requests(result)
    assert edited.tags["comfy_pipeline/inbox_file"] == "fox.txt" and edited.run_key != first["fox.txt"].run_key
    assert reads(s3_calls) == [store._key("inbox/fox.txt")]


def test_an_object_modified_within_the_settle_period_waits(instance, comfy, store, monkeypatch):
    monkeypatch.setenv("COMFY_PIPELINE_INBOX_SETTLE_S", "3600")
    store.put_bytes("inbox/slow.txt", b"a lighthouse in the fog")
    result, cursor = tick(instance, comfy)
    assert isinstance(result, dg.SkipReason) and "slow.txt: still being written" in result.skip_message
    monkeypatch.setenv("COMFY_PIPELINE_INBOX_SETTLE_S", "0")
    result, _ = tick(instance, comfy, cursor)
    assert [r.tags["comfy_pipeline/inbox_file"] for r in requests(result)] == ["slow.txt"]


def test_a_bad_object_is_set_aside_once_with_its_reason(instance, comfy, store, s3_server, s3_calls):
    store.put_bytes("inbox/broken.json", b'{"text": "x",')
    store.put_bytes("inbox/good.txt", b"a quiet forest")
    store.put_bytes("inbox/rejected/20260101T000000Z_old.txt", b"a good prompt set aside long ago")
    result, cursor = tick(instance, comfy)
    assert [r.tags["comfy_pipeline/inbox_file"] for r in requests(result)] == ["good.txt"]
    keys = s3_server.keys(store.bucket, "out/inbox/")
    (moved,) = [k for k in keys if k.endswith("_broken.json")]
    assert moved.startswith("out/inbox/rejected/") and "out/inbox/broken.json" not in keys
    assert s3_server.read(store.bucket, moved) == b'{"text": "x",'
    reason = s3_server.read(store.bucket, moved + ".reason.txt").decode()
    assert reason.startswith("broken.json: invalid JSON at line 1, column 14")

    result, _ = tick(instance, comfy, cursor)  # reported once
    assert isinstance(result, dg.SkipReason) and "broken.json" not in result.skip_message
    # Nothing under rejected/ was ever read, nor run (only the move looked whether its new name was free).
    assert not [key for op, key in s3_calls if op == "GetObject" and "/rejected/" in key]
    assert all(key.endswith("_broken.json") for op, key in s3_calls if op == "CopyObject")


def test_an_image_beside_a_prompt_makes_a_video_request_with_its_s3_uri(instance, comfy, store, tmp_path,
                                                                       monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the sensor's temporary download goes
    store.put_bytes("inbox/scene.txt", b"slow pan to the right")
    store.put_bytes("inbox/scene.png", png())
    result, _ = tick(instance, comfy)
    (request,) = requests(result)
    assert request.job_name == "video_generation_job"
    config = request.run_config["ops"]["ltx2_video"]["config"]
    assert config["input_images"] == [store.uri("inbox/scene.png")]
    assert config["input_images"][0].startswith("s3://")
    assert config["motion_prompt"] == "slow pan to the right"
    dg.validate_run_config(defs.resolve_job_def("video_generation_job"), request.run_config)
    assert list(scratch.iterdir()) == []  # the downloaded image is gone after the tick

    # Another image beside the same prompt is another content: another run.
    store.put_bytes("inbox/scene.png", png("blue"), replace=True)
    result, _ = tick(instance, comfy)
    (other,) = requests(result)
    assert other.run_key != request.run_key


def test_a_bad_image_beside_a_prompt_is_set_aside_with_it(instance, comfy, store, s3_server, tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    store.put_bytes("inbox/scene.txt", b"slow pan")
    store.put_bytes("inbox/scene.png", b"not an image")
    result, _ = tick(instance, comfy)
    assert isinstance(result, dg.SkipReason)
    assert "scene.txt: the image beside it, scene.png, cannot be used" in result.skip_message
    assert "not an image Pillow can read" in result.skip_message and "moved to rejected/" in result.skip_message
    assert str(scratch) not in result.skip_message and store.uri("inbox/scene.png") in result.skip_message
    keys = s3_server.keys(store.bucket, "out/inbox/")
    assert all(k.startswith("out/inbox/rejected/") for k in keys)
    assert sorted(k.rsplit("_", 1)[-1] for k in keys) == ["scene.png", "scene.txt", "scene.txt.reason.txt"]
    assert list(scratch.iterdir()) == []


def test_an_object_the_store_will_not_give_is_left_in_place_and_tried_again(instance, comfy, store, monkeypatch):
    from comfy_pipeline.storage import StoreError

    real = S3Store.get_bytes

    def refuse_one(self, key, **kwargs):
        if key == "inbox/locked.txt":
            raise StoreError(f"reading {self.uri(key)}: access denied (AccessDenied); check the AWS credentials")
        return real(self, key, **kwargs)

    store.put_bytes("inbox/good.txt", b"a quiet forest")
    store.put_bytes("inbox/locked.txt", b"a locked door")
    monkeypatch.setattr(S3Store, "get_bytes", refuse_one)
    result, cursor = tick(instance, comfy)
    assert [r.tags["comfy_pipeline/inbox_file"] for r in requests(result)] == ["good.txt"]
    assert store.exists("inbox/locked.txt")  # the store's fault, not the file's: not set aside
    assert not [o for o in store.objects("inbox/rejected")]
    monkeypatch.setattr(S3Store, "get_bytes", real)
    result, _ = tick(instance, comfy, cursor)
    assert [r.tags["comfy_pipeline/inbox_file"] for r in requests(result)] == ["locked.txt"]


def test_a_missing_bucket_is_a_clear_skip(instance, s3_env):
    comfy = ComfyUIResource(url="http://127.0.0.1:9", output_dir="s3://no-such-bucket-for-comfy/out")
    result, cursor = tick(instance, comfy, '{"fox.txt": [3, "etag"]}')
    assert isinstance(result, dg.SkipReason)
    message = result.skip_message
    assert "Cannot look into the inbox s3://no-such-bucket-for-comfy/out/inbox/" in message
    assert "the bucket does not exist; create it, or fix the output location" in message
    assert "Traceback" not in message and SECRET_KEY not in message
    assert cursor == '{"fox.txt": [3, "etag"]}'  # nothing was handled: the cursor is kept


def test_an_unreachable_endpoint_is_a_clear_skip(instance, s3_env, monkeypatch):
    from comfy_pipeline_tests.support.helpers import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    comfy = ComfyUIResource(url="http://127.0.0.1:9", output_dir="s3://some-bucket/out")
    result, _ = tick(instance, comfy)
    assert isinstance(result, dg.SkipReason)
    assert "Cannot look into the inbox s3://some-bucket/out/inbox/" in result.skip_message
    assert "Could not connect to the endpoint URL" in result.skip_message
    assert SECRET_KEY not in result.skip_message


@pytest.mark.slow
def test_a_tick_over_ten_thousand_handled_objects_only_lists(instance, comfy, store, s3_server, s3_calls):
    client = s3_server.client()
    with ThreadPoolExecutor(10) as pool:  # moto takes ~10 ms an object: in parallel, about a minute
        list(pool.map(lambda i: client.put_object(Bucket=store.bucket, Key=f"out/inbox/p{i:05d}.txt",
                                                  Body=f"prompt {i}".encode()), range(10_000)))
    # The cursor as a first tick leaves it: every object handled (a real first tick would request 10,000 runs).
    listed = inbox.scan(store, {}, settle=0)
    for dropped in listed.ready:
        inbox.mark_handled(listed, dropped)
    cursor = inbox.dump_cursor(listed)
    assert len(listed.cursor) == 10_000
    store.put_bytes("inbox/new.txt", b"the one new prompt")

    s3_calls.clear()
    started = time.monotonic()
    result, cursor = tick(instance, comfy, cursor)
    took = time.monotonic() - started
    print(f"\na tick over 10,001 inbox objects (10,000 handled) on moto took {took:.2f} s; "
          f"{len(on_inbox(s3_calls))} requests on the inbox")
    (request,) = requests(result)
    assert request.tags["comfy_pipeline/inbox_file"] == "new.txt"
    assert [op for op, _ in on_inbox(s3_calls)] == ["ListObjectsV2"] * 11 + ["GetObject"]  # pages of 1,000
    assert reads(s3_calls) == [store._key("inbox/new.txt")]

    s3_calls.clear()
    started = time.monotonic()
    result, _ = tick(instance, comfy, cursor)
    took = time.monotonic() - started
    print(f"the next tick, nothing new, took {took:.2f} s; {len(on_inbox(s3_calls))} requests on the inbox")
    assert isinstance(result, dg.SkipReason) and "no new prompt files" in result.skip_message
    assert {op for op, _ in on_inbox(s3_calls)} == {"ListObjectsV2"} and reads(s3_calls) == []


def test_an_inbox_drop_on_the_store_runs_and_its_video_lands_there(instance, store, location, s3_server, simulator,
                                                                   tmp_path, monkeypatch):
    # The whole way: a prompt and an image dropped on the store, the sensor's request, the run it starts.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    comfy = ComfyUIResource(url=simulator.url, output_dir=location)
    spec = {"text": "a heron", "motion_prompt": "slow push-in", "frames": 9, "fps": 8}
    store.put_bytes("inbox/heron.json", json.dumps(spec).encode())
    with tempfile.TemporaryDirectory() as tmp:
        Image.effect_noise((640, 480), 60).convert("RGB").save(f"{tmp}/heron.png")  # enough detail to animate
        store.put_file(Path(tmp) / "heron.png", "inbox/heron.png")
    result, _ = tick(instance, comfy)
    (request,) = requests(result)
    config = {**request.run_config, "resources": {"comfy": {"config": {"url": simulator.url,
                                                                        "output_dir": location}}}}
    run = defs.resolve_job_def(request.job_name).execute_in_process(run_config=config, instance=instance,
                                                                    tags=request.tags)
    assert run.success, [e.message for e in run.all_events if e.is_failure]
    videos = [k for k in s3_server.keys(store.bucket, "out/runs/") if "/videos/" in k]
    assert len(videos) == 1 and videos[0].endswith(".mp4")
    assert list(scratch.iterdir()) == []  # the sensor's download and the run's staging folder are gone
