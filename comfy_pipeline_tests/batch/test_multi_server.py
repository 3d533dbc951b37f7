"""Several ComfyUI servers share a batch: least work first, failover without running a prompt twice, and every
output names the server that made it. Real simulators on loopback, real downloads, a real Dagster instance."""

import json
import threading

import pandas as pd
import pytest
import requests

from comfy_pipeline.batch.runner import Job, run_batch
from comfy_pipeline.comfyui.client import ComfyUIClient
from comfy_pipeline.defs.resources import ComfyUIResource, gpu_pool
from comfy_pipeline.simulator import Simulator
from comfy_pipeline.workflows.workflow import load_workflow
from comfy_pipeline_tests.support.helpers import execute, failure_text, wait_until

SMALL = {"width": 256, "height": 256}


def jobs(n: int, folder) -> list[Job]:
    workflow = load_workflow("z_image_turbo_generation")
    return [Job(f"p{i}", workflow, {"prompt": f"a lighthouse {i}", "seed": i, **SMALL},
                f"comfy_pipeline/multi/p{i:02d}", folder, f"p{i:02d}") for i in range(n)]


def started_on(sim: Simulator) -> list[str]:
    """Prompt ids the simulator's worker started, in order (read directly: also after the server stopped)."""
    return [entry["prompt_id"] for entry in sim._server.started]


@pytest.fixture
def two_sims(tmp_path):
    with Simulator(data_dir=tmp_path / "a", image_seconds=0.3) as a, \
            Simulator(data_dir=tmp_path / "b", image_seconds=0.3) as b:
        yield a, b


def test_a_batch_is_shared_by_two_servers_and_each_prompt_runs_once(two_sims, tmp_path):
    a, b = two_sims
    with ComfyUIClient(a.url) as ca, ComfyUIClient(b.url) as cb:
        results = run_batch([ca, cb], jobs(8, tmp_path / "out"), max_in_flight=2)
    assert all(r.ok for r in results), [str(r.error) for r in results]
    on_a, on_b = started_on(a), started_on(b)
    assert len(on_a) >= 3 and len(on_b) >= 3  # both GPUs worked
    assert sorted(on_a + on_b) == sorted(r.prompt_id for r in results)  # every prompt once, on one server
    for r in results:
        assert r.server == (a.url if r.prompt_id in on_a else b.url)
        assert r.files[0].stat().st_size > 0


def test_a_server_busy_with_other_clients_work_gets_none_of_ours(two_sims, tmp_path):
    a, b = two_sims
    with ComfyUIClient(b.url) as other:  # someone else's prompts fill b's queue
        graph = load_workflow("z_image_turbo_generation").inject({"prompt": "theirs", "seed": 1, **SMALL},
                                                         filename_prefix="other/x")
        theirs = [other.submit(graph) for _ in range(4)]
    with ComfyUIClient(a.url) as ca, ComfyUIClient(b.url) as cb:
        results = run_batch([ca, cb], jobs(3, tmp_path / "out"), max_in_flight=4)
    assert all(r.ok for r in results)
    assert {r.server for r in results} == {a.url}  # three on a beat waiting behind four on b
    assert started_on(a) == [r.prompt_id for r in results]
    assert wait_until(lambda: set(theirs) <= set(started_on(b)), 20)


def test_a_server_that_stops_answering_hands_its_unstarted_prompts_to_the_other(tmp_path):
    """b runs our first prompt for a long time, with our second queued behind it; then b dies. The running one
    fails (it may have run), the queued one moves to a under its own id, and nothing runs twice."""
    with Simulator(data_dir=tmp_path / "a", image_seconds=0.2) as a:
        b = Simulator(data_dir=tmp_path / "b", image_seconds=60).start()
        try:
            def kill_b_once_it_runs():
                if wait_until(lambda: bool(requests.get(f"{b.url}/queue", timeout=5).json()["queue_running"]), 30):
                    b.stop()

            threading.Thread(target=kill_b_once_it_runs, daemon=True).start()
            with ComfyUIClient(a.url) as ca, ComfyUIClient(b.url, server_down_timeout=2, read_timeout=3) as cb:
                results = run_batch([ca, cb], jobs(6, tmp_path / "out"), max_in_flight=2)
        finally:
            b.stop()
        on_a = started_on(a)
    on_b = started_on(b)
    failed = [r for r in results if not r.ok]
    assert len(on_b) == 1 and len(failed) == 1  # only the prompt b had started is lost
    assert failed[0].prompt_id == on_b[0] and "not reachable" in str(failed[0].error)
    made = [r for r in results if r.ok]
    assert len(made) == 5 and all(r.server == a.url for r in made)
    assert sorted(on_a) == sorted(r.prompt_id for r in made)  # each once; the moved one kept its id
    assert len(set(on_a)) == len(on_a) and not set(on_a) & set(on_b)


def test_a_server_down_at_the_start_is_left_out(tmp_path):
    from comfy_pipeline_tests.support.helpers import free_port

    with Simulator(data_dir=tmp_path / "a", image_seconds=0.05) as a:
        dead = f"http://127.0.0.1:{free_port()}"
        with ComfyUIClient(a.url) as ca, ComfyUIClient(dead, server_down_timeout=1, connect_timeout=1) as cd:
            results = run_batch([cd, ca], jobs(3, tmp_path / "out"))
    assert all(r.ok and r.server == a.url for r in results)


def test_the_pipeline_spreads_over_comfyui_urls_and_the_report_names_each_server(two_sims, tmp_path, instance):
    a, b = two_sims
    prompts = [{"text": f"a red fox, take {i}", "seed": i, **SMALL} for i in range(6)]
    config = {
        "resources": {"comfy": {"config": {"urls": [a.url, b.url], "output_dir": str(tmp_path / "out"),
                                           "max_in_flight": 2}}},
        "ops": {"prompt": {"config": {"prompts": prompts}}},
    }
    result = execute("image_generation_job", instance, config)
    assert result.success, failure_text(result)
    report = next((tmp_path / "out").rglob("validation_report.json"))
    rows = pd.DataFrame(json.loads(report.read_text())["rows"])
    assert set(rows["server"]) == {a.url, b.url}
    assert len(started_on(a)) + len(started_on(b)) == 6
    csv = next((tmp_path / "out").rglob("validation_report.csv")).read_text()
    assert a.url in csv and b.url in csv


def test_comfyui_urls_come_from_config_or_the_environment(monkeypatch):
    monkeypatch.delenv("COMFYUI_URL", raising=False)
    monkeypatch.setenv("COMFYUI_URLS", "http://gpu-a:8188, http://gpu-b:8188,http://gpu-a:8188")
    assert ComfyUIResource().configured_urls() == ["http://gpu-a:8188", "http://gpu-b:8188"]
    assert ComfyUIResource(urls=["http://c:1"]).configured_urls() == ["http://c:1"]  # config wins
    assert gpu_pool() == "comfyui-gpu-a-8188+gpu-b-8188"
    monkeypatch.delenv("COMFYUI_URLS")
    monkeypatch.setenv("COMFYUI_URL", "http://gpu-a:8188")  # the single-server variable keeps working
    assert ComfyUIResource().configured_urls() == ["http://gpu-a:8188"]
    assert gpu_pool() == "comfyui-gpu-a-8188"


def test_with_no_server_a_deployment_fails_instead_of_making_placeholders(instance, tmp_path, monkeypatch):
    """COMFY_PIPELINE_REQUIRE_SERVER=1 marks a deployment, as PostgreSQL storage does
    (deploy/test_production_postgres.py); the simulator then runs only when chosen by name."""
    for name in ("COMFYUI_URL", "COMFYUI_URLS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COMFY_PIPELINE_REQUIRE_SERVER", "1")
    config = {"resources": {"comfy": {"config": {"output_dir": str(tmp_path / "out")}}},
              "ops": {"prompt": {"config": {"prompts": [{"text": "a fox", **SMALL}]}}}}
    result = execute("image_generation_job", instance, config)
    assert not result.success
    text = failure_text(result)
    assert "No ComfyUI server is configured" in text and "COMFYUI_URL=simulator" in text
    assert not list((tmp_path / "out").rglob("*.png"))
    monkeypatch.setenv("COMFYUI_URL", "simulator")  # chosen on purpose: allowed, and labelled
    result = execute("image_generation_job", instance, config)
    assert result.success, failure_text(result)
    assert list((tmp_path / "out").rglob("*.png"))
    run = instance.get_run_by_id(result.run_id)
    assert run.tags["comfy_pipeline/backend"] == "simulator"
