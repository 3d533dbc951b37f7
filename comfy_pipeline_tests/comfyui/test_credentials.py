"""Credentials never leave the configured server: no WebSocket redirect is followed, no proxy from the
environment is used, server text that echoes a secret is redacted before it is cut, and no secret is ever
written into run config (a user who puts one there is refused)."""

import time
from pathlib import Path

import dagster as dg
import pytest

from comfy_pipeline.comfyui import ComfyUIClient
from comfy_pipeline.comfyui.errors import ServerError
from comfy_pipeline.definitions import defs
from comfy_pipeline_tests.support.hostile_server import HostileServer

TOKEN = "canary-token-0123456789abcdef"


def wait_for_ws_attempts(client: ComfyUIClient, server: HostileServer, seconds: float = 60.0) -> None:
    client._events.start()
    client._events.wait_first_attempt(seconds)  # over once the answer (and any redirect it followed) is handled
    end = time.monotonic() + seconds
    while time.monotonic() < end and not any(path.startswith("/ws") for _, path, _ in server.requests):
        time.sleep(0.05)
    time.sleep(0.5)  # and a moment more for a redirect to be followed, if it were


def test_a_websocket_redirect_is_not_followed_with_the_credentials():
    with HostileServer() as elsewhere, HostileServer() as server:
        server.answers["/ws"] = (302, {"Location": f"ws://127.0.0.1:{elsewhere.port}/ws"}, b"")
        with ComfyUIClient(server.url, token=TOKEN) as client:
            wait_for_ws_attempts(client, server)
        assert server.saw(TOKEN)  # the configured server gets them ...
        assert elsewhere.requests == []  # ... and nobody else


def test_the_websocket_ignores_proxies_from_the_environment(monkeypatch):
    with HostileServer() as proxy, HostileServer() as server:
        for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
            monkeypatch.setenv(name, proxy.url)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        with ComfyUIClient(server.url, username="bob", password="hunter2-secret") as client:
            wait_for_ws_attempts(client, server)
        assert proxy.requests == [] and any(p.startswith("/ws") for _, p, _ in server.requests)


@pytest.mark.parametrize("padding", [150, 195, 290])
def test_an_error_body_echoing_the_token_is_redacted_before_it_is_cut(padding):
    with HostileServer() as server:
        server.answers["/system_stats"] = (500, {"Content-Type": "text/plain"},
                                           ("x" * padding + f"Authorization: Bearer {TOKEN} rejected").encode())
        with ComfyUIClient(server.url, token=TOKEN) as client, pytest.raises(ServerError) as error:
            client.system_stats()
    assert TOKEN[:6] not in str(error.value)


def test_server_json_echoing_the_token_is_redacted_wherever_it_goes():
    with HostileServer() as server:
        server.answers["/queue"] = (200, {"Content-Type": "application/json"},
                                    f'{{"queue_running": [], "queue_pending": [], "note": "{TOKEN}"}}'.encode())
        with ComfyUIClient(server.url, token=TOKEN) as client:
            assert TOKEN not in str(client.queue())


@pytest.mark.parametrize("comfy", [{"token": TOKEN}, {"password": TOKEN, "username": "bob"}], ids=["token", "password"])
def test_a_credential_in_run_config_is_refused_before_a_run_exists_and_nothing_is_stored(comfy, instance, tmp_path):
    """Credentials are no config fields (environment only): Dagster's config validation refuses them, so no run
    is created and the token is nowhere in the instance's storage."""
    config = {"resources": {"comfy": {"config": {**comfy, "output_dir": str(tmp_path)}}}}
    with pytest.raises(dg.DagsterInvalidConfigError) as refused:
        defs.resolve_job_def("image_generation_job").execute_in_process(
            run_config=config, instance=instance, raise_on_error=False)
    assert "unexpected config entr" in str(refused.value) and TOKEN not in str(refused.value)
    assert instance.get_runs() == []
    stored = [p for p in Path(instance.root_directory).rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert stored == []


def test_a_url_with_a_password_in_run_config_is_refused_and_never_reaches_a_server_or_the_logs(instance, tmp_path):
    comfy = {"url": f"http://bob:{TOKEN}@127.0.0.1:9", "output_dir": str(tmp_path)}
    config = {"resources": {"comfy": {"config": comfy}}}
    result = defs.resolve_job_def("image_generation_job").execute_in_process(
        run_config=config, instance=instance, raise_on_error=False)
    assert not result.success
    errors = [e.dagster_event.event_specific_data.error for e in instance.all_logs(result.run_id)
              if e.dagster_event and getattr(e.dagster_event.event_specific_data, "error", None)]
    logs = "\n".join([e.user_message for e in instance.all_logs(result.run_id)] + [str(e) for e in errors])
    assert "stored in plain text" in logs
    assert TOKEN not in logs
    assert "COMFYUI_" in logs  # the message names the environment variables to use instead
