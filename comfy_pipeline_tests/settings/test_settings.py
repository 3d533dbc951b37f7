"""comfy_pipeline/settings.py: one documented order for the servers, credentials from the environment only,
everything read when used (not at import), and a corrupt session state file is an error naming it, in a real
Dagster run too."""

import os
import subprocess
import sys

import dagster as dg
import pytest

from comfy_pipeline import settings
from comfy_pipeline.comfyui import session as sessions
from comfy_pipeline.comfyui.errors import AuthenticationError
from comfy_pipeline.definitions import defs
from comfy_pipeline.defs.resources import ComfyUIResource
from comfy_pipeline.defs.step_results import gpu_retry_policy
from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import free_port

ENV = ("COMFYUI_URLS", "COMFYUI_URL", "COMFYUI_TOKEN", "COMFYUI_USERNAME", "COMFYUI_PASSWORD",
       "COMFY_PIPELINE_OUTPUT_DIR", "COMFY_PIPELINE_REQUIRE_SERVER")


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    """An empty session state folder, and an environment that names no server."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "state"
    folder.mkdir()
    monkeypatch.setenv(sessions.STATE_DIR_ENV, str(folder))
    return folder


@pytest.fixture
def running_session(state_dir, tmp_path):
    """A real `comfy-pipeline server` session: the simulator as a detached process, recorded in `state_dir`."""
    port = free_port()
    command = [sys.executable, "-m", "comfy_pipeline.cli", "simulator", "--port", str(port),
               "--data-dir", str(tmp_path / "sim")]
    session = sessions.start_session(command, port=port, state_dir=state_dir)
    yield session
    sessions.stop_session(session)


def test_each_source_wins_over_the_ones_after_it(running_session, monkeypatch):
    assert settings.choose_servers() == settings.ServerChoice((running_session.url,), "session")
    monkeypatch.setenv("COMFYUI_URL", "http://url:1")
    assert settings.choose_servers() == settings.ServerChoice(("http://url:1",), "COMFYUI_URL")
    monkeypatch.setenv("COMFYUI_URLS", "http://a:1, http://b:2,http://a:1")
    assert settings.choose_servers() == settings.ServerChoice(("http://a:1", "http://b:2"), "COMFYUI_URLS")
    assert settings.choose_servers(config=[None]).source == "COMFYUI_URLS"  # an unset run config field
    assert settings.choose_servers(config=["http://c:3"]) == settings.ServerChoice(("http://c:3",), "run config")
    assert settings.choose_servers("http://d:4", ["http://c:3"]) == settings.ServerChoice(("http://d:4",),
                                                                                         "--comfyui-url")


def test_the_resource_takes_run_config_urls_then_url_over_the_environment(state_dir, monkeypatch):
    monkeypatch.setenv("COMFYUI_URLS", "http://env:1")
    assert ComfyUIResource().configured_urls() == ["http://env:1"]
    assert ComfyUIResource(url="http://config:2").configured_urls() == ["http://config:2"]
    assert ComfyUIResource(url="http://config:2", urls=["http://x:3", "http://y:4"]).configured_urls() == [
        "http://x:3", "http://y:4"]


def test_nothing_configured_is_the_simulator_by_default_and_simulator_mixed_with_urls_is_refused(state_dir,
                                                                                                  monkeypatch):
    choice = settings.choose_servers()
    assert choice.by_default and choice.simulator and choice.source == "default"
    monkeypatch.setenv("COMFYUI_URL", "simulator")
    assert settings.choose_servers().simulator and not settings.choose_servers().by_default
    monkeypatch.setenv("COMFYUI_URLS", "simulator,http://a:1")
    with pytest.raises(settings.SettingError, match="COMFYUI_URLS"):
        settings.choose_servers()


def test_make_client_takes_the_credentials_from_the_environment_when_used(state_dir, monkeypatch, tmp_path):
    assert settings.credentials() == settings.Credentials()
    with Simulator(data_dir=tmp_path / "sim", token="canary-token-456") as sim:
        with settings.make_client(sim.url) as client, pytest.raises(AuthenticationError):
            client.system_stats()
        monkeypatch.setenv("COMFYUI_TOKEN", "canary-token-456")
        with settings.make_client(sim.url) as client:
            assert client.system_stats()["system"]
    assert settings.credentials().secrets == ["canary-token-456"]
    assert "canary-token-456" not in repr(settings.credentials())


def test_output_folder_and_retries_are_read_when_used(state_dir, monkeypatch, tmp_path):

    monkeypatch.setenv("COMFY_PIPELINE_OUTPUT_DIR", str(tmp_path / "out"))
    assert settings.output_dir() == tmp_path / "out"
    assert settings.output_dir("elsewhere").is_absolute() and settings.output_dir("elsewhere").name == "elsewhere"

    # The assets' module is imported already: the policy follows the environment as it is now.
    monkeypatch.setenv("COMFY_PIPELINE_STEP_RETRIES", "7")
    monkeypatch.setenv("COMFY_PIPELINE_RETRY_DELAY_S", "0.5")
    assert (gpu_retry_policy().max_retries, gpu_retry_policy().delay) == (7, 0.5)
    monkeypatch.setenv("COMFY_PIPELINE_STEP_RETRIES", "many")
    with pytest.raises(settings.SettingError, match="COMFY_PIPELINE_STEP_RETRIES"):
        settings.gpu_retry_settings()


def test_a_corrupt_session_file_is_an_error_naming_it(state_dir):
    broken = state_dir / "session-8188.json"
    broken.write_text('["not a session"]')
    with pytest.raises(settings.SettingError, match=str(broken)):
        settings.choose_servers()


def test_a_dagster_run_with_no_server_and_a_corrupt_session_file_fails_naming_it(state_dir, instance, tmp_path):
    """It used to ignore the file and run on the simulator without a word."""
    broken = state_dir / "session-8188.json"
    broken.write_text("{not json")
    config = {"resources": {"comfy": {"config": {"output_dir": str(tmp_path / "out")}}}}
    result = defs.resolve_job_def("image_generation_job").execute_in_process(
        run_config=config, instance=instance, raise_on_error=False)
    assert not result.success
    failures = [event for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failures and str(broken) in failures[0].step_failure_data.error.message
    assert instance.get_run_by_id(result.run_id).tags.get("comfy_pipeline/backend") is None  # no simulator ran


@pytest.mark.parametrize("command", [["validate-workflow", "smoke_image"], ["check", "--test-type", "connection-only"]])
def test_the_commands_exit_2_naming_a_corrupt_session_file_when_no_server_is_configured(command, state_dir, tmp_path):
    broken = state_dir / "session-8188.json"
    broken.write_text("[1, 2]")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "COMFYUI_"))}
    proc = subprocess.run([sys.executable, "-m", "comfy_pipeline.cli", *command], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert str(broken) in proc.stderr and "Traceback" not in proc.stderr
