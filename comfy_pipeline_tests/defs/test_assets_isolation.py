"""Assets you can trust: each run reads its own data, assets materialize on their own, re-executions and
retries use the original prompts, runs share a server without hurting each other, dead runs leave nothing on
the GPU. Real Dagster instances and real `dagster` processes against the simulator over loopback."""

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import requests
import yaml
from dagster._core.instance.ref import InstanceRef
from PIL import Image

from comfy_pipeline.definitions import defs
from comfy_pipeline.media import probe_video
from comfy_pipeline.simulator import Simulator
from comfy_pipeline.simulator.render import generated_image
from comfy_pipeline_tests.support.helpers import (
    BIN,
    check_evaluations,
    dagster_env,
    failure_text,
    items_of,
    materializations,
    wait_until,
)

SMALL = {"width": 256, "height": 256, "frames": 9, "fps": 8}


def image_to_video_job():
    return defs.resolve_job_def("image_to_video_job")


def open_instance(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


def make_home(tmp_path: Path, dagster_yaml: dict | None = None) -> Path:
    """A DAGSTER_HOME whose database exists before concurrent processes open it (they race creating tables)."""
    home = tmp_path / "home"
    home.mkdir()
    if dagster_yaml:
        (home / "dagster.yaml").write_text(yaml.safe_dump(dagster_yaml))
    with open_instance(home):
        pass
    return home


def run_config(url: str, out: Path, prompts: list[dict], **comfy) -> dict:
    return {"resources": {"comfy": {"config": {"url": url, "output_dir": str(out), **comfy}}},
            "ops": {"prompt": {"config": {"prompts": prompts}}}}


def launch(home: Path, job: str, config: dict, tmp_path: Path, name: str, **env: str) -> subprocess.Popen:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.Popen(
        [str(BIN / "dagster"), "job", "execute", "-m", "comfy_pipeline", "-j", job, "-c", str(path),
         "--tags", json.dumps({"case": name})],
        cwd=tmp_path, env=dagster_env(home, **env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def materialization_of(instance: dg.DagsterInstance, run_id: str, asset: str) -> dict | None:
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records:
        materialization = record.event_log_entry.asset_materialization
        if materialization.asset_key == dg.AssetKey(asset):
            meta = {k: v.value for k, v in materialization.metadata.items()}
            if "items_json" in meta:  # the outputs' list is a file the metadata points to
                meta["items"] = json.loads(Path(meta["items_json"]).read_text())["items"]
            return meta
    return None


def assert_pixels_of_prompt(path: Path, text: str, seed: int, size: tuple[int, int]) -> None:
    """The image on disk is the simulator's picture of exactly this prompt and seed (not another run's)."""
    made = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    expected = np.asarray(generated_image(size, seed, text), dtype=np.int16)
    assert made.shape == expected.shape and np.abs(made - expected).max() <= 2, f"{path} is not the picture of {text!r}"


@pytest.mark.slow  # slow tier: runs launched in subprocesses
def test_concurrent_runs_each_render_exactly_their_own_prompts(tmp_path):
    home = make_home(tmp_path)
    out = tmp_path / "out"
    cases = {f"run{i}": [{"text": f"run {i} prompt {j}: a {animal}", "seed": 10 * i + j, **SMALL} for j in range(2)]
             for i, animal in enumerate(["fox", "owl", "whale", "lynx", "heron", "otter"])}
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.3, video_seconds=0.3) as sim:
        procs = {name: launch(home, "image_to_video_job", run_config(sim.url, out, prompts), tmp_path, name)
                 for name, prompts in cases.items()}
        logs = {name: proc.communicate(timeout=400)[0] for name, proc in procs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, logs[name][-3000:]
    with open_instance(home) as instance:
        runs = instance.get_runs()
        assert len(runs) == len(cases)
        for run in runs:
            wanted = cases[run.tags["case"]]
            images = materialization_of(instance, run.run_id, "generated_image")["items"]
            assert [i["prompt"] for i in images] == [p["text"] for p in wanted]
            for item, spec in zip(images, wanted):
                assert_pixels_of_prompt(Path(item["path"]), spec["text"], spec["seed"], (256, 256))
            videos = materialization_of(instance, run.run_id, "ltx2_video")["items"]
            assert [v["input_image"] for v in videos] == [i["path"] for i in images]  # its own images, animated
            assert [probe_video(Path(v["path"])).frame_count for v in videos] == [9, 9]
            report = materialization_of(instance, run.run_id, "validation_report")
            rows = json.loads(Path(report["report_json"]).read_text())["rows"]
            assert {r["prompt"] for r in rows} == {p["text"] for p in wanted}


@pytest.mark.slow  # slow tier: runs launched in subprocesses
def test_each_asset_materializes_on_its_own_like_the_ui_button(tmp_path):
    # `dagster asset materialize --select X` runs __ASSET_JOB with that one asset, as the UI's Materialize does.
    home = make_home(tmp_path)
    out = tmp_path / "out"
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.05, video_seconds=0.1) as sim:
        env = dagster_env(home, COMFYUI_URL=sim.url, COMFY_PIPELINE_OUTPUT_DIR=str(out))

        def materialize(select: str, config: dict | None = None) -> str:
            args = [str(BIN / "dagster"), "asset", "materialize", "-m", "comfy_pipeline", "--select", select]
            if config:
                args += ["--config-json", json.dumps(config)]
            proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
            with open_instance(home) as instance:
                return instance.get_runs(limit=1)[0].run_id

        prompt_run = materialize("prompt", {"ops": {"prompt": {"config": {"prompts": [
            {"text": "a kingfisher on a reed", "seed": 3, **SMALL}]}}}})
        image_run = materialize("generated_image")
        video_run = materialize("ltx2_video")
        report_run = materialize("validation_report")
    with open_instance(home) as instance:
        assert {r.job_name for r in instance.get_runs()} == {"__ASSET_JOB"}
        images = materialization_of(instance, image_run, "generated_image")
        assert images["input_prompt_from"] == "latest materialization" and images["input_prompt_run"] == prompt_run
        (image,) = images["items"]
        assert_pixels_of_prompt(Path(image["path"]), "a kingfisher on a reed", 3, (256, 256))
        videos = materialization_of(instance, video_run, "ltx2_video")
        assert videos["input_generated_image_run"] == image_run
        (video,) = videos["items"]
        assert video["input_image"] == image["path"] and probe_video(Path(video["path"])).frame_count == 9
        report = materialization_of(instance, report_run, "validation_report")
        rows = json.loads(Path(report["report_json"]).read_text())["rows"]
        assert [r["path"] for r in rows] == [image["path"], video["path"]]  # one row per output
        assert all(r["verdict"] == "passed" for r in rows)


def test_reexecute_from_failure_after_the_server_died_mid_run(tmp_path):
    out = tmp_path / "out"
    prompts = [{"text": "a tram in the rain", "seed": 1, **SMALL}, {"text": "a tram in the snow", "seed": 2, **SMALL}]
    sim = Simulator(data_dir=tmp_path / "sim", image_seconds=0.05, video_seconds=30).start()
    config = run_config(sim.url, out, prompts, server_down_timeout=1.0, request_timeout=3.0)
    try:
        with dg.instance_for_test() as instance:
            killer = threading.Thread(target=lambda: _stop_when_a_video_runs(sim), daemon=True)
            killer.start()
            first = dg.execute_job(dg.reconstructable(image_to_video_job), instance=instance, run_config=config,
                                   raise_on_error=False)
            assert not first.success and "not reachable" in failure_text(first)
            assert materializations(first, "generated_image") and not materializations(first, "ltx2_video")

            sim._settings["video_seconds"] = 0.1  # the same server (same URL), back up and quick this time
            sim.start()
            options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
            again = dg.execute_job(dg.reconstructable(image_to_video_job), instance=instance,
                                   reexecution_options=options, raise_on_error=False)
            assert again.success, failure_text(again)
            assert not materializations(again, "prompt") and not materializations(again, "generated_image")
            (videos,) = materializations(again, "ltx2_video")
            assert videos.metadata["input_generated_image_from"].value == "parent run (re-execution)"
            assert videos.metadata["input_generated_image_run"].value == first.run_id
            assert [v["prompt"] for v in items_of(videos)] == [p["text"] for p in prompts]
            first_images = items_of(materializations(first, "generated_image")[0])
            assert [v["input_image"] for v in items_of(videos)] == [i["path"] for i in first_images]
    finally:
        sim.stop()


def _stop_when_a_video_runs(sim: Simulator) -> None:
    def video_running() -> bool:
        running = requests.get(f"{sim.url}/queue", timeout=5).json()["queue_running"]
        return any(node.get("class_type") == "SaveVideo" for item in running for node in item[2].values())

    if wait_until(video_running, 120):
        sim.stop()


@pytest.mark.slow  # slow tier: runs launched in subprocesses
def test_a_step_is_retried_automatically_across_a_server_restart(tmp_path):
    home = make_home(tmp_path)
    out = tmp_path / "out"
    sim = Simulator(data_dir=tmp_path / "sim", image_seconds=30).start()
    try:
        prompts = [{"text": "a windmill at dawn", "seed": 5, **SMALL}]
        proc = launch(home, "image_generation_job", run_config(sim.url, out, prompts, server_down_timeout=1.0,
                                                                request_timeout=3.0),
                      tmp_path, "restart", COMFY_PIPELINE_STEP_RETRIES="4", COMFY_PIPELINE_RETRY_DELAY_S="1")
        assert wait_until(lambda: bool(requests.get(f"{sim.url}/queue", timeout=5).json()["queue_running"]), 120)
        sim.stop()  # the server goes away mid-prompt ...
        time.sleep(2.5)
        sim._settings["image_seconds"] = 0.05
        sim.start()  # ... and comes back on the same address, its queue forgotten
        log = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, log[-4000:]
    finally:
        sim.stop()
    with open_instance(home) as instance:
        (run,) = instance.get_runs()
        restarts = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY).records
        assert restarts, "the step was not retried"
        (image,) = materialization_of(instance, run.run_id, "generated_image")["items"]
        assert_pixels_of_prompt(Path(image["path"]), "a windmill at dawn", 5, (256, 256))


@pytest.mark.slow  # slow tier: runs launched in subprocesses
def test_two_runs_share_one_server_under_a_pool_limit_without_timing_each_other_out(tmp_path):
    home = make_home(tmp_path, {"concurrency": {"pools": {"default_limit": 1}}})
    out = tmp_path / "out"
    # The simulator holds its "GPU" until one run's GPU step is seen waiting for the pool, so the runs overlap
    # whatever the machine's speed; then each prompt takes 1 s of GPU.
    with Simulator(data_dir=tmp_path / "sim", image_seconds=1.0) as sim:
        sim.hold_sampling()
        procs = {
            name: launch(home, "image_generation_job",
                         run_config(sim.url, out, [{"text": f"{name} {j}", "seed": j, **SMALL} for j in range(2)],
                                    prompt_timeout=600, max_in_flight=2),
                         tmp_path, name, COMFYUI_URL=sim.url)
            for name in ("a", "b")
        }
        with open_instance(home) as instance:
            waited = wait_until(lambda: bool(_pool_waits(instance)), timeout=240)
        sim.release_sampling()
        logs = {name: proc.communicate(timeout=300)[0] for name, proc in procs.items()}
        history = requests.get(f"{sim.url}/history", timeout=5).json()
    for name, proc in procs.items():
        assert proc.returncode == 0, logs[name][-4000:]
    assert waited, "no step waited for the pool"
    with open_instance(home) as instance:
        spans = {}
        for run in instance.get_runs():
            ids = [i["prompt_id"] for i in materialization_of(instance, run.run_id, "generated_image")["items"]]
            stamps = [_stamps(history[prompt_id]) for prompt_id in ids]
            spans[run.tags["case"]] = (min(s for s, _ in stamps), max(e for _, e in stamps))
    (first, second) = sorted(spans.values())
    assert first[1] <= second[0], f"the two runs' prompts interleaved on the server: {spans}"


def _pool_waits(instance) -> list:
    """The engine events saying a step waits for its pool, in every run of `instance`."""
    return [r for run in instance.get_runs() for r in instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
        if "blocked by limit for pool" in (r.event_log_entry.user_message or "")]


def _stamps(entry: dict) -> tuple[float, float]:
    messages = dict((kind, data) for kind, data in entry["status"]["messages"])
    return messages["execution_start"]["timestamp"] / 1000, messages["execution_success"]["timestamp"] / 1000


def test_prompts_of_a_killed_run_are_cancelled_on_the_server_by_the_next_run(tmp_path):
    home = make_home(tmp_path)
    out = tmp_path / "out"
    image = tmp_path / "start.png"
    Image.effect_noise((256, 256), 40).convert("RGB").save(image)
    with Simulator(data_dir=tmp_path / "sim", video_seconds=120, image_seconds=0.05) as sim:
        config = {"resources": {"comfy": {"config": {"url": sim.url, "output_dir": str(out)}}},
                  "ops": {"ltx2_video": {"config": {"input_images": [str(image)] * 3, "frames": 9}}}}
        proc = launch(home, "video_generation_job", config, tmp_path, "doomed")

        def queued() -> int:
            queue = requests.get(f"{sim.url}/queue", timeout=5).json()
            return len(queue["queue_running"]) + len(queue["queue_pending"])

        assert wait_until(lambda: queued() == 3, 120)
        os.kill(proc.pid, signal.SIGKILL)  # no handler, no finally: the run's prompts stay on the server
        proc.communicate(timeout=30)
        queue = requests.get(f"{sim.url}/queue", timeout=5).json()
        left = {item[1] for item in queue["queue_running"] + queue["queue_pending"]}
        assert len(left) == 3
        (record,) = (out / ".inflight").glob("*.jsonl")
        assert {json.loads(line)["prompt_id"] for line in record.read_text().splitlines()} == left

        nxt = launch(home, "image_generation_job", run_config(sim.url, out, [{"text": "next", "seed": 1, **SMALL}]),
                     tmp_path, "next")
        log = nxt.communicate(timeout=300)[0]
        assert nxt.returncode == 0, log[-3000:]
        assert "died with 3 prompt(s)" in log
        history = requests.get(f"{sim.url}/history", timeout=5).json()
        ran = left & set(history)  # the running one was interrupted; the pending ones were taken off the queue
        assert len(ran) == 1 and history[ran.pop()]["status"]["messages"][-1][0] == "execution_interrupted"
        queue = requests.get(f"{sim.url}/queue", timeout=5).json()
        assert queue == {"queue_running": [], "queue_pending": []}
        assert not record.exists()


def test_the_simulator_warning_appears_once_per_run_and_checks_have_numbers(tmp_path):
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.05, video_seconds=0.1) as sim:
        with dg.instance_for_test() as instance:
            config = run_config(sim.url, tmp_path / "out", [{"text": "a heron", "seed": 1, **SMALL}])
            result = image_to_video_job().execute_in_process(run_config=config, instance=instance)
            warnings = [e for e in instance.all_logs(result.run_id) if "backend: simulator" in e.user_message]
            assert len(warnings) == 1
            assert instance.get_run_by_id(result.run_id).tags["comfy_pipeline/backend"] == "simulator"
            passed = {"image_quality": True, "video_quality": True, "all_outputs_valid": True}
            assert check_evaluations(result) == passed
            numeric = (dg.IntMetadataValue, dg.FloatMetadataValue)
            for evaluation in result.get_asset_check_evaluations():
                numbers = {k: v.value for k, v in evaluation.metadata.items() if isinstance(v, numeric)}
                assert numbers, f"{evaluation.check_name} has no numeric metadata"
    for spec in defs.resolve_asset_graph().asset_check_keys:
        assert defs.resolve_asset_graph().get_check_spec(spec).description, spec
