"""Credentials: canary values in COMFYUI_TOKEN and COMFYUI_PASSWORD, through `dagster job execute` and
`comfy-pipeline check` as users run them (runs that succeed, a server that refuses them, a server that is down),
then searched for in everything those runs left behind: output, Dagster instance, reports, failure log."""

import base64
import json
import secrets
import subprocess
import sys

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from comfy_pipeline.defs.resources import ComfyUIResource
from comfy_pipeline.defs.sensors import failure_log_sensor
from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import BIN, clean_env, free_port

# slow tier (pytest -m slow; CI runs every tier): every way a secret could leak, through whole check runs
pytestmark = pytest.mark.slow

TOKEN = f"canary-token-{secrets.token_hex(8)}"
USER = "canary-user"
PASSWORD = f"canary-password-{secrets.token_hex(8)}"
# Also the forms a credential takes on the wire.
NEEDLES = [TOKEN, PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(), f"{USER}:{PASSWORD}"]


def leaks(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [n for n in NEEDLES if n.encode() in data]


def test_credentials_appear_in_no_log_event_report_or_error(tmp_path):
    home, out = tmp_path / "home", tmp_path / "out"
    home.mkdir()
    with dg.DagsterInstance.from_config(str(home)):
        pass  # storage created once, before several processes use it
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(json.dumps({"ops": {"prompt": {"config": {"prompts": [
        {"text": "a lighthouse", "width": 512, "height": 384, "seed": 1}]}}}}))
    down = f"http://127.0.0.1:{free_port()}"
    token_env = {"COMFYUI_TOKEN": TOKEN}
    basic_env = {"COMFYUI_USERNAME": USER, "COMFYUI_PASSWORD": PASSWORD}
    execute = [str(BIN / "dagster"), "job", "execute", "-m", "comfy_pipeline", "-j", "image_generation_job",
               "-c", str(run_yaml)]
    check = [sys.executable, "-m", "comfy_pipeline.cli", "check", "--test-type", "image-only", "--prompt", "a fox",
             "--output-dir", str(out), "--state-dir", str(tmp_path / "state")]

    with Simulator(data_dir=tmp_path / "sim_token", token=TOKEN) as by_token, \
            Simulator(data_dir=tmp_path / "sim_basic", username=USER, password=PASSWORD) as by_password:
        cases = {  # name: (command, url, credentials, expected exit code)
            "execute, token": (execute, by_token.url, token_env, 0),
            "check, password": (check + ["--comfyui-url", by_password.url], None, basic_env, 0),
            "execute, password refused": (execute, by_token.url, basic_env, 1),
            "execute, server down": (execute, down, token_env, 1),
            "check, server down": (check + ["--comfyui-url", down], None, token_env, 2),
        }
        procs = {}
        for name, (command, url, credentials, _) in cases.items():
            env = clean_env(DAGSTER_HOME=str(home), COMFY_PIPELINE_OUTPUT_DIR=str(out), **credentials)
            if url:
                env["COMFYUI_URL"] = url
            procs[name] = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True)
        captured = {name: proc.communicate(timeout=240) for name, proc in procs.items()}

    for name, (_, _, _, expected) in cases.items():
        stdout, stderr = captured[name]
        assert procs[name].returncode == expected, f"{name}: {stderr[-3000:]}"
        assert leaks(stdout + stderr) == [], name
    assert "refused GET /system_stats with HTTP 401" in "".join(captured["execute, password refused"])
    assert "not reachable" in "".join(captured["execute, server down"])
    assert "cannot reach ComfyUI" in captured["check, server down"][1]

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 4  # the unreachable check stops before any run
        failed = [r for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
        assert len(failed) == 2
        for run in runs:  # every event's message and metadata, and the stored run config
            assert leaks(serialize_value(run)) == []
            for record in instance.all_logs(run.run_id):
                assert leaks(serialize_value(record)) == [], record.user_message
        # The failure log, written by the run failure sensor as the daemon would, with the same credentials.
        for run in failed:
            event = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records[0]
            comfy = ComfyUIResource(url=down, output_dir=str(out))
            with pytest.MonkeyPatch.context() as patch, dg.build_run_status_sensor_context(
                sensor_name="failure_log_sensor", dagster_instance=instance, dagster_run=run,
                dagster_event=event.event_log_entry.dagster_event, resources={"comfy": comfy},
            ) as context:
                patch.setenv("COMFYUI_USERNAME", USER)  # credentials come from the environment only
                patch.setenv("COMFYUI_PASSWORD", PASSWORD)
                failure_log_sensor(context.for_run_failure())
    failures = (out / "failures.jsonl").read_text().splitlines()
    assert len(failures) == 2 and any("HTTP 401" in line for line in failures)

    # Every file left behind: images, reports (JSON, CSV), check reports, failure log, the Dagster instance's
    # databases and compute logs, the check's progress file.
    written = [p for folder in (out, home, tmp_path / "state") for p in folder.rglob("*") if p.is_file()]
    assert any(p.name == "validation_report.csv" for p in written)
    assert any(p.name.startswith("check_") and p.suffix == ".json" for p in written)
    # The search can see what runs wrote into the instance: the 401 error is there as plain text, its canary not.
    assert any(b"refused GET /system_stats with HTTP 401" in p.read_bytes() for p in written if p.is_relative_to(home))
    assert {str(p): leaks(p.read_bytes()) for p in written if leaks(p.read_bytes())} == {}
