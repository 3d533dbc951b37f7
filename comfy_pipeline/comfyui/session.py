"""A persistent local ComfyUI session: start a server once, keep it running across many test runs, stop it later.

Each session is recorded in a state file (`<state dir>/session-<port>.json`, written atomically) so later
commands, `comfy-pipeline check` and the Dagster resource can find and reuse it. A pid alone does not identify a
process (pids get reused), so the record also keeps the kernel's start time of the process: a recorded session
whose pid now belongs to another process is treated as gone, and that process is never signalled.

Process control is POSIX (Linux first; macOS needs psutil for the process start time).
"""

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from comfy_pipeline.comfyui.redaction import MASK
from comfy_pipeline.workflows.prompts import load_json_bounded

DEFAULT_PORT = 8188
DEFAULT_HOST = "127.0.0.1"
STATE_DIR_ENV = "COMFY_PIPELINE_STATE_DIR"
DEFAULT_STATE_DIR = ".comfy_pipeline"
POLL_INTERVAL = 0.25
LOG_TAIL_LINES = 20

# Popen objects of the servers this process started, so they can be reaped (no zombies, no ResourceWarning).
_children: dict[int, subprocess.Popen] = {}


class SessionError(Exception):
    """A session command failed; the message says what failed and what to do."""


class StateFileError(SessionError):
    """A state file that cannot be used: bad input the user has to fix (exit 2)."""


class SessionConflict(SessionError):
    """The port is taken: by a recorded session that is still running, or by another program."""


class SessionStartError(SessionError):
    """The server did not come up; `log_tail` holds the last lines of its log."""

    def __init__(self, message: str, log_tail: list[str]):
        super().__init__(message)
        self.log_tail = log_tail


@dataclass(frozen=True)
class Session:
    pid: int
    port: int
    host: str
    url: str
    command: list[str]
    cwd: str
    started_at: datetime
    log_path: Path
    state_path: Path
    process_start: str | None  # kernel start time of `pid`: tells our process from a later one with the same pid

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(started_at=self.started_at.isoformat(), log_path=str(self.log_path),
                    state_path=str(self.state_path))
        return data

    @classmethod
    def from_json(cls, data: dict, state_path: Path) -> "Session":
        return cls(
            pid=int(data["pid"]),
            port=int(data["port"]),
            host=str(data["host"]),
            url=str(data["url"]),
            command=[str(part) for part in data["command"]],
            cwd=str(data["cwd"]),
            started_at=datetime.fromisoformat(data["started_at"]),
            log_path=Path(data["log_path"]),
            state_path=state_path,
            process_start=data.get("process_start"),
        )

    def liveness(self) -> str:
        """"running" (our process is alive), "gone" (no such process) or "reused" (the pid is another process)."""
        token = _process_start_token(self.pid)
        if token is None:
            return "gone"
        if self.process_start is not None and token != self.process_start:
            return "reused"
        return "running"

    def uptime(self) -> float:
        return (datetime.now(timezone.utc) - self.started_at).total_seconds()


# --- state files -----------------------------------------------------------------------------------------------


def resolve_state_dir(state_dir: str | Path | None = None) -> Path:
    """--state-dir, else $COMFY_PIPELINE_STATE_DIR, else `.comfy_pipeline/` in the current directory."""
    chosen = state_dir or os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR
    return Path(chosen).expanduser().absolute()


def state_path(state_dir: Path, port: int) -> Path:
    return state_dir / f"session-{port}.json"


def recorded_session(state_dir: str | Path | None = None, port: int = DEFAULT_PORT) -> Session | None:
    """The session recorded for `port`, alive or not; None when nothing is recorded."""
    path = state_path(resolve_state_dir(state_dir), port)
    try:
        data = load_json_bounded(path.read_text(encoding="utf-8"), str(path))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return Session.from_json(data, path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StateFileError(
            f"session state file {path} is unreadable ({exc}); delete it if no ComfyUI from it is still running"
        ) from None


def recorded_sessions(state_dir: str | Path | None = None) -> list[Session]:
    """Every recorded session, alive or not, by port."""
    directory = resolve_state_dir(state_dir)
    ports = sorted(int(p.stem.removeprefix("session-")) for p in directory.glob("session-*.json")
                   if p.stem.removeprefix("session-").isdigit())
    return [s for port in ports if (s := recorded_session(directory, port)) is not None]


def forget(session: Session) -> None:
    session.state_path.unlink(missing_ok=True)


def current_session(state_dir: str | Path | None = None, port: int | None = None) -> Session | None:
    """The running session on `port` (any port when None: the most recently started one). Stale records
    (process gone or pid reused) are removed on the way."""
    candidates = recorded_sessions(state_dir) if port is None else [recorded_session(state_dir, port)]
    alive = []
    for session in candidates:
        if session is None:
            continue
        if session.liveness() == "running":
            alive.append(session)
        else:
            forget(session)
    return max(alive, key=lambda s: s.started_at, default=None)


def _write_atomically(path: Path, data: dict) -> None:
    """Readable by the owner only: the recorded command line may carry a credential (needed for restart)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as out:
        out.write(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


_SECRET_FLAG_WORDS = ("token", "password", "secret", "key")


def display_command(command: list[str]) -> str:
    """The command line for logs and messages, with the values of credential options masked
    (`--token X`, `--password=X`)."""
    shown: list[str] = []
    mask_next = False
    for part in command:
        flag, equals, _ = part.partition("=")
        is_secret_flag = part.startswith("-") and any(word in flag.lower() for word in _SECRET_FLAG_WORDS)
        if mask_next:
            shown.append(MASK)
        elif is_secret_flag and equals:
            shown.append(f"{flag}={MASK}")
        else:
            shown.append(part)
        mask_next = is_secret_flag and not equals
    return shlex.join(shown)


# --- processes -------------------------------------------------------------------------------------------------


def _require_posix() -> None:
    if os.name != "posix":
        raise SessionError(
            "`comfy-pipeline server` manages processes on Linux and macOS only; on this system start ComfyUI "
            "yourself and pass its URL with --comfyui-url"
        )


def _process_start_token(pid: int) -> str | None:
    """The kernel's start time of `pid`, or None when no live process has it (zombies count as dead)."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:  # our own child exited: reap it
        _children.pop(pid, None)
        return None
    if sys.platform.startswith("linux"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return None
        fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces and parentheses
        state, start_ticks = fields[0], fields[19]  # fields 3 and 22 of proc(5)
        return None if state in ("Z", "X") else start_ticks
    try:
        import psutil
    except ImportError:
        raise SessionError("checking the ComfyUI process needs psutil on this system: pip install psutil") from None
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return f"{process.create_time():.2f}"
    except psutil.NoSuchProcess:
        return None


def _connect_host(host: str) -> str:
    """Where a client reaches a server bound to `host` (a wildcard bind is reached over loopback)."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def make_url(host: str, port: int) -> str:
    target = _connect_host(host)
    return f"http://[{target}]:{port}" if ":" in target else f"http://{target}:{port}"


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port. SO_REUSEADDR so that a port a stopped server left in
    TIME_WAIT counts as free (a listener still makes the bind fail)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise SessionError(f"cannot resolve host {host!r} ({exc}); pass an address such as 127.0.0.1") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            return True
    return False


# The server runs on this machine: never route its requests through an HTTP proxy from the environment.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_json(url: str, timeout: float) -> object:
    with _direct.open(url, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


def _answers(url: str, timeout: float) -> bool:
    try:
        return isinstance(get_json(f"{url}/system_stats", timeout), dict)
    except (OSError, ValueError):  # refused, timeout, HTTP error, not JSON yet
        return False


def read_log_tail(log_path: Path, offset: int = 0, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        with log_path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the server's process group (it is the group leader: started in a new session), so that worker
    processes it spawned go too; fall back to the process alone if it left its group."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_until_gone(session: Session, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if session.liveness() != "running":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _terminate(session: Session, grace: float) -> None:
    _signal_group(session.pid, signal.SIGTERM)
    if not _wait_until_gone(session, grace):
        _signal_group(session.pid, signal.SIGKILL)
        _wait_until_gone(session, 5.0)


def start_session(
    command: list[str],
    *,
    port: int,
    host: str = DEFAULT_HOST,
    cwd: str | Path | None = None,
    state_dir: str | Path | None = None,
    wait_timeout: float = 120.0,
) -> Session:
    """Start `command` detached from the terminal, wait until it answers GET /system_stats, record it.
    Raises SessionConflict when the port is taken, SessionStartError (with the log tail) when it does not come up."""
    _require_posix()
    if not command:
        raise SessionError("no server command given")
    directory = resolve_state_dir(state_dir)
    existing = recorded_session(directory, port)
    if existing is not None:
        if existing.liveness() == "running":
            raise SessionConflict(
                f"a ComfyUI session is already running on port {port} (pid {existing.pid}, {existing.url}); "
                f"use it, or stop it first: comfy-pipeline server stop --port {port}"
            )
        forget(existing)
    if port_in_use(host, port):
        raise SessionConflict(
            f"port {port} on {host} is already in use by another program; pick another --port or stop that program"
        )
    workdir = Path(cwd or Path.cwd()).absolute()
    if not workdir.is_dir():
        raise SessionError(f"working directory {workdir} does not exist")

    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / f"comfyui-{port}.log"
    started_at = datetime.now(timezone.utc)
    # Append, so the log of an earlier session is kept; the tail shown on failure starts at this run's header.
    with log_path.open("ab") as log:
        log_offset = log.tell()
        log.write(f"=== {started_at.isoformat()} starting: {display_command(command)}\n".encode())
        log.flush()
        try:
            process = subprocess.Popen(
                command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # own session and process group: survives the terminal, stops as a group
            )
        except OSError as exc:
            raise SessionError(f"cannot start {command[0]!r} ({exc.strerror or exc}); check the command") from None
    _children[process.pid] = process
    session = Session(
        pid=process.pid, port=port, host=host, url=make_url(host, port), command=list(command), cwd=str(workdir),
        started_at=started_at, log_path=log_path, state_path=state_path(directory, port),
        process_start=_process_start_token(process.pid),
    )

    deadline = time.monotonic() + wait_timeout
    while True:
        if process.poll() is not None:
            problem = f"the server exited with code {process.returncode} before answering {session.url}/system_stats"
            break
        if _answers(session.url, timeout=max(0.1, min(2.0, deadline - time.monotonic()))):
            _write_atomically(session.state_path, session.to_json())
            return session
        if time.monotonic() >= deadline:
            problem = f"the server did not answer {session.url}/system_stats within {wait_timeout:g} s"
            break
        time.sleep(POLL_INTERVAL)

    _terminate(session, grace=2.0)
    _children.pop(process.pid, None)
    if process.poll() is None:
        process.wait(timeout=5)
    raise SessionStartError(f"{problem}; see its log: {log_path}", read_log_tail(log_path, log_offset))


def stop_session(session: Session, grace: float = 10.0) -> None:
    """Stop the recorded process (SIGTERM to its group, SIGKILL after `grace` s) and remove its state file.
    A process that is not ours any more (pid reused) is left alone."""
    _require_posix()
    if session.liveness() == "running":
        _terminate(session, grace)
        if session.liveness() == "running":
            raise SessionError(f"process {session.pid} survived SIGKILL; check it with `ps -p {session.pid}`")
    forget(session)


def server_info(session: Session, timeout: float = 3.0) -> dict:
    """What the running server says about itself: version, free VRAM, queue length. Raises OSError/ValueError
    when it does not answer, or not the way ComfyUI does."""
    stats = get_json(f"{session.url}/system_stats", timeout)
    queue = get_json(f"{session.url}/queue", timeout)
    try:
        device = (stats.get("devices") or [{}])[0]
        return {
            "version": stats["system"].get("comfyui_version"),
            "vram_free": device.get("vram_free"),
            "device": device.get("name"),
            "queue_running": len(queue["queue_running"]),
            "queue_pending": len(queue["queue_pending"]),
        }
    except (AttributeError, KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"unexpected /system_stats or /queue answer ({exc!r})") from None
