"""Production, for real (issue 14): deploy/dagster.yaml on a real PostgreSQL, the code server and the daemon
started with the commands of deploy/docker-compose.yaml, `dagster job launch` through the run queue, the inbox
sensor and the schedule ticked by the daemon, one run at a time per ComfyUI server, and no placeholder images
on a deployment's instance. The ComfyUI server is `comfy-pipeline simulator` in its own process.

One PostgreSQL cluster, one code server and one daemon serve the whole file (the schedule's ticks and the
sensor's interval overlap the other tests). Docker is not needed: the compose file's commands run as local
processes, with the container paths and ports mapped to this machine's.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock
from zoneinfo import ZoneInfo

import dagster as dg
import psutil
import pytest
import yaml
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.instance.ref import InstanceRef
from dagster._core.scheduler.instigation import TickStatus

from comfy_pipeline.defs.resources import SERVER_TAG, gpu_pool
from comfy_pipeline_tests.support.helpers import BIN, REPO, dagster_env, free_port, wait_until
from comfy_pipeline_tests.support.postgres_cluster import PostgresCluster, PostgresUnavailable

# slow tier (pytest -m slow; CI runs every tier): a PostgreSQL cluster and a daemon per test
pytestmark = pytest.mark.slow

DEPLOY = REPO / "deploy"
SMALL = {"width": 256, "height": 256, "frames": 9, "fps": 8}
NO_SERVER = "No ComfyUI server is configured"
SCHEDULE = "daily_image_to_video_schedule"
# Where deploy/Dockerfile puts the instance and the workspace; the tests map it to their DAGSTER_HOME.
CONTAINER_HOME = "/opt/dagster/dagster_home"

postgres = pytest.mark.postgres


# -- the deployment files, read as docker compose reads them ---------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text(encoding="utf-8"))


def instance_env_vars() -> set[str]:
    """Every `env:` variable deploy/dagster.yaml reads."""
    found = set()

    def walk(node):
        if isinstance(node, dict):
            if set(node) == {"env"}:
                found.add(node["env"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load((DEPLOY / "dagster.yaml").read_text(encoding="utf-8")))
    return found


def dockerfile_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY in deploy/Dockerfile."""
    copies = []
    for line in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if line.startswith("COPY "):
            *sources, destination = line.split()[1:]
            copies.append((sources, destination))
    return copies


def test_compose_services_run_files_and_modules_that_exist_with_the_instance_env():
    spec = compose()
    services = spec["services"]
    assert set(services) == {"postgres", "code-server", "webserver", "daemon"}
    dagster_services = {name: s for name, s in services.items() if name != "postgres"}

    # Every image path a command names is put there by the Dockerfile, from a file of this repository.
    copied = {}
    for sources, destination in dockerfile_copies():
        for source in sources:
            assert (REPO / source).exists(), f"deploy/Dockerfile copies {source}, which does not exist"
            target = f"{destination.rstrip('/')}/{Path(source).name}" if destination.endswith("/") else destination
            copied[target] = source
    workspace_in_image = f"{CONTAINER_HOME}/workspace.yaml"
    assert copied.get(f"{CONTAINER_HOME}/dagster.yaml") == "deploy/dagster.yaml"
    assert copied.get(workspace_in_image) == "deploy/workspace.yaml"
    assert f"ENV DAGSTER_HOME={CONTAINER_HOME}" in (DEPLOY / "Dockerfile").read_text()

    # The code server loads the project module; the webserver and the daemon load the workspace, which points at
    # the code server's service name and port.
    code = dagster_services["code-server"]["command"]
    assert code[:3] == ["dagster", "code-server", "start"]
    module = code[code.index("-m") + 1]
    import importlib.util

    assert importlib.util.find_spec(module) is not None, module
    port = int(code[code.index("-p") + 1])
    (location,) = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())["load_from"]
    assert location["grpc_server"]["host"] == "code-server"
    assert location["grpc_server"]["port"] == port
    assert location["grpc_server"]["location_name"] == code[code.index("--location-name") + 1]
    health = dagster_services["code-server"]["healthcheck"]["test"]
    assert health[1:] == ["dagster", "api", "grpc-health-check", "-p", str(port)]
    assert dagster_services["webserver"]["command"][0] == "dagster-webserver"
    assert dagster_services["daemon"]["command"][:2] == ["dagster-daemon", "run"]
    for name in ("webserver", "daemon"):
        command = dagster_services[name]["command"]
        assert command[command.index("-w") + 1] == workspace_in_image
    for name, service in dagster_services.items():
        assert shutil.which(service["command"][0], path=str(BIN)), f"{name}: {service['command'][0]} is not installed"
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        build = service["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"

    # Every Dagster process gets exactly the variables deploy/dagster.yaml reads, the password from the
    # environment (never a literal), and the Postgres service is the host.
    needed = instance_env_vars()
    assert needed == {"DAGSTER_POSTGRES_HOST", "DAGSTER_POSTGRES_PORT", "DAGSTER_POSTGRES_USER",
                      "DAGSTER_POSTGRES_PASSWORD", "DAGSTER_POSTGRES_DB"}
    for name, service in dagster_services.items():
        env = service["environment"]
        assert needed <= set(env), f"{name} lacks {needed - set(env)}"
        assert env["DAGSTER_POSTGRES_HOST"] == "postgres"
        assert str(env["DAGSTER_POSTGRES_PORT"]) == "5432"
        assert env["DAGSTER_POSTGRES_PASSWORD"].startswith("${DAGSTER_POSTGRES_PASSWORD:?")
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${DAGSTER_POSTGRES_PASSWORD:?")

    # The code server runs the runs and the sensors: it gets the servers and the output volume, and shares
    # $DAGSTER_HOME/storage (manifests, compute logs) with the webserver.
    code_env = dagster_services["code-server"]["environment"]
    assert code_env["COMFYUI_URLS"] == "${COMFYUI_URLS:-}"
    mounts = dict(v.split(":", 1) for v in dagster_services["code-server"]["volumes"])
    assert mounts["comfy_outputs"] == code_env["COMFY_PIPELINE_OUTPUT_DIR"]
    assert mounts["dagster_storage"] == f"{CONTAINER_HOME}/storage"
    assert f"dagster_storage:{CONTAINER_HOME}/storage" in dagster_services["webserver"]["volumes"]
    assert set(spec["volumes"]) >= {"comfy_outputs", "dagster_storage", "postgres_data"}


def test_no_secret_is_baked_into_the_image_or_written_in_the_files():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert not re.search(r"^(ENV|ARG)\s.*(PASSWORD|TOKEN)", dockerfile, re.M | re.I)
    assert "**/.env" in (REPO / ".dockerignore").read_text().splitlines()
    assert ".env" in (DEPLOY / ".gitignore").read_text().splitlines()
    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    assert instance["storage"]["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_POSTGRES_PASSWORD"}
    # psycopg2 (what dagster-postgres installs); SQLAlchemy 2.1 would otherwise look for psycopg 3.
    assert instance["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    for name, service in compose()["services"].items():
        for variable, value in service["environment"].items():
            if re.search("PASSWORD|TOKEN", variable):
                from_env = re.fullmatch(r"\$\{[A-Z_]+(:[?-][^}]*)?\}", str(value))
                assert from_env, f"{name}: {variable} must come from the environment"


def test_the_local_instance_file_is_the_deployment_one_on_sqlite(tmp_path):
    from dagster._core.run_coordinator import QueuedRunCoordinator

    from comfy_pipeline.defs.resources import is_deployment

    deployed = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    local = yaml.safe_load((DEPLOY / "dagster.local.yaml").read_text())
    assert {key: value for key, value in deployed.items() if key != "storage"} == local
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.local.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        assert not is_deployment(instance)  # the embedded simulator stays the zero-configuration default here
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


# -- processes -------------------------------------------------------------------------------------------------


class Process:
    """A background process in its own session, logged to a file; stop() ends it and everything it started."""

    def __init__(self, name: str, command: list[str], log_dir: Path, env: dict, cwd: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=self._log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        try:
            family = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            for proc in family:  # a child that left the process group
                try:
                    proc.send_signal(sig)
                except psutil.Error:
                    pass
            _, alive = psutil.wait_procs(family, timeout=wait)
            if not alive:
                break
        try:
            self.proc.wait(timeout=10)
        finally:
            self._log_file.close()


@dataclass
class Deployment:
    env: dict
    home: Path
    out: Path
    workspace: Path
    simulator_url: str
    timezone: str
    instance: dg.DagsterInstance
    processes: list


def open_instance(home: Path, db_env: dict) -> dg.DagsterInstance:
    """The test's own handle on the Postgres instance (the variables are only needed while it connects)."""
    with mock.patch.dict(os.environ, db_env):
        instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
        instance.get_runs(limit=1)  # connect now, with the password in the environment
    return instance


def postgres_home(root: Path, db_env: dict) -> Path:
    """A DAGSTER_HOME with an unchanged copy of deploy/dagster.yaml, its tables made before processes race."""
    home = root / "home"
    home.mkdir(parents=True)
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    open_instance(home, db_env).dispose()
    return home


def set_pool_limit(env: dict, pool: str, limit: int = 1) -> None:
    """The deploy step of README's "Run in production": each server set's pool limit set up front with the CLI
    (Dagster 1.13 on PostgreSQL crashes a run that initializes a pool from `default_limit` while another run
    does: dagster-io/dagster#33552)."""
    proc = subprocess.run([str(BIN / "dagster"), "instance", "concurrency", "set", pool, str(limit)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def quiet_timezone() -> str:
    """A timezone in which the next minutes stay on one day, so that every tick of the test is for one date."""
    for name in ("UTC", "Asia/Tokyo", "America/New_York"):
        local = datetime.now(timezone.utc).astimezone(ZoneInfo(name))
        if 1 <= local.hour <= 22:
            return name
    return "UTC"


@pytest.fixture(scope="session")
def cluster():
    try:
        with PostgresCluster() as running:
            yield running
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):  # .ci/run installs PostgreSQL: there, not starting is a failure
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def deployment(cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("production")
    db_env = cluster.create_database("comfy", "comfy").env()
    home = postgres_home(root, db_env)
    out = root / "comfy_outputs"
    services = compose()["services"]
    processes = []
    try:
        simulator_port = free_port()
        simulator = Process(
            "simulator",
            [str(BIN / "comfy-pipeline"), "simulator", "--port", str(simulator_port), "--data-dir", str(root / "sim"),
             "--image-seconds", "0.05", "--video-seconds", "0.2"],
            root, dagster_env(home), root,
        )
        processes.append(simulator)
        simulator_url = f"http://127.0.0.1:{simulator_port}"
        tz = quiet_timezone()
        env = dagster_env(
            home, **db_env, COMFYUI_URL=simulator_url, COMFY_PIPELINE_OUTPUT_DIR=str(out),
            COMFY_PIPELINE_INBOX_SETTLE_S="0", COMFY_PIPELINE_DAILY_CRON="* * * * *", COMFY_PIPELINE_TIMEZONE=tz,
        )

        set_pool_limit(env, gpu_pool(simulator_url))
        # The code server, as docker-compose.yaml starts it (loopback and a free port instead of 0.0.0.0:4000).
        grpc_port = free_port()
        command = list(services["code-server"]["command"])
        command[command.index("-h") + 1] = "127.0.0.1"
        command[command.index("-p") + 1] = str(grpc_port)
        code_server = Process("code-server", command, root, env, root)
        processes.append(code_server)
        probe = services["code-server"]["healthcheck"]["test"][1:]
        health = [part if part != "4000" else str(grpc_port) for part in probe]
        healthy = lambda: subprocess.run(health, env=env, capture_output=True, timeout=30).returncode == 0  # noqa: E731
        assert wait_until(lambda: not code_server.alive() or healthy(), timeout=90), code_server.tail()
        assert code_server.alive(), code_server.tail()

        # The daemon with deploy/workspace.yaml, its host and port mapped to the code server above.
        workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
        workspace["load_from"][0]["grpc_server"].update(host="127.0.0.1", port=grpc_port)
        (home / "workspace.yaml").write_text(yaml.safe_dump(workspace))
        command = [part.replace(CONTAINER_HOME, str(home)) for part in services["daemon"]["command"]]
        daemon = Process("daemon", command, root, env, root)
        processes.append(daemon)

        instance = open_instance(home, db_env)
        wanted = {"SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR", "MONITORING"}
        assert wait_until(
            lambda: not daemon.alive() or wanted <= set(instance.get_daemon_heartbeats()), timeout=90
        ), daemon.tail()
        assert daemon.alive(), daemon.tail()
        yield Deployment(env, home, out, home / "workspace.yaml", simulator_url, tz, instance, processes)
        instance.dispose()
    finally:
        for process in reversed(processes):
            process.stop()
        leftovers = [p.name for p in processes if p.alive()]
        assert not leftovers, f"still running: {leftovers}"
        leaked = [p.name for p in processes if db_env["DAGSTER_POSTGRES_PASSWORD"] in p.log.read_text(errors="replace")]
        assert not leaked, f"the Postgres password is in the log of {leaked}"


# -- runs ------------------------------------------------------------------------------------------------------

TERMINAL = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def prompts_config(name: str, count: int = 1) -> dict:
    return {"ops": {"prompt": {"config": {"prompts": [
        {"text": f"{name} {i}: a lighthouse at dusk", "seed": i, **SMALL} for i in range(count)]}}}}


def launch_command(dep: Deployment, job: str, config: dict, run_id: str) -> list[str]:
    return [str(BIN / "dagster"), "job", "launch", "-w", str(dep.workspace), "-j", job,
            "--config-json", json.dumps(config), "--run-id", run_id]


def launch(dep: Deployment, *runs: tuple[str, dict]) -> list[str]:
    """`dagster job launch` for each (job, config), all at once; their run ids."""
    ids = [str(uuid.uuid4()) for _ in runs]
    procs = [subprocess.Popen(launch_command(dep, job, config, run_id), cwd=dep.home, env=dep.env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for (job, config), run_id in zip(runs, ids)]
    for proc in procs:
        log = proc.communicate(timeout=120)[0]
        assert proc.returncode == 0, log[-3000:]
    return ids


def wait_for_run(dep: Deployment, run_id: str, timeout: float = 150) -> dg.DagsterRun:
    def done():
        run = dep.instance.get_run_by_id(run_id)
        return run is not None and run.status in TERMINAL

    assert wait_until(done, timeout=timeout), (
        f"run {run_id} is {dep.instance.get_run_by_id(run_id).status}\n{tails(dep)}"
    )
    return dep.instance.get_run_by_id(run_id)


def tails(dep: Deployment) -> str:
    return "\n".join(f"--- {p.name}\n{p.tail(2500)}" for p in dep.processes if p.name != "simulator")


def event_times(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """The first timestamp of each event type of a run: ENQUEUED, STARTING (the daemon launched it), START, ..."""
    times = {}
    for record in instance.get_records_for_run(run_id, limit=10_000).records:
        event = record.event_log_entry
        if event.dagster_event is not None:
            times.setdefault(event.dagster_event.event_type_value.replace("PIPELINE_", ""), event.timestamp)
    return times


def failure_messages(instance: dg.DagsterInstance, run_id: str) -> str:
    texts = []
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=100).records:
        data = record.event_log_entry.dagster_event.step_failure_data
        texts.append(data.error.message if data.error else "")
        if data.user_failure_data and data.user_failure_data.description:
            texts.append(data.user_failure_data.description)
    return "\n".join(texts)


def run_outputs(out: Path, run_id: str, pattern: str) -> list[Path]:
    return sorted(out.glob(f"runs/*_{run_id}/**/{pattern}"))


def assert_media(out: Path, run_id: str, *, videos: bool = True) -> None:
    """The run's PNG (and MP4) are real, non-empty files in its own output folder."""
    from comfy_pipeline.media import probe_image, probe_video

    pngs = run_outputs(out, run_id, "*.png")
    assert pngs and all(p.stat().st_size > 0 for p in pngs), f"no PNG of run {run_id} under {out}"
    assert (probe_image(pngs[0]).width, probe_image(pngs[0]).height) == (SMALL["width"], SMALL["height"])
    if videos:
        mp4s = run_outputs(out, run_id, "*.mp4")
        assert mp4s and all(p.stat().st_size > 0 for p in mp4s), f"no MP4 of run {run_id} under {out}"
        assert probe_video(mp4s[0]).frame_count == SMALL["frames"]


def assert_no_two_runs_overlapped(instance: dg.DagsterInstance, server: str) -> list[dg.RunRecord]:
    """Of all runs against `server` in the instance, none started before the previous one ended."""
    records = instance.get_run_records(dg.RunsFilter(tags={SERVER_TAG: server}))
    ran = sorted((r for r in records if r.start_time), key=lambda r: r.start_time)
    for earlier, later in zip(ran, ran[1:]):
        assert earlier.end_time is not None and later.start_time >= earlier.end_time, (
            f"runs {earlier.dagster_run.run_id} and {later.dagster_run.run_id} against {server} overlapped"
        )
    return ran


# -- the tests -------------------------------------------------------------------------------------------------


@postgres
def test_the_instance_is_postgres_with_the_run_queue_limits_and_pools(deployment: Deployment):
    from dagster._core.run_coordinator import QueuedRunCoordinator

    instance = deployment.instance
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
    queue = instance.get_concurrency_config().run_queue_config
    assert [(limit["key"], limit["value"], limit["limit"]) for limit in queue.tag_concurrency_limits] == [
        (SERVER_TAG, {"applyLimitPerUniqueValue": True}, 1)]
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    assert instance.run_monitoring_enabled and instance.run_retries_enabled
    assert instance.event_log_storage.get_concurrency_info(gpu_pool(deployment.simulator_url)).slot_count == 1


@postgres
def test_a_launched_run_waits_in_the_queue_and_the_daemon_runs_it_to_success(deployment: Deployment):
    (run_id,) = launch(deployment, ("image_to_video_job", prompts_config("queued")))
    run = wait_for_run(deployment, run_id)
    assert run.status == dg.DagsterRunStatus.SUCCESS, tails(deployment)
    times = event_times(deployment.instance, run_id)
    # Through the queue: enqueued by `dagster job launch`, then taken off the queue and launched by the daemon
    # (RUN_STARTING), then started by the run worker.
    assert times["ENQUEUED"] <= times["STARTING"] <= times["START"], times
    assert run.tags[SERVER_TAG] == gpu_pool(deployment.simulator_url)
    assert_media(deployment.out, run_id)


@postgres
def test_the_daemon_ticks_the_inbox_sensor_and_its_run_succeeds(deployment: Deployment):
    inbox = deployment.out / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    partial = inbox / ".foxes.json.part"
    partial.write_text(json.dumps([{"text": "a red fox curled up in fresh snow", "seed": 7, **SMALL}]))
    partial.rename(inbox / "foxes.json")  # renamed into place: complete at once

    def started():
        return deployment.instance.get_run_records(dg.RunsFilter(tags={"comfy_pipeline/inbox_file": "foxes.json"}))

    # The sensor ticks at most every 30 s (minimum_interval_seconds).
    assert wait_until(started, timeout=120), tails(deployment)
    (record,) = started()
    run = wait_for_run(deployment, record.dagster_run.run_id)
    assert run.status == dg.DagsterRunStatus.SUCCESS, tails(deployment)
    assert run.tags["dagster/sensor_name"] == "prompt_inbox_sensor"
    assert "ENQUEUED" in event_times(deployment.instance, run.run_id)
    assert_media(deployment.out, run.run_id)


@postgres
def test_two_runs_against_one_server_take_turns_in_the_queue(deployment: Deployment):
    instance = deployment.instance
    first, second = launch(deployment, ("image_to_video_job", prompts_config("turn A", 2)),
                           ("image_to_video_job", prompts_config("turn B", 2)))
    seen_waiting = []

    def both_done():
        runs = [instance.get_run_by_id(first), instance.get_run_by_id(second)]
        statuses = {run.status for run in runs}
        started = {dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED}
        if dg.DagsterRunStatus.QUEUED in statuses and statuses & started:
            seen_waiting.append(time.time())
        return all(run.status in TERMINAL for run in runs)

    assert wait_until(both_done, timeout=240), tails(deployment)
    runs = {run_id: instance.get_run_by_id(run_id) for run_id in (first, second)}
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs.values()), (
        {run_id: (run.status, failure_messages(instance, run_id)) for run_id, run in runs.items()}, tails(deployment))
    assert seen_waiting, "never saw one run queued while the other ran"
    # From the records in PostgreSQL: the later run was launched only after the earlier one had ended.
    ordered = sorted((first, second), key=lambda run_id: event_times(instance, run_id)["STARTING"])
    earlier, later = (event_times(instance, run_id) for run_id in ordered)
    assert later["STARTING"] >= earlier["SUCCESS"], (earlier, later)
    assert later["ENQUEUED"] < earlier["SUCCESS"]  # it was waiting, not launched late
    # ...and no run against this server (scheduled and inbox runs included) ever overlapped another.
    ran = assert_no_two_runs_overlapped(instance, gpu_pool(deployment.simulator_url))
    assert {first, second} <= {r.dagster_run.run_id for r in ran}
    for run_id in (first, second):
        assert_media(deployment.out, run_id)


@postgres
def test_no_server_on_a_postgres_instance_fails_and_the_simulator_on_purpose_succeeds(cluster, tmp_path):
    db_env = cluster.create_database("comfy_no_server", "comfy_no_server").env()
    home = postgres_home(tmp_path, db_env)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(prompts_config("no server")))
    command = [str(BIN / "dagster"), "job", "execute", "-m", "comfy_pipeline", "-j", "image_generation_job",
               "-c", str(config)]
    outs = {"none": tmp_path / "out_none", "simulator": tmp_path / "out_simulator"}
    extra = {"none": {}, "simulator": {"COMFYUI_URL": "simulator"}}
    set_pool_limit(dagster_env(home, **db_env), gpu_pool("simulator"))  # both runs share the embedded pool
    procs = {
        case: subprocess.Popen(
            command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dagster_env(home, **db_env, COMFY_PIPELINE_OUTPUT_DIR=str(outs[case]), **extra[case]))
        for case in outs
    }
    logs = {case: proc.communicate(timeout=240)[0] for case, proc in procs.items()}
    assert db_env["DAGSTER_POSTGRES_PASSWORD"] not in logs["none"] + logs["simulator"]

    assert procs["none"].returncode != 0, logs["none"][-3000:]
    assert NO_SERVER in logs["none"] and "COMFYUI_URL=simulator" in logs["none"], logs["none"][-6000:]
    assert not list(outs["none"].rglob("*.png"))
    assert procs["simulator"].returncode == 0, logs["simulator"][-3000:]
    assert "backend: simulator" in logs["simulator"]

    instance = open_instance(home, db_env)
    try:
        runs = instance.get_runs()
        failed = [run for run in runs if run.status == dg.DagsterRunStatus.FAILURE]
        succeeded = [run for run in runs if run.status == dg.DagsterRunStatus.SUCCESS]
        assert len(runs) == 2 and len(failed) == 1 and len(succeeded) == 1, [run.status for run in runs]
        assert NO_SERVER in failure_messages(instance, failed[0].run_id)
        assert run_outputs(outs["simulator"], succeeded[0].run_id, "*.png")
    finally:
        instance.dispose()


@postgres
def test_the_schedule_makes_one_run_per_day_however_often_it_ticks(deployment: Deployment):
    instance = deployment.instance
    # COMFY_PIPELINE_DAILY_CRON="* * * * *": the daemon ticks the schedule every minute, every tick for one date.
    (state,) = [s for s in instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)
                if s.instigator_name == SCHEDULE]

    def ticks():
        found = instance.get_ticks(state.instigator_origin_id, state.selector_id)
        return [t for t in found if t.status in (TickStatus.SUCCESS, TickStatus.SKIPPED)]

    assert wait_until(lambda: len(ticks()) >= 2, timeout=200), (
        instance.get_ticks(state.instigator_origin_id, state.selector_id), tails(deployment))
    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/schedule_name": SCHEDULE}))
    zone = ZoneInfo(deployment.timezone)
    days = {t.timestamp and datetime.fromtimestamp(t.timestamp, zone).date() for t in ticks()}
    assert len(days) == 1, days
    assert len(runs) == 1, [(r.run_id, r.tags.get("dagster/run_key")) for r in runs]
    (run,) = runs
    assert run.tags["dagster/run_key"] == f"daily-{days.pop():%Y-%m-%d}"
    done = sorted(ticks(), key=lambda t: t.timestamp)
    assert done[0].status == TickStatus.SUCCESS and done[0].run_ids == [run.run_id]
    for tick in done[1:]:
        assert tick.status == TickStatus.SKIPPED and not tick.run_ids
        assert "exists already" in tick.skip_reason and run.run_id in tick.skip_reason
    assert wait_for_run(deployment, run.run_id, timeout=200).status == dg.DagsterRunStatus.SUCCESS, tails(deployment)
