"""Which runs the Dagster UI files under their job: README's claims, with `dg dev` and a real instance.

The job's Runs tab asks the webserver for runs by job name and the hidden tag `.dagster/repository`
(`<repository>@<code location>`, ui-core PipelineRunsFeedRoot.tsx), which Dagster writes only for a run created
from a code location's job, i.e. with a remote job origin. `dagster job launch -w workspace.yaml` creates such
runs; `dagster job execute -m comfy_pipeline` and `dg launch` run the job in the shell without one (Dagster 1.13
gives them no way to name one), as README says.
"""

import os
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import requests

from comfy_pipeline_tests.support.helpers import BIN, REPO, free_port, stop_group, wait_until

# slow tier (pytest -m slow; CI runs every tier): dg dev and three kinds of run
pytestmark = pytest.mark.slow

JOB = "comfyui_connection_job"
UI_FILTER_TAG = ".dagster/repository"
LOCATION_LABEL = "__repository__@comfy_pipeline"  # a Definitions' repository is __repository__
# The query of the job's Runs tab (its filter: job name + the code location's label).
RUNS_TAB = """{ runsOrError(filter: {pipelineName: "%s", tags: [{key: "%s", value: "%s"}]}) {
  ... on Runs { results { runId status } } } }""" % (JOB, UI_FILTER_TAG, LOCATION_LABEL)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "COMFYUI_", "COMFY_PIPELINE_"))}
    env.update(extra)
    return env


def run(command: list[str], cwd: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(command)}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}"


def runs_tab(port: int) -> list[dict] | None:
    try:
        answer = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": RUNS_TAB}, timeout=10).json()
    except (requests.RequestException, ValueError):
        return None
    return (answer.get("data") or {}).get("runsOrError", {}).get("results")


def test_a_launched_run_is_filed_under_its_job_and_runs_in_the_shell_are_not(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(DAGSTER_HOME=str(home), COMFY_PIPELINE_OUTPUT_DIR=str(tmp_path / "out"))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    dg.DagsterInstance.get().dispose()  # its databases exist before several processes would race to create them
    port = free_port()
    dev = subprocess.Popen(
        [str(BIN / "dg"), "dev", "--target-path", str(REPO), "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        assert wait_until(lambda: runs_tab(port) == [], timeout=180), "dg dev never answered"
        # README: launch into the code location while `dg dev` runs; its daemon runs it.
        run([str(BIN / "dagster"), "job", "launch", "-w", str(REPO / "workspace.yaml"), "-j", JOB], cwd=REPO, env=env)
        # README's main command and its `dg` form, in the same instance.
        run([str(BIN / "dagster"), "job", "execute", "-m", "comfy_pipeline", "-j", JOB], cwd=tmp_path, env=env)
        run([str(BIN / "dg"), "launch", "--job", JOB, "--target-path", str(REPO)], cwd=tmp_path, env=env)
        with dg.DagsterInstance.get() as instance:
            def all_done() -> bool:
                runs = instance.get_runs(dg.RunsFilter(job_name=JOB))
                return len(runs) == 3 and all(r.is_finished for r in runs)

            assert wait_until(all_done, timeout=240), [r.status for r in instance.get_runs()]
            everything = instance.get_runs(dg.RunsFilter(job_name=JOB))
            assert [r.status for r in everything] == [dg.DagsterRunStatus.SUCCESS] * 3
            (launched,) = instance.get_runs(dg.RunsFilter(job_name=JOB, tags={UI_FILTER_TAG: LOCATION_LABEL}))
            assert launched.remote_job_origin.location_name == "comfy_pipeline"
            in_the_shell = [r for r in everything if r.run_id != launched.run_id]
            assert [r.remote_job_origin for r in in_the_shell] == [None, None]  # stored, but of no code location
        # The job's Runs tab in the UI lists the launched run only.
        assert runs_tab(port) == [{"runId": launched.run_id, "status": "SUCCESS"}]
    finally:
        stop_group(dev)
