"""One GPU step in the core, without Dagster: a real simulator, a real client, real checks; a typed outcome."""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from comfy_pipeline.batch import step
from comfy_pipeline.batch.outputs import RunFolder
from comfy_pipeline.batch.records import ServerInfo
from comfy_pipeline.comfyui.client import ComfyUIClient
from comfy_pipeline.comfyui.errors import ServerUnreachable
from comfy_pipeline.media import ImageThresholds
from comfy_pipeline.storage import LocalStore
from comfy_pipeline.workflows.prompts import PromptSpec

SMALL = {"width": 256, "height": 256, "seed": 3}


@dataclass
class _Servers:
    """The least a step needs of its servers (the Dagster resource is the real one)."""

    clients: list
    output_store: LocalStore
    max_in_flight: int = 2
    prompt_timeout: float = 120.0
    queue_timeout: float = 120.0
    surveyed: list = field(default_factory=list)

    def get_clients(self) -> list:
        return self.clients

    def server_info(self) -> ServerInfo:
        self.surveyed.append(True)
        url = self.clients[0].url
        return ServerInfo("simulator", url, (url,), "0.33.0", "simulated")


def _run(servers: _Servers, sources: list[step.Source], tmp_path: Path, heard: list) -> step.StepOutcome:
    return step.run_gpu_step(
        step.IMAGES, sources, workflow_name="z_image_turbo_generation", prompt_ids=[], servers=servers,
        thresholds=ImageThresholds(min_bytes=1), run_id="run-1",
        run_folder=RunFolder(LocalStore(tmp_path / "out"), "runs/r1"),
        run_ended=lambda run_id: True, log=logging.getLogger("test"), on_server=heard.append,
    )


def test_a_step_returns_every_output_and_every_failed_prompt_with_its_traceback_apart(simulator, tmp_path):
    simulator.set_fault("execution-error", count=1)
    sources = [step.Source(0, PromptSpec(text="the unlucky one", **SMALL)),
               step.Source(1, PromptSpec(text="the lucky one", **SMALL))]
    heard: list = []
    with ComfyUIClient(simulator.url) as client:
        outcome = _run(_Servers([client], LocalStore(tmp_path / "out")), sources, tmp_path, heard)
    assert [s.url for s in heard] == [simulator.url]  # told who the server is before anything was queued
    (made,) = outcome.items
    assert made.job == "prompt 1" and made.passed and Path(made.path).is_file() and made.comfyui_url == simulator.url
    (failed,) = outcome.failed
    assert failed.job == "prompt 0" and failed.comfyui_node == "57:3 (KSampler)" and "File \"" not in failed.error
    assert any('File "' in frame for frame in failed.server_traceback)
    assert not outcome.transient and outcome.summary().startswith("1 of 2 prompt(s) failed:")
    listing = outcome.write_listing(RunFolder(LocalStore(tmp_path / "out"), "runs/r1"), "generated_image")
    written = json.loads(Path(listing).read_text())
    assert written["failed"][0]["server_traceback"]
    assert "server_traceback" not in outcome.manifest().to_json()["failed"][0]


def test_bad_prompt_ids_stop_the_step_before_anything_is_queued(simulator, tmp_path):
    with ComfyUIClient(simulator.url) as client:
        with pytest.raises(step.StepInputError, match="one lowercase UUID per prompt"):
            step.run_gpu_step(
                step.IMAGES, [step.Source(0, PromptSpec(text="a fox", **SMALL))],
                workflow_name="z_image_turbo_generation", prompt_ids=["not-a-uuid"],
                servers=_Servers([client], LocalStore(tmp_path / "out")), thresholds=ImageThresholds(),
                run_id="run-2", run_folder=RunFolder(LocalStore(tmp_path), "r2"), run_ended=lambda run_id: True,
                log=logging.getLogger("test"),
            )
    assert simulator.busy_intervals() == []


def test_a_server_that_does_not_answer_is_a_transient_step_failure(tmp_path):
    with ComfyUIClient("http://127.0.0.1:9", connect_timeout=1.0, server_down_timeout=1.0) as client:
        servers = _Servers([client], LocalStore(tmp_path / "out"))
        with pytest.raises(ServerUnreachable) as error:
            _run(servers, [step.Source(0, PromptSpec(text="a fox", **SMALL))], tmp_path, [])
    assert error.value.transient


def test_only_a_content_failure_of_a_good_file_is_made_again_and_with_the_next_seed():
    from comfy_pipeline.batch.records import CheckResult, OutputItem

    def item(*failed: str) -> OutputItem:
        names = ("format", "file_size", "decodes", "dimensions", "brightness", "detail")
        checks = tuple(CheckResult(n, n not in failed, None, None, f"{n} message") for n in names)
        return OutputItem("prompt 0", "a fox", PromptSpec(text="a fox"), "/out/x.png", checks)

    assert step.content_failure(item("brightness", "detail"))
    assert step.content_failure(item("file_size", "brightness"))  # a black picture compresses to a tiny file
    assert not step.content_failure(item("decodes", "brightness"))  # a broken file: not a bad draw
    assert not step.content_failure(item("dimensions"))
    assert not step.content_failure(item())
    first = step.Source(2, PromptSpec(text="a fox", seed=41))
    assert (first.again().spec.seed, first.again().attempt, first.again().index) == (42, 2, 2)
    assert first.again(max_seed=41).spec.seed == 0  # past the workflow's largest seed: round to 0
