"""Schedule, inbox sensor, failure log and circuit breaker, evaluated on a real Dagster instance."""

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image

from comfy_pipeline.definitions import defs
from comfy_pipeline.defs import circuit_breaker
from comfy_pipeline.defs.resources import ComfyUIResource
from comfy_pipeline.defs.schedules import daily_image_to_video_schedule
from comfy_pipeline.defs.sensors import failure_log_sensor, prompt_inbox_sensor
from comfy_pipeline_tests.support.helpers import evaluate_failure_sensor, wait_until


@pytest.fixture
def comfy(tmp_path):
    return ComfyUIResource(url="http://127.0.0.1:9", output_dir=str(tmp_path / "out"))


def evaluate_sensor(instance, comfy):
    with dg.build_sensor_context(instance=instance, resources={"comfy": comfy}, definitions=defs) as ctx:
        return prompt_inbox_sensor(ctx)


def inbox(comfy) -> Path:
    path = Path(comfy.output_dir) / "inbox"
    path.mkdir(parents=True, exist_ok=True)
    return path


def fail_runs(instance, n: int, tmp_path) -> list[str]:
    """Real failed pipeline runs: the ComfyUI server at port 9 is not there."""
    config = {"resources": {"comfy": {"config": {"url": "http://127.0.0.1:9", "output_dir": str(tmp_path / "out")}}}}
    job = defs.resolve_job_def("image_generation_job")
    return [job.execute_in_process(run_config=config, instance=instance, raise_on_error=False).run_id for _ in range(n)]


def test_schedule_and_sensors_default_to_running():
    assert daily_image_to_video_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert daily_image_to_video_schedule.cron_schedule == "0 2 * * *"
    assert daily_image_to_video_schedule.execution_timezone == "UTC"
    for sensor in (prompt_inbox_sensor, failure_log_sensor):
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    dg.Definitions.validate_loadable(defs)


def test_schedule_runs_the_library_once_per_day(instance, comfy):
    when = dt.datetime(2026, 11, 21, 2, 0, tzinfo=dt.timezone.utc)
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=when, resources={"comfy": comfy}) as ctx:
        request = daily_image_to_video_schedule(ctx)
    assert request.run_key == "daily-2026-11-21"
    assert request.run_config["ops"]["prompt"]["config"] == {"use_library": True}
    dg.validate_run_config(defs.resolve_job_def("image_to_video_job"), request.run_config)


def test_inbox_sensor_one_run_per_file_by_content(instance, comfy):
    box = inbox(comfy)
    (box / "fox.txt").write_text("a red fox in snow\n", encoding="utf-8")
    (box / "batch.json").write_text(json.dumps([{"text": "a lighthouse", "seed": 3}, {"text": "a harbour"}]))
    first = evaluate_sensor(instance, comfy)
    keys = {r.run_key for r in first.run_requests}
    assert len(keys) == 2
    batch = next(r for r in first.run_requests if r.tags["comfy_pipeline/inbox_file"] == "batch.json")
    assert batch.job_name == "image_to_video_job"
    assert [p["text"] for p in batch.run_config["ops"]["prompt"]["config"]["prompts"]] == ["a lighthouse", "a harbour"]
    dg.validate_run_config(defs.resolve_job_def("image_to_video_job"), batch.run_config)

    # Ticking again proposes the same run keys (Dagster dedupes them forever); an edited file gets a new key.
    assert {r.run_key for r in evaluate_sensor(instance, comfy).run_requests} == keys
    (box / "fox.txt").write_text("a red fox in deep snow\n", encoding="utf-8")
    assert len({r.run_key for r in evaluate_sensor(instance, comfy).run_requests} - keys) == 1


def test_inbox_image_beside_prompt_makes_a_video_only_request(instance, comfy):
    box = inbox(comfy)
    (box / "scene.txt").write_text("slow pan to the right", encoding="utf-8")
    Image.new("RGB", (64, 64), "red").save(box / "scene.png")
    (request,) = evaluate_sensor(instance, comfy).run_requests
    assert request.job_name == "video_generation_job"
    config = request.run_config["ops"]["ltx2_video"]["config"]
    assert config["input_images"] == [str((box / "scene.png").resolve())]
    assert config["motion_prompt"] == "slow pan to the right"
    dg.validate_run_config(defs.resolve_job_def("video_generation_job"), request.run_config)


def test_bad_inbox_files_are_named_in_the_skip_reason_and_do_not_stop_others(instance, comfy):
    box = inbox(comfy)
    (box / "broken.json").write_text('{"text": "x",', encoding="utf-8")
    (box / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    result = evaluate_sensor(instance, comfy)
    assert isinstance(result, dg.SkipReason)
    assert "broken.json: invalid JSON at line 1" in result.skip_message
    assert "latin1.txt: not valid UTF-8" in result.skip_message
    (box / "good.txt").write_text("a quiet forest", encoding="utf-8")
    assert len(evaluate_sensor(instance, comfy).run_requests) == 1


def test_circuit_breaker_opens_after_three_failures_and_resets(instance, comfy, tmp_path):
    (inbox(comfy) / "fox.txt").write_text("a fox", encoding="utf-8")
    fail_runs(instance, 2, tmp_path)
    assert not circuit_breaker.breaker_state(instance, comfy.output_dir).open
    fail_runs(instance, 1, tmp_path)
    state = circuit_breaker.breaker_state(instance, comfy.output_dir)
    assert state.open and len(state.failed_run_ids) == 3

    skipped = evaluate_sensor(instance, comfy)
    assert isinstance(skipped, dg.SkipReason) and "Circuit breaker open" in skipped.skip_message
    assert "touch" in skipped.skip_message
    when = dt.datetime(2026, 11, 22, 2, 0, tzinfo=dt.timezone.utc)
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=when, resources={"comfy": comfy}) as ctx:
        assert isinstance(daily_image_to_video_schedule(ctx), dg.SkipReason)

    circuit_breaker.reset(comfy.output_dir)
    assert not circuit_breaker.breaker_state(instance, comfy.output_dir).open
    assert len(evaluate_sensor(instance, comfy).run_requests) == 1


def test_failure_sensor_logs_job_run_and_error_without_secrets(instance, tmp_path, monkeypatch):
    monkeypatch.setenv("COMFYUI_TOKEN", "canary-token-123")  # credentials come from the environment only
    comfy = ComfyUIResource(url="http://127.0.0.1:9", output_dir=str(tmp_path / "out"))
    (run_id,) = fail_runs(instance, 1, tmp_path)
    evaluate_failure_sensor(instance, run_id, comfy)
    log_text = (tmp_path / "out" / "failures.jsonl").read_text()
    entry = json.loads(log_text.splitlines()[-1])
    assert entry["job"] == "image_generation_job" and entry["run_id"] == run_id
    assert "not reachable" in entry["steps"][0]["error"]
    assert "canary-token-123" not in log_text


def image_generation_job():
    return defs.resolve_job_def("image_generation_job")


def test_circuit_breaker_counts_a_run_and_its_reexecutions_as_one_failure(instance, comfy, tmp_path):
    config = {"resources": {"comfy": {"config": {"url": "http://127.0.0.1:9", "output_dir": str(tmp_path / "out")}}}}
    job = dg.reconstructable(image_generation_job)
    first = dg.execute_job(job, instance=instance, run_config=config, raise_on_error=False)
    parent = first.run_id
    for _ in range(2):  # "Re-execute from failure", twice, still against a dead server
        again = dg.execute_job(job, instance=instance, raise_on_error=False,
                               reexecution_options=dg.ReexecutionOptions.from_failure(parent, instance))
        assert not again.success and instance.get_run_by_id(again.run_id).root_run_id == first.run_id
        parent = again.run_id
    state = circuit_breaker.breaker_state(instance, comfy.output_dir)
    assert not state.open and state.failed_run_ids == (first.run_id,)  # three failed runs, one piece of work
    fail_runs(instance, 2, tmp_path)
    assert circuit_breaker.breaker_state(instance, comfy.output_dir).open


def test_failure_sensor_covers_ui_materializations_and_cancels_what_the_run_left_on_the_server(instance, tmp_path):
    from comfy_pipeline.batch.ledger import PromptLedger
    from comfy_pipeline.comfyui import ComfyUIClient
    from comfy_pipeline.simulator import Simulator
    from comfy_pipeline.workflows.workflow import load_workflow

    # Every job of the code location, the Materialize button's __ASSET_JOB included: the daemon filters runs by
    # this list (Dagster keeps it private), and empty means the whole code location.
    assert not failure_log_sensor._monitored_jobs
    out = tmp_path / "out"
    asset_job = defs.resolve_implicit_global_asset_job_def()
    config = {"resources": {"comfy": {"config": {"url": "http://127.0.0.1:9", "output_dir": str(out)}}}}
    failed = asset_job.execute_in_process(run_config=config, instance=instance, raise_on_error=False,
                                          asset_selection=[dg.AssetKey("generated_image")])
    run = instance.get_run_by_id(failed.run_id)
    assert run.job_name.startswith("__ASSET_JOB") and run.status == dg.DagsterRunStatus.FAILURE
    with Simulator(data_dir=tmp_path / "sim", image_seconds=60) as sim, ComfyUIClient(sim.url) as client:
        graph = load_workflow("z_image_turbo_generation").inject(
            {"prompt": "left behind", "width": 256, "height": 256}, filename_prefix="comfy_pipeline/test/left")
        ledger = PromptLedger(out, run.run_id)  # as a run whose worker was killed leaves it
        ledger.record("0b7c9d2e-1111-4a4a-8888-000000000001", client.url)
        client.submit(graph, prompt_id="0b7c9d2e-1111-4a4a-8888-000000000001")
        assert client.status("0b7c9d2e-1111-4a4a-8888-000000000001") in ("pending", "running")
        evaluate_failure_sensor(instance, run.run_id, ComfyUIResource(url=sim.url, output_dir=str(out)))
        assert wait_until(lambda: client.status("0b7c9d2e-1111-4a4a-8888-000000000001") in ("done", "unknown"), 10)
        assert client.queue() == {"queue_running": [], "queue_pending": []}
    entry = json.loads((out / "failures.jsonl").read_text().splitlines()[-1])
    assert entry["job"].startswith("__ASSET_JOB") and entry["run_id"] == run.run_id
    assert not ledger.path.exists()
