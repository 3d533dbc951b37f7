"""Credentials: sent on HTTP and on the WebSocket handshake (bearer token, basic auth, user:pass@ in the URL),
and never shown in a repr, an exception message or a log record."""

import logging

import pytest

from comfy_pipeline.comfyui import AuthenticationError, ComfyUIClient, ComfyUIError
from comfy_pipeline.simulator import Simulator

TOKEN = "tok-7f3a9c1e5b"
USER, PASSWORD = "alice", "pw-c4e8a2b6d0"
SECRETS = (TOKEN, PASSWORD)


def image_workflow(prefix: str) -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"secret leaked into: {text[:200]}"


@pytest.fixture(scope="module")
def token_sim(tmp_path_factory):
    with Simulator(data_dir=tmp_path_factory.mktemp("sim_token"), token=TOKEN) as s:
        yield s


@pytest.fixture(scope="module")
def basic_sim(tmp_path_factory):
    with Simulator(data_dir=tmp_path_factory.mktemp("sim_basic"), username=USER, password=PASSWORD) as s:
        yield s


def test_bearer_token_on_http_and_websocket(token_sim, caplog):
    caplog.set_level(logging.DEBUG)
    with ComfyUIClient(token_sim.url, token=TOKEN) as client:
        result = client.run(image_workflow("client/token"), timeout=20)
        assert result.via == "websocket"  # the socket handshake was accepted: the token went there too
        assert_no_secret(repr(client) + str(client))
    assert_no_secret(caplog.text)


def test_missing_or_wrong_token_is_refused(token_sim, caplog):
    caplog.set_level(logging.DEBUG)
    for token in (None, "wrong-token-value"):
        with ComfyUIClient(token_sim.url, token=token) as client:
            with pytest.raises(AuthenticationError, match="HTTP 401") as info:
                client.submit(image_workflow("client/noauth"))
            assert_no_secret(str(info.value))
            assert not client.health()["ok"]
    assert_no_secret(caplog.text)


def test_basic_auth_as_arguments_and_in_the_url(basic_sim, caplog):
    caplog.set_level(logging.DEBUG)
    with ComfyUIClient(basic_sim.url, username=USER, password=PASSWORD) as client:
        assert client.run(image_workflow("client/basic"), timeout=20).via == "websocket"
    host = basic_sim.url.split("://", 1)[1]
    with ComfyUIClient(f"http://{USER}:{PASSWORD}@{host}") as client:
        assert client.url == f"http://***@{host}"
        assert client.run(image_workflow("client/basic_url"), timeout=20).via == "websocket"
        assert_no_secret(repr(client))
    assert_no_secret(caplog.text)


def test_extra_headers_are_sent(token_sim):
    with ComfyUIClient(token_sim.url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        assert client.run(image_workflow("client/headers"), timeout=20).via == "websocket"


def test_secrets_stay_out_of_errors_and_logs_when_the_server_is_down(caplog):
    caplog.set_level(logging.DEBUG)
    with ComfyUIClient(f"http://{USER}:{PASSWORD}@127.0.0.1:9", connect_timeout=0.3) as client:
        assert_no_secret(repr(client))
        with pytest.raises(ComfyUIError) as info:
            client.submit(image_workflow("client/down"))
        assert "not reachable" in str(info.value)
        assert_no_secret(str(info.value))
        assert_no_secret(client.health()["error"])
    with ComfyUIClient("http://127.0.0.1:9", token=TOKEN, connect_timeout=0.3) as client:
        with pytest.raises(ComfyUIError) as info:
            client.wait("00000000-0000-4000-8000-000000000000", timeout=0.5)
        assert_no_secret(str(info.value))
    assert_no_secret(caplog.text)
    for record in caplog.records:
        assert_no_secret(record.getMessage())


def test_bad_urls_and_conflicting_credentials_are_refused():
    with pytest.raises(ValueError, match="http://host:8188"):
        ComfyUIClient("ftp://example.com")
    with pytest.raises(ValueError, match="not both"):
        ComfyUIClient("http://127.0.0.1:8188", token=TOKEN, username=USER, password=PASSWORD)
