"""README "Add your own workflow": an instance with an eager automation_condition follows its input under the
daemon of `dg dev`, with nothing switched on by hand, and its runs carry the server set's tag like the jobs' runs."""

import json
import subprocess

import dagster as dg
import pytest
from PIL import Image

from comfy_pipeline.defs.resources import SERVER_TAG
from comfy_pipeline_tests.support.helpers import (
    BIN,
    dagster_env,
    free_port,
    in_project,
    output_of,
    project_copy,
    stop_group,
    wait_until,
)

EAGER = """type: comfy_pipeline.components.ComfyWorkflowComponent
attributes:
  workflow: image_upscale
  input: generated_image
  asset:
    key: eager_upscale
    automation_condition: "{{ dg.AutomationCondition.eager() }}"
  params: {scale_by: 0.5}
"""


@pytest.mark.slow  # slow tier: dg dev with its daemon
@pytest.mark.timeout(1500)  # its waits are on conditions; a busy machine must not fail it
def test_an_eager_instance_runs_under_the_daemon_after_its_input_is_materialized(tmp_path, monkeypatch):
    project = project_copy(tmp_path)
    (project / "comfy_pipeline" / "defs" / "eager_upscale").mkdir()
    (project / "comfy_pipeline" / "defs" / "eager_upscale" / "defs.yaml").write_text(EAGER)
    home, out = tmp_path / "dagster_home", tmp_path / "out"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    dg.DagsterInstance.get().dispose()  # its databases exist before several processes would race to create them
    env = dagster_env(home, PYTHONPATH=str(project), COMFYUI_URL="simulator", COMFY_PIPELINE_OUTPUT_DIR=str(out))
    log = tmp_path / "dev.log"
    with log.open("wb") as sink:
        dev = subprocess.Popen(
            [str(BIN / "dg"), "dev", "--host", "127.0.0.1", "--port", str(free_port())], cwd=project, env=env,
            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        # An eager condition follows materializations made after its first evaluation: wait for the daemon's.
        evaluated = "Finished auto-materialization tick for comfy_automation_sensor"
        assert wait_until(lambda: evaluated in log.read_text(errors="replace"), timeout=600), log.read_text()[-3000:]
        config = {"ops": {"prompt": {"config": {"prompts": [{"text": "a fox in snow", "width": 256, "height": 256}]}}}}
        (tmp_path / "run.json").write_text(json.dumps(config))
        made = in_project(project, "dagster", "job", "execute", "-m", "comfy_pipeline.definitions", "-j",
                          "image_generation_job", "-c", str(tmp_path / "run.json"), home=home)
        assert made.returncode == 0, output_of(made)
        with dg.DagsterInstance.get() as instance:
            def followed() -> list:
                runs = instance.get_runs(dg.RunsFilter(tags={"dagster/from_automation_condition": "true"}))
                return [r for r in runs if r.is_finished]

            assert wait_until(followed, timeout=600), [(r.job_name, r.status) for r in instance.get_runs()]
            (run,) = followed()
            assert run.status == dg.DagsterRunStatus.SUCCESS and SERVER_TAG in run.tags
            event = instance.get_latest_materialization_event(dg.AssetKey("eager_upscale"))
            assert event is not None and event.run_id == run.run_id
        (picture,) = out.glob("runs/*/images/eager_upscale/*.png")
        assert Image.open(picture).size == (128, 128)  # scale_by 0.5 of the 256x256 image
    finally:
        stop_group(dev)
