"""The pipeline's small state under an object-store output location (a real S3 API server on loopback, a real
Dagster instance): the failure log as one object per failed run, the prompts a failed run left behind cancelled
from its records on the store, the circuit breaker's reset marker as an object, and a store that cannot be
reached turned into a warning, never a traceback."""

import datetime as dt
import json
import os
import uuid

import dagster as dg
import pytest

from comfy_pipeline.batch import ledger
from comfy_pipeline.definitions import defs
from comfy_pipeline.defs import circuit_breaker
from comfy_pipeline.defs.resources import ComfyUIResource
from comfy_pipeline.defs.schedules import daily_image_to_video_schedule
from comfy_pipeline.storage import open_store
from comfy_pipeline_tests.support.helpers import evaluate_failure_sensor, free_port, wait_until

DEAD_SERVER = "http://127.0.0.1:9"


@pytest.fixture
def bucket(s3_env) -> str:
    return s3_env.new_bucket()


@pytest.fixture
def location(bucket) -> str:
    return f"s3://{bucket}/team/out"


def fail_runs(instance, n: int, location: str, job_name: str = "image_generation_job") -> list[str]:
    """Real failed pipeline runs with their outputs on the store: the ComfyUI server at port 9 is not there."""
    config = {"resources": {"comfy": {"config": {"url": DEAD_SERVER, "output_dir": location}}}}
    job = defs.resolve_job_def(job_name)
    return [job.execute_in_process(run_config=config, instance=instance, raise_on_error=False).run_id
            for _ in range(n)]


def test_each_failed_run_is_one_object_in_failures(instance, s3_env, bucket, location, monkeypatch, tmp_path):
    monkeypatch.setenv("COMFYUI_TOKEN", "canary-token-123")  # credentials come from the environment only
    monkeypatch.chdir(tmp_path)  # nothing may land in the working folder either
    comfy = ComfyUIResource(url=DEAD_SERVER, output_dir=location)
    run_ids = fail_runs(instance, 2, location)
    for run_id in run_ids:
        evaluate_failure_sensor(instance, run_id, comfy)
    keys = s3_env.keys(bucket, "team/out/failures/")
    assert len(keys) == 2
    for run_id in run_ids:
        (key,) = [k for k in keys if k.endswith(f"_{run_id}.json")]
        assert key.startswith("team/out/failures/20")  # failures/<UTC time>_<run id>.json
        text = s3_env.read(bucket, key).decode()
        entry = json.loads(text)
        assert entry["job"] == "image_generation_job" and entry["run_id"] == run_id
        assert "not reachable" in entry["steps"][0]["error"]
        assert "canary-token-123" not in text
    # evaluated again (a retried tick): the entries are never overwritten
    evaluate_failure_sensor(instance, run_ids[0], comfy)
    assert set(keys) <= set(s3_env.keys(bucket, "team/out/failures/"))
    assert not (tmp_path / "failures.jsonl").exists() and not (tmp_path / "comfy_outputs").exists()


def test_the_failure_sensor_cancels_what_a_run_left_from_its_records_on_the_store(instance, location, tmp_path):
    from comfy_pipeline.comfyui import ComfyUIClient
    from comfy_pipeline.simulator import Simulator
    from comfy_pipeline.workflows.workflow import load_workflow

    (run_id,) = fail_runs(instance, 1, location)
    prompt_id = str(uuid.uuid4())
    with Simulator(data_dir=tmp_path / "sim", image_seconds=60) as sim, ComfyUIClient(sim.url) as client:
        graph = load_workflow("z_image_turbo_generation").inject(
            {"prompt": "left behind", "width": 256, "height": 256}, filename_prefix="comfy_pipeline/test/left")
        record = ledger.PromptLedger(location, run_id)  # as a run whose worker was killed leaves it
        record.record(prompt_id, client.url)
        client.submit(graph, prompt_id=prompt_id)
        assert client.status(prompt_id) in ("pending", "running")
        evaluate_failure_sensor(instance, run_id, ComfyUIResource(url=sim.url, output_dir=location))
        assert wait_until(lambda: client.status(prompt_id) in ("done", "unknown"), 10)
        assert client.queue() == {"queue_running": [], "queue_pending": []}
    assert not ledger.has_record(location, run_id)


def test_a_store_it_cannot_write_to_is_a_warning_not_a_traceback(instance, s3_env, location, capfd):
    (run_id,) = fail_runs(instance, 1, location)
    capfd.readouterr()
    gone = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/out"  # deleted, or a typo: every request fails
    evaluate_failure_sensor(instance, run_id, ComfyUIResource(url=DEAD_SERVER, output_dir=gone))
    logged = capfd.readouterr().err  # the sensor's log (Dagster's console handler)
    warnings = [line for line in logged.splitlines() if " - WARNING - " in line]
    assert any(f"could not log failed run {run_id}" in w and "bucket does not exist" in w for w in warnings), logged
    assert any(f"could not look for prompts run {run_id} left behind" in w for w in warnings), logged
    assert "Traceback" not in logged and os.environ["AWS_SECRET_ACCESS_KEY"] not in logged


def test_the_breaker_reset_marker_is_an_object_on_the_store(instance, s3_env, bucket, location):
    comfy = ComfyUIResource(url=DEAD_SERVER, output_dir=location)
    store = open_store(location)
    fail_runs(instance, 3, location)
    state = circuit_breaker.breaker_state(instance, store)
    assert state.open and len(state.failed_run_ids) == 3 and not state.warning
    assert f"{location}/{circuit_breaker.RESET_FILE}" in state.message and "touch" not in state.message
    when = dt.datetime(2026, 11, 22, 2, 0, tzinfo=dt.timezone.utc)
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=when, resources={"comfy": comfy}) as ctx:
        assert isinstance(daily_image_to_video_schedule(ctx), dg.SkipReason)

    assert circuit_breaker.reset(location) == f"{location}/{circuit_breaker.RESET_FILE}"
    assert f"team/out/{circuit_breaker.RESET_FILE}" in s3_env.keys(bucket, "team/out/")
    assert not circuit_breaker.breaker_state(instance, store).open
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=when, resources={"comfy": comfy}) as ctx:
        assert isinstance(daily_image_to_video_schedule(ctx), dg.RunRequest)
    # a reset again later rewrites it: resetting is what the marker is for
    circuit_breaker.reset(store)
    fail_runs(instance, 3, location)
    assert circuit_breaker.breaker_state(instance, store).open


def test_the_breaker_says_so_when_its_marker_cannot_be_read(instance, s3_env):
    store = open_store("s3://bucket/out", endpoint_url=f"http://127.0.0.1:{free_port()}")  # nothing answers there
    state = circuit_breaker.breaker_state(instance, store)
    assert not state.open and "could not read the circuit breaker's reset marker" in state.warning
    assert "Could not connect to the endpoint URL" in state.warning
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in state.warning
