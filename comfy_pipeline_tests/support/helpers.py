"""Plain helpers shared by the tests (fixtures live in conftest.py): paths, waiting on conditions, ports,
clean environments for subprocesses, the `check` command, Dagster job results and simulator requests."""

import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import requests
import websocket
from PIL import Image

from comfy_pipeline.media.binaries import ffmpeg_path
from comfy_pipeline.simulator import Simulator

# -- paths ------------------------------------------------------------------------------------------------------

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"
CAPTURES = FIXTURES / "captures"
TEMPLATES = FIXTURES / "templates"
REPO_WORKFLOWS = REPO / "workflows"
BIN = Path(sys.executable).parent  # the console scripts of this environment (dagster, dg, comfy-pipeline)


def load_capture(name: str) -> dict:
    """A request/response pair recorded from a real ComfyUI 0.33.0 (copied from the reference captures)."""
    return json.loads((CAPTURES / f"{name}.json").read_text(encoding="utf-8"))


# -- waiting and ports ------------------------------------------------------------------------------------------


def wait_until(predicate, timeout: float = 5.0) -> bool:
    """Poll `predicate` every 50 ms until it is true or `timeout` seconds have passed; its last answer."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on (for "server down" cases and servers started by tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- subprocesses -----------------------------------------------------------------------------------------------

# Settings a developer's shell may hold that would change what a subprocess under test does.
OUR_ENV_PREFIXES = ("DAGSTER_", "COMFYUI_", "COMFY_PIPELINE_", "TEST_TIMEOUT", "AWS_")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without our settings (as on a fresh machine), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(OUR_ENV_PREFIXES)}
    env.update(extra)
    return env


def dagster_env(home: Path, **extra: str) -> dict[str, str]:
    """A clean environment for Dagster subprocesses on the instance in `home`, with the suite's quick retries."""
    quick_retries = {"COMFY_PIPELINE_STEP_RETRIES": "1", "COMFY_PIPELINE_RETRY_DELAY_S": "0.2"}
    return clean_env(**{"DAGSTER_HOME": str(home), **quick_retries, **extra})  # `extra` may override the retries


def check(tmp_path: Path, *args: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    """`comfy-pipeline check` as a user runs it, its state and outputs under `tmp_path`."""
    return subprocess.run(
        [sys.executable, "-m", "comfy_pipeline.cli", "check", "--state-dir", str(tmp_path / "state"),
         "--output-dir", str(tmp_path / "out"), *args],
        cwd=tmp_path, env=clean_env(**env), capture_output=True, text=True, timeout=timeout,
    )


# -- a throw-away copy of the project -------------------------------------------------------------------------

PROJECT_FILES = ("pyproject.toml", "workspace.yaml")
PROJECT_FOLDERS = ("comfy_pipeline", "workflows")


def project_copy(tmp_path: Path) -> Path:
    """A copy of the project in `tmp_path / "project"`, for tests that add a defs.yaml or a workflow: they never
    write into the repository. Run `dg`/`dagster` there with `in_project` so that the copy is what loads."""
    project = tmp_path / "project"
    project.mkdir()
    for name in PROJECT_FILES:
        shutil.copy(REPO / name, project / name)
    for name in PROJECT_FOLDERS:
        shutil.copytree(REPO / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    return project


def in_project(project: Path, *command: str, home: Path | None = None, timeout: float = 240,
               **env: str) -> subprocess.CompletedProcess:
    """`command` (`dg ...`, `dagster ...`: a console script of this environment, or a full path) run in `project`
    as a user runs it there: `comfy_pipeline` imports from the copy (PYTHONPATH comes before the editable
    install), Dagster's instance is in `home` (default: `project/../dagster_home`), the suite's quick retries.
    The server is the embedded simulator unless `env` names one (COMFYUI_URL=...); outputs go to
    `project/../out` unless COMFY_PIPELINE_OUTPUT_DIR says otherwise."""
    home = home or project.parent / "dagster_home"
    home.mkdir(exist_ok=True)
    program = command[0] if os.sep in command[0] else str(BIN / command[0])
    settings = {"PYTHONPATH": str(project), "COMFYUI_URL": "simulator",
                "COMFY_PIPELINE_OUTPUT_DIR": str(project.parent / "out"), **env}
    return subprocess.run([program, *command[1:]], cwd=project, env=dagster_env(home, **settings),
                          capture_output=True, text=True, timeout=timeout)


def stop_group(proc: subprocess.Popen, grace: float = 60) -> None:
    """Stop a process started with start_new_session=True (`dg dev` and its children): SIGTERM to its group,
    SIGKILL if it has not ended within `grace` seconds."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def output_of(proc: subprocess.CompletedProcess) -> str:
    """What a user saw of a command (the end of it: Dagster is talkative), for assertion messages."""
    return f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"


def report_of(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout)


def ffmpeg_processes_since(started: float) -> list[str]:
    """ffmpeg/ffprobe processes of this Python environment started since `started` and still alive (a leak: a
    kill that missed them). Other environments' ffmpeg (another checkout's tests) are not ours to judge."""
    import psutil

    found = []
    for proc in psutil.process_iter(["name", "create_time", "cmdline"]):
        try:
            command = " ".join(proc.info["cmdline"] or [])
            ours = sys.prefix in command or os.path.dirname(ffmpeg_path()) in command
            if proc.info["name"] in ("ffmpeg", "ffprobe") and proc.info["create_time"] >= started - 1 and ours:
                found.append(f"{proc.pid}: {command[:200]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


# -- Dagster jobs -----------------------------------------------------------------------------------------------

PROMPT_SIZE = {"width": 512, "height": 384}
SMALL = {**PROMPT_SIZE, "frames": 17, "fps": 24, "seed": 7}  # a prompt spec that is quick everywhere


def prompts(n: int, **extra) -> list[dict]:
    """`n` distinct prompts for the `prompt` op's config (seed i for prompt i)."""
    return [{"text": f"a lighthouse, take {i}", **PROMPT_SIZE, "seed": i, **extra} for i in range(n)]


def run_config(sim_url: str, out: Path, prompts: list[dict] | None = None, **ops) -> dict:
    """Run config for the server at `sim_url` writing to `out`, with these prompts and other ops' config."""
    config = {"resources": {"comfy": {"config": {"url": sim_url, "output_dir": str(out)}}}, "ops": dict(ops)}
    if prompts is not None:
        config["ops"]["prompt"] = {"config": {"prompts": prompts}}
    return config


def config(url: str, out: Path, prompts: list[dict], **comfy) -> dict:
    """Run config with these prompts and more resource config (timeouts, limits) for the server at `url`."""
    return {
        "resources": {"comfy": {"config": {"url": url, "output_dir": str(out), **comfy}}},
        "ops": {"prompt": {"config": {"prompts": prompts}}},
    }


def execute(job_name: str, instance, config: dict):
    """Run a job of the code location in-process (the definitions load on first use)."""
    from comfy_pipeline.definitions import defs

    return defs.resolve_job_def(job_name).execute_in_process(run_config=config, instance=instance, raise_on_error=False)


def items_of(materialization: dg.AssetMaterialization) -> list[dict]:
    """The outputs a materialization recorded: the metadata points to the JSON listing (it grows with the run)."""
    return json.loads(Path(materialization.metadata["items_json"].value).read_text())["items"]


def materializations(result, asset: str) -> list[dg.AssetMaterialization]:
    return [
        e.event_specific_data.materialization
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
        and e.event_specific_data.materialization.asset_key == dg.AssetKey(asset)
    ]


def failure_text(result) -> str:
    """What the user sees for a failed step: the dg.Failure description, else the error message; a step that
    was retried first shows its earlier attempts' errors."""
    texts = []
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY:
            error = event.event_specific_data.error  # RetryRequestedFromPolicy, caused by the step's Failure
            while error is not None:
                texts.append(error.message.strip())
                error = error.cause
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            data = event.step_failure_data
            user = data.user_failure_data
            texts.append(user.description if user and user.description else data.error.message)
    return "\n".join(texts)


def check_evaluations(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def decode_data_uri(markdown: str) -> tuple:
    """The image of a `![preview](data:image/jpeg;base64,...)` preview, and the length of its base64."""
    prefix = "![preview](data:image/jpeg;base64,"
    assert markdown.startswith(prefix) and markdown.endswith(")")
    encoded = markdown[len(prefix) : -1]
    img = Image.open(io.BytesIO(base64.b64decode(encoded, validate=True)))
    img.load()
    return img, len(encoded)


# -- talking to the simulator directly --------------------------------------------------------------------------


def wait_for_history(simulator: Simulator, prompt_id: str, timeout: float = 20) -> dict:
    """Poll GET /history/{id} until the entry is there (it is `{}` while pending or running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = requests.get(f"{simulator.url}/history/{prompt_id}", timeout=10).json()
        if entry:
            return entry[prompt_id]
        time.sleep(0.02)
    raise AssertionError(f"prompt {prompt_id} did not finish within {timeout} s")


def post(simulator: Simulator, prompt: dict, **extra) -> requests.Response:
    return requests.post(simulator.url + "/prompt", json={"prompt": prompt, **extra}, timeout=10)


class Socket:
    """A plain websocket-client connection that records every text message."""

    def __init__(self, simulator: Simulator, client_id: str | None = None):
        query = f"?clientId={client_id}" if client_id else ""
        self.ws = websocket.create_connection(simulator.url.replace("http", "ws", 1) + "/ws" + query, timeout=15)
        self.messages: list[dict] = []

    def receive(self) -> dict:
        while True:
            frame = self.ws.recv()
            if frame == "":  # websocket-client's answer to a close frame
                raise ConnectionError("the server closed the websocket")
            if isinstance(frame, str):
                message = json.loads(frame)
                self.messages.append(message)
                return message

    def until_done(self, prompt_id: str) -> list[dict]:
        while True:
            message = self.receive()
            data = message["data"]
            if message["type"] == "executing" and data["node"] is None and data["prompt_id"] == prompt_id:
                return self.messages

    def drain(self, seconds: float) -> list[dict]:
        self.ws.settimeout(seconds)
        try:
            while True:
                self.receive()
        except websocket.WebSocketTimeoutException:
            return self.messages
        finally:
            self.ws.settimeout(15)

    def close(self) -> None:
        self.ws.close()


def types(messages: list[dict]) -> list[str]:
    return [message["type"] for message in messages]


def sampler_graph(prefix: str, seed: int = 1, steps: int = 10) -> dict:
    """A text-to-image graph: the simulator spends image_seconds in its KSampler, step by step."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "ltx-2-19b-dev-fp8.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": prefix, "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0,
            "model": ["4", 0], "positive": ["6", 0], "negative": ["6", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
    }


def quick_graph(prefix: str, color: int = 0) -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


# -- steps and sensors without the whole pipeline ---------------------------------------------------------------


class StepServers:
    """What a GPU step needs of its servers (batch.step.Servers): the clients and the output store. The Dagster
    resource is the real one."""

    max_in_flight, prompt_timeout, queue_timeout = 2, 120.0, 120.0

    def __init__(self, clients: list, output_store):
        self.clients, self.output_store = clients, output_store

    def get_clients(self) -> list:
        return self.clients

    def server_info(self):
        from comfy_pipeline.batch.records import ServerInfo

        url = self.clients[0].url
        return ServerInfo("simulator", url, (url,), "0.33.0", "simulated")


def evaluate_failure_sensor(instance, run_id: str, comfy) -> None:
    """The failure sensor, evaluated once for the failed run `run_id` as the daemon would, with `comfy`."""
    from comfy_pipeline.defs.sensors import failure_log_sensor

    run = instance.get_run_by_id(run_id)
    failure_event = next(
        r.event_log_entry.dagster_event
        for r in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    )
    with dg.build_run_status_sensor_context(
        sensor_name="failure_log_sensor", dagster_instance=instance, dagster_run=run, dagster_event=failure_event,
        resources={"comfy": comfy},
    ) as ctx:
        failure_log_sensor(ctx.for_run_failure())
