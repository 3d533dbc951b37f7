"""Bad input battery (issue 6, section 2): each bad input through every entry point it can reach.

Entry points: `comfy-pipeline check` and `comfy-pipeline validate-workflow` as subprocesses, Dagster run config
(the step failure's description is what the UI shows) and the inbox sensor (the skip reason). Each case must give a
specific message saying what to fix, a non-zero exit / failed run / skipped tick, no traceback, and lose nothing:
an earlier run's outputs in the same output folder stay byte-identical, no file appears, and the ComfyUI server
(`guard`) is never given anything to execute.
"""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import requests
from PIL import Image

from comfy_pipeline.definitions import defs
from comfy_pipeline.defs.resources import ComfyUIResource
from comfy_pipeline.defs.sensors import prompt_inbox_sensor
from comfy_pipeline.simulator import Simulator
from comfy_pipeline.workflows.workflow import ENV_DIR
from comfy_pipeline_tests.support.helpers import REPO_WORKFLOWS, clean_env

Z = "z_image_turbo_generation"


# --- fixtures: a server that must stay idle, an output folder holding an earlier run -------------------------


@pytest.fixture(scope="module")
def guard(tmp_path_factory) -> Simulator:
    """The server every bad input is pointed at: it must end the module having executed nothing."""
    with Simulator(data_dir=tmp_path_factory.mktemp("guard"), image_seconds=0.05, video_seconds=0.1) as sim:
        yield sim


@pytest.fixture(scope="module")
def instance():
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture(scope="module")
def earlier(tmp_path_factory, instance) -> tuple[Path, dict[str, str]]:
    """An output folder with a real earlier run in it (made on another server), and its snapshot."""
    out = tmp_path_factory.mktemp("out")
    with Simulator(data_dir=tmp_path_factory.mktemp("producer"), image_seconds=0.05) as producer:
        config = {"resources": {"comfy": {"config": {"url": producer.url, "output_dir": str(out)}}},
                  "ops": prompt_ops({"text": "an earlier picture", "width": 256, "height": 256})}
        result = defs.resolve_job_def("image_generation_job").execute_in_process(
            run_config=config, instance=instance, raise_on_error=False)
    assert result.success
    assert list(out.rglob("*.png"))
    return out, snapshot(out)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Input images for the run-config cases: a real one and a text file named like one."""
    folder = tmp_path_factory.mktemp("files")
    Image.effect_noise((320, 240), 40).convert("RGB").save(folder / "start.png")
    (folder / "notes.png").write_text("not an image")
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under `folder` -> the sha256 of its bytes ("dir" for folders)."""
    return {
        str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


def assert_nothing_lost_or_run(guard: Simulator, earlier: tuple[Path, dict[str, str]]) -> None:
    out, before = earlier
    assert snapshot(out) == before  # earlier outputs byte-identical, no new (partial) file
    assert guard.busy_intervals() == []  # no GPU second spent
    assert requests.get(f"{guard.url}/queue", timeout=10).json() == {"queue_running": [], "queue_pending": []}
    assert requests.get(f"{guard.url}/history", timeout=10).json() == {}
    assert not any(guard.input_dir.iterdir()) and not any(guard.output_dir.iterdir())  # no upload, no output


def spec_file(*items) -> bytes:
    return json.dumps({"image_generation": list(items)}).encode()


def broken_workflows(folder: Path) -> Path:
    """A copy of the workflows folder in which the image workflow's JSON is cut off mid-file."""
    shutil.copytree(REPO_WORKFLOWS, folder)
    (folder / f"{Z}.json").write_text('{"9": {"class_type": "SaveImage",')
    return folder


# --- `comfy-pipeline check` --------------------------------------------------------------------------------

NOTES = {"notes.png": b"not an image"}

# id, arguments, files written next to them, what stderr must say. Every case exits 2 before any server call.
CHECK_CASES = [
    ("empty prompt", ["--prompt", ""], {}, ["The prompt is empty"]),
    ("100k prompt", ["--prompt", "a" * 100_000], {}, ["100,000 characters", "the limit is 10,000"]),
    ("control character", ["--prompt", "a red\x1b[31m fox"], {}, ["control character U+001B", "remove it"]),
    ("non-UTF-8 prompts file", ["--prompts-file", "p.json"],
     {"p.json": '{"image_generation": ["caf\xe9"]}'.encode("latin-1")},
     ["p.json: not valid UTF-8 (byte 26)", "save it as UTF-8"]),
    ("invalid JSON", ["--prompts-file", "p.json"], {"p.json": b'{"image_generation": ["x",'},
     ["invalid JSON at line 1, column 27: Expecting value"]),
    ("unknown spec key", ["--prompts-file", "p.json"], {"p.json": spec_file({"txt": "x"})},
     ["unknown key(s) ['txt']", "allowed:"]),
    ("prompts file is a folder", ["--prompts-file", "."], {}, ["--prompts-file .: not a regular file"]),
    ("width 1000", ["--prompts-file", "p.json"], {"p.json": spec_file({"text": "x", "width": 1000})},
     ["parameter 'width' = 1000", "a multiple of 16", "nearest allowed value is 992"]),
    ("height 100", ["--prompts-file", "p.json"], {"p.json": spec_file({"text": "x", "height": 100})},
     ["parameter 'height' = 100 is below the minimum 256", "from 256 to 2048"]),
    ("frames 100", ["--frames", "100"], {}, ["parameter 'frames' = 100", "8n+1", "nearest allowed value is 97"]),
    ("fps 0", ["--prompts-file", "p.json"], {"p.json": spec_file({"text": "x", "fps": 0})},
     ["parameter 'fps' = 0 is below the minimum 1", "from 1 to 60"]),
    ("seed -1", ["--seed", "-1"], {}, ["parameter 'seed' = -1 is below the minimum 0"]),
    ("seed not a number", ["--seed", "abc"], {}, ["argument --seed: invalid int value: 'abc'"]),
    ("seed string in file", ["--prompts-file", "p.json"], {"p.json": spec_file({"text": "x", "seed": "7"})},
     ["'seed' must be a whole number, got '7'"]),
    ("timeout -3", ["--timeout", "-3"], {}, ["--timeout must be a positive number of seconds, got -3"]),
    ("timeout not a number", ["--timeout", "soon"], {}, ["argument --timeout: invalid float value: 'soon'"]),
    ("no --image", ["--test-type", "video-only"], {}, ["--test-type video-only needs --image PATH"]),
    ("missing --image", ["--test-type", "video-only", "--image", "nowhere.png"], {}, ["nowhere.png: file not found"]),
    ("--image not an image", ["--test-type", "video-only", "--image", "notes.png"], NOTES,
     ["notes.png: not an image Pillow can read", "give a PNG, JPEG or WebP image"]),
]


def run_check(cwd: Path, out: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "comfy_pipeline.cli", "check", "--state-dir", str(cwd / "state"),
         "--output-dir", str(out), *args],
        cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("args, written, expected", [c[1:] for c in CHECK_CASES], ids=[c[0] for c in CHECK_CASES])
def test_check_cli_rejects(args, written, expected, guard, earlier, tmp_path):
    for name, data in written.items():
        (tmp_path / name).write_bytes(data)
    proc = run_check(tmp_path, earlier[0], "--comfyui-url", guard.url, *args)
    assert proc.returncode == 2, proc.stderr
    for fragment in expected:
        assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and proc.stdout == ""
    assert not (tmp_path / "state").exists()  # no progress recorded for a check that never started
    assert_nothing_lost_or_run(guard, earlier)


# --- `comfy-pipeline validate-workflow` --------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_workflows(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wf") / "workflows"
    shutil.copytree(REPO_WORKFLOWS, folder)
    (folder / "malformed.json").write_text('{"9": {"class_type": "SaveImage",\n "inputs": {}')
    (folder / "latin1.json").write_bytes('{"9": "caf\xe9"}'.encode("latin-1"))
    (folder / "ui.json").write_text(json.dumps({"nodes": [{"id": 9, "type": "SaveImage"}], "links": []}))
    shutil.copy(folder / f"{Z}.json", folder / "missing_node.json")
    params = json.loads((folder / f"{Z}.params.json").read_text())
    params["parameters"]["seed"]["targets"] = [{"node": "999", "input": "seed"}]
    (folder / "missing_node.params.json").write_text(json.dumps(params))
    return folder


# id, NAME_OR_PATH, what stderr must say; each exits 2 ("cannot be loaded").
WORKFLOW_CASES = [
    ("malformed JSON", "malformed", ["workflow malformed.json is not valid JSON", "line 2, column 14"]),
    ("not UTF-8", "latin1", ["workflow latin1.json is not UTF-8 text (byte 10)"]),
    ("UI format", "ui", ["in ComfyUI's UI format", "Export (API)"]),
    ("map names a missing node", "missing_node",
     ["parameter map missing_node.params.json", "parameter 'seed' targets node '999', which is not in the workflow"]),
    ("path traversal", "../../etc/passwd", ["contains '..'", "name a workflow inside"]),
    ("not a workflow file", "/etc/passwd", ["'/etc/passwd' is not a workflow file", ".params.json"]),
    ("unknown name", "no_such_flow", ["'no_such_flow' not found", "available: ", Z]),
]


@pytest.mark.parametrize("name, expected", [c[1:] for c in WORKFLOW_CASES], ids=[c[0] for c in WORKFLOW_CASES])
def test_validate_workflow_cli_rejects(name, expected, bad_workflows, tmp_path):
    # From tmp_path: a path on the command line is the user's own file when it exists, so where the command runs
    # decides what '../../etc/passwd' is (here: nothing, a name that climbs out of the workflows folder).
    proc = subprocess.run(
        [sys.executable, "-m", "comfy_pipeline.cli", "validate-workflow", name], cwd=tmp_path,
        env=clean_env(**{ENV_DIR: str(bad_workflows)}), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("validate-workflow: ")
    for fragment in expected:
        assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and proc.stdout == ""


# --- Dagster run config ------------------------------------------------------------------------------------


def prompt_ops(*items: dict) -> dict:
    return {"prompt": {"config": {"prompts": list(items)}}}


def video(*images: str, **config) -> dict:
    return {"ltx2_video": {"config": {"input_images": list(images), **config}}}


# id, job, ops config (input images relative to `files`), the step that fails, what its failure says.
RUN_CONFIG_CASES = [
    ("empty prompt", "image_to_video_job", prompt_ops({"text": ""}), "prompt",
     ["Bad prompt in run config: The prompt is empty"]),
    ("100k prompt", "image_to_video_job", prompt_ops({"text": "a" * 100_000}), "prompt",
     ["100,000 characters", "limit is 10,000"]),
    ("control character", "image_to_video_job", prompt_ops({"text": "a\x07b"}), "prompt", ["control character U+0007"]),
    ("control character in motion prompt", "image_to_video_job",
     prompt_ops({"text": "x", "motion_prompt": "pan\x00"}), "prompt",
     ["The motion prompt contains the control character U+0000"]),
    ("width 1000", "image_to_video_job", prompt_ops({"text": "x", "width": 1000}), "prompt",
     ["parameter 'width' = 1000", "from 256 to 2048, a multiple of 16", "nearest allowed value is 992"]),
    ("height 4000", "image_generation_job", prompt_ops({"text": "x", "height": 4000}), "prompt",
     ["parameter 'height' = 4000 is above the maximum 2048"]),
    # A wrong video setting used to cost the image's GPU time first; now the prompt step refuses it.
    ("frames 100", "image_to_video_job", prompt_ops({"text": "x", "frames": 100}), "prompt",
     ["parameter 'frames' = 100", "of the form 8n+1", "nearest allowed value is 97"]),
    ("fps 0", "image_to_video_job", prompt_ops({"text": "x", "fps": 0}), "prompt",
     ["parameter 'fps' = 0 is below the minimum 1"]),
    ("seed -1", "image_to_video_job", prompt_ops({"text": "x", "seed": -1}), "prompt",
     ["parameter 'seed' = -1 is below the minimum 0"]),
    ("second of two prompts bad", "image_to_video_job", prompt_ops({"text": "fine"}, {"text": "x", "width": 100}),
     "prompt",
     ["prompt 1: ", "parameter 'width' = 100 is below the minimum 256"]),
    ("input image missing", "video_generation_job", video("nowhere.png"), "ltx2_video",
     ["input image", "nowhere.png: file not found", "PNG, JPEG or WebP"]),
    ("input image not an image", "video_generation_job", video("start.png", "notes.png"), "ltx2_video",
     ["notes.png: not an image Pillow can read"]),
    ("video frames 100", "video_generation_job", video("start.png", frames=100), "ltx2_video",
     ["Bad video config", "parameter 'frames' = 100", "nearest allowed value is 97"]),
    ("video fps 0", "video_generation_job", video("start.png", fps=0), "ltx2_video",
     ["parameter 'fps' = 0 is below the minimum 1"]),
    ("video seed -1", "video_generation_job", video("start.png", seed=-1), "ltx2_video", ["parameter 'seed' = -1"]),
]


def execute(job: str, guard: Simulator, out: Path, ops: dict, instance):
    config = {"resources": {"comfy": {"config": {"url": guard.url, "output_dir": str(out)}}}, "ops": ops}
    return defs.resolve_job_def(job).execute_in_process(run_config=config, instance=instance, raise_on_error=False)


def step_failures(result) -> dict[str, str]:
    """Failed step -> the dg.Failure description the UI shows (None if it was an unexpected exception)."""
    failures = {}
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            user = event.step_failure_data.user_failure_data
            failures[event.step_key] = user.description if user else None
    return failures


@pytest.mark.parametrize(
    "job, ops, step, expected", [c[1:] for c in RUN_CONFIG_CASES], ids=[c[0] for c in RUN_CONFIG_CASES]
)
def test_run_config_rejects(job, ops, step, expected, guard, earlier, files, instance):
    if "ltx2_video" in ops:
        config = ops["ltx2_video"]["config"]
        config["input_images"] = [str(files / name) for name in config["input_images"]]
    result = execute(job, guard, earlier[0], ops, instance)
    assert not result.success
    failures = step_failures(result)
    assert list(failures) == [step]
    description = failures[step]
    assert description is not None  # a dg.Failure with a message, not a stray exception
    for fragment in expected:
        assert fragment in description
    assert "Traceback" not in description
    assert_nothing_lost_or_run(guard, earlier)


# id, job, ops config, what Dagster says (the path and the expected type): refused before a run exists.
CONFIG_TYPE_CASES = [
    ("seed as a string", "image_to_video_job", prompt_ops({"text": "x", "seed": "abc"}),
     ['root:ops:prompt:config:prompts[0]:seed', 'Value "abc"', 'expected type "Int"']),
    ("width as a string", "image_generation_job", prompt_ops({"text": "x", "width": "wide"}),
     ['root:ops:prompt:config:prompts[0]:width', 'expected type "Int"']),
    ("input_images not a list", "video_generation_job", {"ltx2_video": {"config": {"input_images": "start.png"}}},
     ["root:ops:ltx2_video:config:input_images must be list"]),
    ("unknown prompt key", "image_generation_job", prompt_ops({"text": "x", "size": 512}),
     ['Received unexpected config entry "size" at path root:ops:prompt:config:prompts[0]']),
]


@pytest.mark.parametrize(
    "job, ops, expected", [c[1:] for c in CONFIG_TYPE_CASES], ids=[c[0] for c in CONFIG_TYPE_CASES]
)
def test_run_config_of_the_wrong_type_is_refused_before_the_run(job, ops, expected, guard, earlier, instance):
    runs_before = len(instance.get_runs())
    with pytest.raises(dg.DagsterInvalidConfigError) as info:
        execute(job, guard, earlier[0], ops, instance)
    for fragment in expected:
        assert fragment in str(info.value)
    assert len(instance.get_runs()) == runs_before  # no run was even created
    assert_nothing_lost_or_run(guard, earlier)


# --- the inbox sensor --------------------------------------------------------------------------------------


def spec(**values) -> bytes:
    return json.dumps({"text": "a quiet forest", **values}).encode()


# id, files dropped into the inbox, what the skip reason says about them.
INBOX_CASES = [
    ("empty prompt", {"empty.txt": b""}, ["empty.txt: The prompt is empty"]),
    ("100k prompt", {"huge.txt": b"a" * 100_000}, ["huge.txt: The prompt is 100,000 characters long"]),
    ("control character", {"bell.txt": "a red\x07 fox".encode()},
     ["bell.txt: The prompt contains the control character U+0007"]),
    ("non-UTF-8", {"latin1.txt": "caf\xe9".encode("latin-1")},
     ["latin1.txt: not valid UTF-8 (byte 3); save the file as UTF-8"]),
    ("invalid JSON", {"broken.json": b'{"text": "x",'}, ["broken.json: invalid JSON at line 1, column 14"]),
    ("unknown key", {"typo.json": b'{"txt": "x"}'}, ["typo.json: unknown key(s) ['txt']"]),
    ("width 1000", {"width.json": spec(width=1000)},
     ["width.json: ", "parameter 'width' = 1000", "nearest allowed value is 992"]),
    ("frames 100", {"frames.json": spec(frames=100)}, ["frames.json: ", "parameter 'frames' = 100", "8n+1"]),
    ("fps 0", {"fps.json": spec(fps=0)}, ["fps.json: ", "parameter 'fps' = 0 is below the minimum 1"]),
    ("seed -1", {"seed.json": spec(seed=-1)}, ["seed.json: ", "parameter 'seed' = -1 is below the minimum 0"]),
    ("seed as a string", {"seed.json": spec(seed="abc")}, ["seed.json: 'seed' must be a whole number, got 'abc'"]),
    ("second spec bad", {"batch.json": json.dumps([{"text": "a"}, {"text": "b", "height": 100}]).encode()},
     ["batch.json: prompt 1: ", "parameter 'height' = 100"]),
    ("image beside it not an image", {"scene.txt": b"slow pan", "scene.png": b"not an image"},
     ["scene.txt: the image beside it, scene.png, cannot be used", "not an image Pillow can read"]),
]


@pytest.fixture(scope="module")
def sensor_instance():
    """Its own instance: the failed runs of the run-config cases must not open the circuit breaker."""
    with dg.instance_for_test() as inst:
        yield inst


def evaluate_inbox(instance, output_dir: Path, url: str):
    comfy = ComfyUIResource(url=url, output_dir=str(output_dir))
    with dg.build_sensor_context(instance=instance, resources={"comfy": comfy}, definitions=defs) as context:
        return prompt_inbox_sensor(context)


@pytest.mark.parametrize("dropped, expected", [c[1:] for c in INBOX_CASES], ids=[c[0] for c in INBOX_CASES])
def test_inbox_sensor_skips_and_sets_the_file_aside(dropped, expected, guard, sensor_instance, tmp_path):
    inbox = tmp_path / "out" / "inbox"
    inbox.mkdir(parents=True)
    for name, data in dropped.items():
        (inbox / name).write_bytes(data)
    before = snapshot(tmp_path / "out")
    result = evaluate_inbox(sensor_instance, tmp_path / "out", guard.url)
    assert isinstance(result, dg.SkipReason), result  # no run requested for a file that would fail
    for fragment in expected:
        assert fragment in result.skip_message
    assert "Traceback" not in result.skip_message
    # Each dropped file is set aside as it was, for the user to fix, with a note saying why: reported once.
    after = snapshot(tmp_path / "out")
    for name, digest in before.items():
        if digest == "dir":
            continue
        (moved,) = [k for k in after if k.startswith("inbox/rejected/") and k.endswith("_" + name.split("/")[-1])]
        assert after[moved] == digest
    assert len([k for k in after if k.endswith(".reason.txt")]) == 1  # one note per rejected prompt file
    assert not [k for k in after if k.startswith("inbox/") and k.count("/") == 1 and after[k] != "dir"]
    assert "moved to rejected/" in result.skip_message
    assert not isinstance(evaluate_inbox(sensor_instance, tmp_path / "out", guard.url), dg.SensorResult)
    assert guard.busy_intervals() == []


# --- a broken workflows folder, through every entry point ---------------------------------------------------


def test_malformed_workflow_json_everywhere(guard, earlier, instance, sensor_instance, tmp_path, monkeypatch):
    folder = broken_workflows(tmp_path / "workflows")
    expected = f"workflow {Z}.json is not valid JSON: Expecting property name enclosed in double quotes at line 1"

    proc = run_check(tmp_path, earlier[0], "--comfyui-url", guard.url, **{ENV_DIR: str(folder)})
    assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr

    monkeypatch.setenv(ENV_DIR, str(folder))
    failures = step_failures(execute("image_to_video_job", guard, earlier[0], prompt_ops({"text": "x"}), instance))
    assert list(failures) == ["prompt"] and expected in failures["prompt"]

    inbox = tmp_path / "out" / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "fox.txt").write_text("a red fox")
    skipped = evaluate_inbox(sensor_instance, tmp_path / "out", guard.url)
    assert isinstance(skipped, dg.SkipReason) and f"fox.txt: {expected}" in skipped.skip_message
    assert_nothing_lost_or_run(guard, earlier)
