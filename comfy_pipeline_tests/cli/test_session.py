"""`comfy-pipeline server start|status|stop|restart` and the session API, with real processes on real ports."""

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from comfy_pipeline.comfyui import session as sessions
from comfy_pipeline_tests.support.helpers import free_port

pytestmark = pytest.mark.skipif(os.name != "posix", reason="session process control is POSIX only")

# A stand-in for ComfyUI's main.py (for --comfyui-dir and for a server that ignores SIGTERM): answers
# /system_stats and /queue like ComfyUI 0.33.0, takes main.py's --listen/--port.
STUB_SERVER = textwrap.dedent("""
    import http.server, json, sys
    args = sys.argv[1:]
    port = int(args[args.index("--port") + 1])
    host = args[args.index("--listen") + 1] if "--listen" in args else "127.0.0.1"
    print("stub argv:", " ".join(args), flush=True)
    STATS = {"system": {"os": "posix", "comfyui_version": "0.33.0-stub", "argv": ["main.py"] + args},
             "devices": [{"name": "stub", "type": "cpu", "index": 0, "vram_total": 4 * 1024 ** 3,
                          "vram_free": 2 * 1024 ** 3, "torch_vram_total": 0, "torch_vram_free": 0}]}
    QUEUE = {"queue_running": [], "queue_pending": []}
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = {"/system_stats": STATS, "/queue": QUEUE}.get(self.path)
            data = json.dumps(body if body is not None else {}).encode()
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
    http.server.ThreadingHTTPServer((host, port), Handler).serve_forever()
""")


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie (a killed process stays a zombie until its parent reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.fixture
def stub(tmp_path) -> Path:
    path = tmp_path / "stub_server.py"
    path.write_text(STUB_SERVER)
    return path


@pytest.fixture
def sim(tmp_path) -> str:
    """`--command` that starts the offline ComfyUI simulator (data in tmp_path: a killed one leaves no litter)."""
    return f"{sys.executable} -m comfy_pipeline.cli simulator --port {{port}} --data-dir {tmp_path / 'sim'}"


def sim_argv(sim: str, port: int) -> list[str]:
    return shlex.split(sim.replace("{port}", str(port)))


@pytest.fixture
def state_dir(tmp_path):
    directory = tmp_path / "state"
    yield directory
    # Never leave a server behind, whatever the test did.
    for session in sessions.recorded_sessions(directory):
        if session.liveness() == "running":
            sessions.stop_session(session, grace=1.0)


def server(state_dir: Path, *args: str, timeout: float = 30, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, sessions.STATE_DIR_ENV: str(state_dir), **(env or {})}
    return subprocess.run([sys.executable, "-m", "comfy_pipeline.cli", "server", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_start_status_stop(sim, state_dir):
    port = free_port()
    started = server(state_dir, "start", "--command", sim, "--port", str(port))
    assert started.returncode == 0, started.stderr
    assert f"http://127.0.0.1:{port}" in started.stdout

    record = json.loads((state_dir / f"session-{port}.json").read_text())
    assert record["port"] == port and record["url"] == f"http://127.0.0.1:{port}"
    assert f"--port {port} " in shlex.join(record["command"])  # the placeholder was filled in
    assert pid_alive(record["pid"])
    assert f"ComfyUI simulator listening on http://127.0.0.1:{port}" in Path(record["log_path"]).read_text()

    # A proxy in the environment must not be used for the local server.
    proxy = {"http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
    status = server(state_dir, "status", "--port", str(port), env=proxy)
    assert status.returncode == 0, status.stderr
    assert "running" in status.stdout and "0.33.0" in status.stdout
    assert re.search(r"VRAM free: \d+\.\d GB", status.stdout) and "Queue: 0 running, 0 pending" in status.stdout

    as_json = server(state_dir, "status", "--json")
    [report] = json.loads(as_json.stdout)
    assert as_json.returncode == 0
    assert report["status"] == "running" and report["version"] == "0.33.0" and report["pid"] == record["pid"]
    assert report["vram_free"] > 0 and report["queue_running"] == 0
    assert report["log_bytes"] > 0 and report["uptime_seconds"] >= 0

    again = server(state_dir, "start", "--command", sim, "--port", str(port))
    assert again.returncode == 2
    assert f"already running on port {port} (pid {record['pid']}" in again.stderr
    assert "Traceback" not in again.stderr

    stopped = server(state_dir, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not pid_alive(record["pid"])
    assert not (state_dir / f"session-{port}.json").exists()

    after = server(state_dir, "status", "--port", str(port))
    assert after.returncode == 1 and "no ComfyUI session recorded" in after.stdout
    nothing = server(state_dir, "stop")
    assert nothing.returncode == 1 and "no session recorded" in nothing.stderr


def test_port_used_by_another_program(sim, state_dir):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result = server(state_dir, "start", "--command", sim, "--port", str(port))
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use by another program" in result.stderr
    assert not (state_dir / f"session-{port}.json").exists()


def test_killed_server_is_reported_stale_and_cleaned_up(sim, state_dir):
    port = free_port()
    assert server(state_dir, "start", "--command", sim, "--port", str(port)).returncode == 0
    pid = json.loads((state_dir / f"session-{port}.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)

    status = server(state_dir, "status")
    assert status.returncode == 1
    assert f"stale session on port {port}: process {pid} is gone; cleaned up" in status.stdout
    assert not (state_dir / f"session-{port}.json").exists()

    # The same through stop, and the Python API, with a child of this very process (a zombie until reaped).
    session = sessions.start_session(sim_argv(sim, port), port=port, state_dir=state_dir)
    os.kill(session.pid, signal.SIGKILL)
    stop = server(state_dir, "stop", "--port", str(port))
    assert stop.returncode == 1 and f"process {session.pid} is gone; cleaned up" in stop.stdout
    assert sessions.current_session(state_dir) is None


def test_reused_pid_is_never_signalled(state_dir):
    # A live process that is not ours, recorded as if it were the session (the pid was reused after a reboot).
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        state_dir.mkdir(parents=True)
        (state_dir / "session-8188.json").write_text(json.dumps({
            "pid": bystander.pid, "port": 8188, "host": "127.0.0.1", "url": "http://127.0.0.1:8188",
            "command": ["python", "main.py"], "cwd": "/", "started_at": "2024-01-01T00:00:00+00:00",
            "log_path": str(state_dir / "comfyui-8188.log"), "state_path": "", "process_start": "1",
        }))
        stop = server(state_dir, "stop", "--grace", "0.5")
        assert stop.returncode == 1
        assert f"pid {bystander.pid} now belongs to another process (left alone); cleaned up" in stop.stdout
        time.sleep(0.2)
        assert bystander.poll() is None  # still running
        assert not (state_dir / "session-8188.json").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_server_that_exits_at_once_shows_its_log(state_dir):
    port = free_port()
    crash = "import sys; print('loading models'); print('RuntimeError: no CUDA device', flush=True); sys.exit(3)"
    result = server(state_dir, "start", "--command", f"{sys.executable} -c \"{crash}\"", "--port", str(port))
    assert result.returncode == 1
    assert "the server exited with code 3 before answering" in result.stderr
    assert "  | RuntimeError: no CUDA device" in result.stderr and "Traceback" not in result.stderr
    assert not (state_dir / f"session-{port}.json").exists()


def test_wait_timeout_kills_the_server(state_dir, tmp_path):
    port = free_port()
    pid_file = tmp_path / "pid"
    hang = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); print('loading'); time.sleep(60)"
    began = time.monotonic()
    result = server(state_dir, "start", "--command", f"{sys.executable} -c \"{hang}\"",
                    "--port", str(port), "--wait-timeout", "1")
    assert result.returncode == 1
    assert time.monotonic() - began < 10
    assert "did not answer" in result.stderr and "within 1 s" in result.stderr and "  | loading" in result.stderr
    assert not pid_alive(int(pid_file.read_text()))
    assert not (state_dir / f"session-{port}.json").exists()


def test_stop_kills_a_server_that_ignores_sigterm_and_its_workers(stub, state_dir, tmp_path):
    port = free_port()
    worker_pid_file = tmp_path / "worker.pid"
    launcher = tmp_path / "stubborn.py"
    launcher.write_text(textwrap.dedent(f"""
        import runpy, signal, subprocess, sys
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(worker_pid_file)!r}, "w").write(str(worker.pid))
        sys.argv = [{str(stub)!r}, "--port", sys.argv[1]]
        runpy.run_path({str(stub)!r}, run_name="__main__")
    """))
    sessions.start_session([sys.executable, str(launcher), str(port)], port=port, state_dir=state_dir)
    pid = json.loads((state_dir / f"session-{port}.json").read_text())["pid"]
    worker = int(worker_pid_file.read_text())

    began = time.monotonic()
    stopped = server(state_dir, "stop", "--grace", "0.5")
    assert stopped.returncode == 0, stopped.stderr
    assert 0.5 <= time.monotonic() - began < 10  # waited the grace period, then forced it
    for _ in range(50):  # the worker was reparented on its leader's death; give init a moment to reap it
        if not pid_alive(worker):
            break
        time.sleep(0.05)
    assert not pid_alive(pid) and not pid_alive(worker)


def test_restart_starts_the_recorded_command_again(sim, state_dir):
    port = free_port()
    sessions.start_session(sim_argv(sim, port), port=port, state_dir=state_dir)
    before = json.loads((state_dir / f"session-{port}.json").read_text())

    result = server(state_dir, "restart", "--port", str(port), "--grace", "2")
    assert result.returncode == 0, result.stderr
    after = json.loads((state_dir / f"session-{port}.json").read_text())
    assert after["pid"] != before["pid"] and after["command"] == before["command"]
    assert not pid_alive(before["pid"]) and pid_alive(after["pid"])
    assert server(state_dir, "status", "--port", str(port)).returncode == 0


def test_comfyui_dir_runs_main_py_with_extra_args(stub, state_dir, tmp_path):
    comfyui = tmp_path / "ComfyUI"
    comfyui.mkdir()
    (comfyui / "main.py").write_text(stub.read_text())
    port = free_port()
    result = server(state_dir, "start", "--comfyui-dir", str(comfyui), "--port", str(port), "--", "--lowvram")
    assert result.returncode == 0, result.stderr
    record = json.loads((state_dir / f"session-{port}.json").read_text())
    assert record["command"] == [sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(port), "--lowvram"]
    assert record["cwd"] == str(comfyui)
    assert f"stub argv: --listen 127.0.0.1 --port {port} --lowvram" in Path(record["log_path"]).read_text()
    status = server(state_dir, "status")
    assert "Version: 0.33.0-stub" in status.stdout and "VRAM free: 2.0 GB" in status.stdout


def test_credentials_on_the_command_line_are_not_shown(stub, state_dir):
    port = free_port()
    secret = "s3cr3t-t0ken-value"
    started = server(state_dir, "start", "--command", f"{sys.executable} {stub} --port {{port}} --token {secret}",
                     "--port", str(port))
    assert started.returncode == 0, started.stderr
    assert secret not in started.stdout + started.stderr and "--token '***'" in started.stderr
    state_file = state_dir / f"session-{port}.json"
    assert state_file.stat().st_mode & 0o077 == 0  # it keeps the real command for restart: owner only
    header = Path(json.loads(state_file.read_text())["log_path"]).read_text().splitlines()[0]
    assert header.endswith(f"--port {port} --token '***'")
    status = server(state_dir, "status", "--json")
    assert secret not in status.stdout and json.loads(status.stdout)[0]["command"].endswith("--token '***'")


def test_bad_start_arguments_exit_2(state_dir, tmp_path):
    no_main = server(state_dir, "start", "--comfyui-dir", str(tmp_path))
    assert no_main.returncode == 2 and "has no main.py" in no_main.stderr
    missing = server(state_dir, "start", "--command", "/nonexistent/comfyui-binary", "--port", str(free_port()))
    assert missing.returncode == 2 and "cannot start '/nonexistent/comfyui-binary'" in missing.stderr
    unparsable = server(state_dir, "start", "--command", "python 'main.py")
    assert unparsable.returncode == 2 and "cannot parse --command (No closing quotation)" in unparsable.stderr


def test_two_sessions_need_a_port_to_stop(sim, state_dir):
    ports = [free_port(), free_port()]
    for port in ports:
        sessions.start_session(sim_argv(sim, port), port=port, state_dir=state_dir)
    status = server(state_dir, "status", "--json")
    assert status.returncode == 0 and sorted(r["port"] for r in json.loads(status.stdout)) == sorted(ports)

    ambiguous = server(state_dir, "stop")
    assert ambiguous.returncode == 2 and "several sessions are recorded" in ambiguous.stderr
    assert server(state_dir, "stop", "--port", str(ports[0])).returncode == 0
    assert [s.port for s in sessions.recorded_sessions(state_dir)] == [ports[1]]


def test_status_of_a_frozen_server(sim, state_dir):
    port = free_port()
    session = sessions.start_session(sim_argv(sim, port), port=port, state_dir=state_dir)
    os.kill(session.pid, signal.SIGSTOP)  # alive, port open, never answers
    try:
        status = server(state_dir, "status", "--port", str(port))
    finally:
        os.kill(session.pid, signal.SIGCONT)
    assert status.returncode == 1
    assert f"process {session.pid} is alive but http://127.0.0.1:{port} does not answer" in status.stdout
    assert sessions.current_session(state_dir) is not None  # a slow server is not a stale one: the record stays


def test_python_api_reuses_a_running_session(sim, state_dir):
    port = free_port()
    assert sessions.current_session(state_dir) is None
    started = sessions.start_session(sim_argv(sim, port), port=port,
                                     state_dir=state_dir, wait_timeout=20)
    found = sessions.current_session(state_dir)
    assert found is not None and found.pid == started.pid and found.url == f"http://127.0.0.1:{port}"
    assert sessions.current_session(state_dir, port=port + 1) is None
    assert sessions.server_info(found)["version"] == "0.33.0"

    sessions.stop_session(found, grace=2)
    assert not pid_alive(started.pid)
    assert sessions.current_session(state_dir) is None


def test_state_dir_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(sessions.STATE_DIR_ENV, str(tmp_path / "from-env"))
    assert sessions.resolve_state_dir() == tmp_path / "from-env"
    assert sessions.resolve_state_dir(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv(sessions.STATE_DIR_ENV)
    monkeypatch.chdir(tmp_path)
    assert sessions.resolve_state_dir() == tmp_path / ".comfy_pipeline"
