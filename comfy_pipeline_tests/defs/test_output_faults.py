"""Fault suite, output side: what reaches the disk when the server, the workflow, the files or the disk are wrong,
when two runs share the output folder, and when a sensor ticks again."""

import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image

from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import (
    BIN,
    REPO,
    check_evaluations,
    clean_env,
    config,
    execute,
    failure_text,
    files_in,
    prompts,
)


@pytest.fixture
def sim(tmp_path):
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.05, video_seconds=0.1) as simulator:
        yield simulator


def partials(folder: Path) -> list[Path]:
    return [p for p in files_in(folder) if p.name.startswith(".") or p.suffix == ".part"]


# -- rejected before any GPU time ---------------------------------------------------------------------------


def test_missing_model_names_folder_and_file_and_submits_nothing(instance, tmp_path):
    with Simulator(data_dir=tmp_path / "sim", models={}) as bare:
        result = execute("image_generation_job", instance, config(bare.url, tmp_path / "out", prompts(1)))
        assert bare.started_prompts() == []
    assert not result.success
    text = failure_text(result)
    assert "nothing was submitted" in text
    assert "z_image_turbo_bf16.safetensors" in text and "ComfyUI/models/diffusion_models/" in text
    assert "ae.safetensors" in text and "ComfyUI/models/vae/" in text
    assert files_in(tmp_path / "out") == []


def test_unknown_node_names_the_class_and_its_custom_node_pack(instance, sim, tmp_path, monkeypatch):
    folder = tmp_path / "workflows"
    shutil.copytree(REPO / "workflows", folder)
    graph_path = folder / "z_image_turbo_generation.json"
    graph = json.loads(graph_path.read_text())
    graph["57:28"] = {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": "z_image_turbo-Q8_0.gguf"}}
    graph_path.write_text(json.dumps(graph))
    monkeypatch.setenv("COMFY_PIPELINE_WORKFLOWS_DIR", str(folder))

    result = execute("image_generation_job", instance, config(sim.url, tmp_path / "out", prompts(1)))
    assert not result.success
    text = failure_text(result)
    assert "node 57:28 (UnetLoaderGGUF)" in text and "node type UnetLoaderGGUF is not installed" in text
    assert "Install the custom node pack ComfyUI-GGUF (https://github.com/city96/ComfyUI-GGUF)" in text
    assert sim.started_prompts() == []


# -- bad files from the server ------------------------------------------------------------------------------


def test_corrupted_video_fails_its_check_and_is_kept_for_inspection(instance, sim, tmp_path):
    # The image case is defs/test_jobs.py::test_corrupted_image_fails_blocking_check_and_keeps_the_file.
    image = tmp_path / "start.png"
    Image.effect_noise((320, 240), 40).convert("RGB").save(image)
    sim.set_fault("corrupt-output", count=1)  # the server truncates the MP4 it wrote to half its size
    run_config = {
        "resources": {"comfy": {"config": {"url": sim.url, "output_dir": str(tmp_path / "out")}}},
        "ops": {"ltx2_video": {"config": {"input_images": [str(image)], "frames": 9, "fps": 8}}},
    }
    result = execute("video_generation_job", instance, run_config)
    assert not result.success
    checks = check_evaluations(result)
    assert checks["video_quality"] is False and checks["all_outputs_valid"] is False
    (kept,) = [p for p in files_in(tmp_path / "out") if p.suffix == ".mp4"]
    report = json.loads(next(p for p in files_in(tmp_path / "out") if p.name == "validation_report.json").read_text())
    (failed,) = [row for row in report["rows"] if row["verdict"] == "failed"]
    assert failed["path"] == str(kept)  # the report marks the kept file failed, saying why
    assert not next(c for c in failed["checks"] if c["name"] == "decodes")["passed"]
    assert next(c for c in failed["checks"] if c["name"] == "decodes")["message"] in failed["reason"]
    assert partials(tmp_path / "out") == []


def test_hostile_output_filename_writes_nothing_outside_the_output_folder(instance, sim, tmp_path):
    # The server names the output "../../image_00_00001_.png" in subfolder "../..". (Names that a server does
    # serve are cut to a plain file name: comfyui/test_client_files.py::test_hostile_filenames_never_leave_dest_dir.)
    sim.set_fault("hostile-filename")
    before = set(files_in(tmp_path))
    result = execute("image_generation_job", instance, config(sim.url, tmp_path / "out", prompts(1)))
    assert not result.success
    assert "answered HTTP 400 for output '../../" in failure_text(result)
    new = set(files_in(tmp_path)) - before
    assert all(p.is_relative_to(tmp_path / "sim") for p in new)  # only the server's own file, in its folder
    assert files_in(tmp_path / "out") == []


def test_output_over_the_size_limit_is_refused_without_a_partial_file(instance, sim, tmp_path):
    result = execute("image_generation_job", instance,
                     config(sim.url, tmp_path / "out", prompts(1), max_download_bytes=20_000))
    assert not result.success
    assert "more than the limit of 20000 bytes; nothing was written" in failure_text(result)
    assert files_in(tmp_path / "out") == []


# -- the local disk fails -----------------------------------------------------------------------------------

DISK_LIMITED_RUN = """
import json, resource, signal, sys
from comfy_pipeline.definitions import defs
from comfy_pipeline_tests.support.helpers import failure_text

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))  # the ~150 KB image will not fit
result = defs.resolve_job_def("image_generation_job").execute_in_process(  # in-memory instance: no files
    run_config=json.loads(sys.argv[1]), raise_on_error=False)
print(json.dumps({"success": result.success, "failure": failure_text(result)}))
"""


def test_a_failed_disk_write_leaves_no_partial_file(sim, tmp_path):
    run_config = config(sim.url, tmp_path / "out", prompts(1))
    proc = subprocess.run([sys.executable, "-c", DISK_LIMITED_RUN, json.dumps(run_config)], cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(tmp_path)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome["success"] is False
    assert "failed (File too large); the partial file was deleted" in outcome["failure"]
    assert files_in(tmp_path / "out") == []  # neither the image nor its temp file


# -- concurrency and repetition -----------------------------------------------------------------------------


def test_two_runs_at_once_into_the_same_folder_do_not_clobber_each_other(sim, tmp_path):
    # Two `dagster job execute` processes on one Dagster instance, same prompts (same descriptive names), same
    # output folder. (Threads are no option: Dagster's in-process executions deadlock on its logging set-up.)
    out = tmp_path / "out"
    (tmp_path / "home").mkdir()
    with dg.DagsterInstance.from_config(str(tmp_path / "home")):
        pass  # create the storage first: two processes creating a fresh one at once race on its tables
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(json.dumps({"ops": {"prompt": {"config": {"prompts": prompts(2)}}}}))
    env = clean_env(COMFYUI_URL=sim.url, COMFY_PIPELINE_OUTPUT_DIR=str(out), DAGSTER_HOME=str(tmp_path / "home"))
    command = [str(BIN / "dagster"), "job", "execute", "-m", "comfy_pipeline", "-j", "image_generation_job",
               "-c", str(run_yaml)]
    procs = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    logs = [proc.communicate(timeout=180)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [log[-2000:] for log in logs]

    run_folders = sorted((out / "runs").iterdir())
    assert len(run_folders) == 2  # one folder per run
    for folder in run_folders:
        images = sorted(p.name for p in (folder / "images").iterdir())
        assert images == ["00_a-lighthouse-take-0_seed0.png", "01_a-lighthouse-take-1_seed1.png"]
        report = json.loads((folder / "reports" / "validation_report.json").read_text())
        assert {Path(row["path"]).parent.parent for row in report["rows"]} == {folder}  # only its own files
        assert report["failed"] == 0
    assert len(sim.started_prompts()) == 4
    assert partials(out) == []


def test_a_sensor_ticking_again_starts_no_duplicate_run(tmp_path, monkeypatch):
    # The real sensor daemon's iteration on a real instance (runs are queued, not launched): the same inbox file
    # seen on three ticks starts one run; an edited file starts another.
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import (
        create_test_daemon_workspace_context,
        freeze_time,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster._daemon.sensor import execute_sensor_iteration

    monkeypatch.chdir(tmp_path)  # the definitions' output folder is ./comfy_outputs
    inbox = tmp_path / "comfy_outputs" / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "fox.txt").write_text("a red fox in snow\n", encoding="utf-8")
    queued = {"run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}}
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name="comfy_pipeline", working_directory=str(REPO)),
        location_name="comfy_pipeline",
    )
    with dg.instance_for_test(overrides=queued) as instance:
        with create_test_daemon_workspace_context(InProcessWorkspaceLoadTarget(origin), instance) as workspace:

            def tick(at: float) -> list[str]:
                with freeze_time(at):  # past the sensor's 30 s minimum interval, so every tick evaluates
                    list(execute_sensor_iteration(workspace, logging.getLogger("sensor-test"), None, None))
                return sorted(r.tags["dagster/run_key"] for r in instance.get_runs())

            now = time.time()
            first = tick(now)
            assert len(first) == 1
            assert tick(now + 40) == first and tick(now + 80) == first
            (inbox / "fox.txt").write_text("a red fox in deep snow\n", encoding="utf-8")
            assert len(tick(now + 120)) == 2
