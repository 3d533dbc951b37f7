"""`comfy-pipeline server start|status|stop|restart`: a persistent local ComfyUI session kept across test runs.

Exit codes: 0 success (status: running), 1 failed / not running / stale, 2 usage error or port taken.
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

from comfy_pipeline.comfyui import session as sessions
from comfy_pipeline.comfyui.session import Session, SessionConflict, SessionError, SessionStartError, StateFileError


def register(subparsers: argparse._SubParsersAction) -> None:
    server = subparsers.add_parser(
        "server", help="start, inspect and stop a persistent local ComfyUI session",
        description="Keep one local ComfyUI running across many test runs. State lives in --state-dir "
                    f"(env {sessions.STATE_DIR_ENV}, default ./{sessions.DEFAULT_STATE_DIR}/).",
    )
    actions = server.add_subparsers(dest="server_action", metavar="ACTION", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", help=f"where session state and logs live (env {sessions.STATE_DIR_ENV})")

    start = actions.add_parser(
        "start", parents=[common], help="start ComfyUI (or any ComfyUI-compatible server) and wait until it answers",
        usage="comfy-pipeline server start (--comfyui-dir DIR | --command CMD) [options] [-- extra ComfyUI args]",
    )
    what = start.add_mutually_exclusive_group(required=True)
    what.add_argument("--comfyui-dir", type=Path,
                      help="ComfyUI checkout: runs `PYTHON main.py --listen HOST --port PORT`")
    what.add_argument("--command", help="any server command line, e.g. 'comfy-pipeline simulator --port {port}' "
                                        "({port} and {host} are filled in; not run through a shell)")
    start.add_argument("--port", type=int, default=sessions.DEFAULT_PORT, help="default %(default)s")
    start.add_argument("--host", default=sessions.DEFAULT_HOST, help="address to bind, default %(default)s (loopback)")
    start.add_argument("--python", default=sys.executable, help="Python that runs ComfyUI (default: this one)")
    start.add_argument("--wait-timeout", type=float, default=120.0,
                       help="seconds to wait for /system_stats, default %(default)s")
    start.add_argument("extra", nargs="*", help="after `--`: extra arguments for ComfyUI's main.py")
    start.set_defaults(func=run_start)

    status = actions.add_parser("status", parents=[common],
                                help="is the session running; version, VRAM, queue, log, uptime")
    status.add_argument("--port", type=int, help="only this port (default: every recorded session)")
    status.add_argument("--json", action="store_true", help="print a JSON list of sessions")
    status.set_defaults(func=run_status)

    stop = actions.add_parser("stop", parents=[common], help="stop the recorded session: SIGTERM, then SIGKILL")
    stop.add_argument("--port", type=int, help="which session (needed only when several are recorded)")
    stop.add_argument("--grace", type=float, default=10.0,
                      help="seconds between SIGTERM and SIGKILL, default %(default)s")
    stop.set_defaults(func=run_stop)

    restart = actions.add_parser("restart", parents=[common], help="stop the recorded session and start it again")
    restart.add_argument("--port", type=int, help="which session (needed only when several are recorded)")
    restart.add_argument("--grace", type=float, default=10.0,
                         help="seconds between SIGTERM and SIGKILL, default %(default)s")
    restart.add_argument("--wait-timeout", type=float, default=120.0,
                         help="seconds to wait for /system_stats, default %(default)s")
    restart.set_defaults(func=run_restart)


class UsageError(SessionError):
    """The command line does not say which session is meant."""


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _start_command(args: argparse.Namespace) -> tuple[list[str], Path | None]:
    if args.command is not None:
        try:
            parts = shlex.split(args.command)
        except ValueError as exc:
            raise SessionError(f"cannot parse --command ({exc}); quote it the way a POSIX shell would") from None
        if args.extra:
            raise SessionError("extra arguments after `--` go with --comfyui-dir; put them in --command instead")
        fill = {"{port}": str(args.port), "{host}": args.host}
        for placeholder, value in fill.items():
            parts = [part.replace(placeholder, value) for part in parts]
        return parts, None
    comfyui_dir = args.comfyui_dir.expanduser().absolute()
    if not (comfyui_dir / "main.py").is_file():
        raise SessionError(f"{comfyui_dir} has no main.py; pass the ComfyUI checkout folder with --comfyui-dir")
    command = [args.python, "main.py", "--listen", args.host, "--port", str(args.port), *args.extra]
    return command, comfyui_dir


def _start(command: list[str], *, port: int, host: str, cwd: str | Path | None, state_dir: str | None,
           wait_timeout: float) -> int:
    if not sessions.is_loopback(host):
        print(f"warning: binding {host}: the server will be reachable from the network, without authentication",
              file=sys.stderr)
    url = sessions.make_url(host, port)
    print(f"starting: {sessions.display_command(command)}", file=sys.stderr)
    print(f"waiting up to {wait_timeout:g} s for {url}/system_stats ...", file=sys.stderr)
    try:
        session = sessions.start_session(command, port=port, host=host, cwd=cwd, state_dir=state_dir,
                                         wait_timeout=wait_timeout)
    except SessionConflict as exc:
        return _fail(str(exc), 2)
    except SessionStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.log_tail:
            print(f"last {len(exc.log_tail)} log lines:", file=sys.stderr)
            for line in exc.log_tail:
                print(f"  | {line}", file=sys.stderr)
        return 1
    except SessionError as exc:  # bad command, host or state file: something the user has to fix
        return _fail(str(exc), 2)
    print(f"ComfyUI session running at {session.url} (pid {session.pid}); log: {session.log_path}")
    print(f"stop it with: comfy-pipeline server stop --port {session.port}")
    return 0


def run_start(args: argparse.Namespace) -> int:
    try:
        command, cwd = _start_command(args)
    except SessionError as exc:
        return _fail(str(exc), 2)
    if not command:
        return _fail("--command is empty; give the server command line to run", 2)
    return _start(command, port=args.port, host=args.host, cwd=cwd, state_dir=args.state_dir,
                  wait_timeout=args.wait_timeout)


def _pick(args: argparse.Namespace) -> Session:
    """The one recorded session this stop/restart is about (alive or not)."""
    if args.port is not None:
        session = sessions.recorded_session(args.state_dir, args.port)
        if session is None:
            state_dir = sessions.resolve_state_dir(args.state_dir)
            raise SessionError(f"no session recorded on port {args.port} in {state_dir}")
        return session
    recorded = sessions.recorded_sessions(args.state_dir)
    if not recorded:
        raise SessionError(f"no session recorded in {sessions.resolve_state_dir(args.state_dir)}; nothing to do")
    if len(recorded) > 1:
        ports = ", ".join(str(s.port) for s in recorded)
        raise UsageError(f"several sessions are recorded (ports {ports}); pass --port")
    return recorded[0]


def _stale_message(session: Session, liveness: str) -> str:
    if liveness == "reused":
        why = f"pid {session.pid} now belongs to another process (left alone)"
    else:
        why = f"process {session.pid} is gone"
    return f"stale session on port {session.port}: {why}; cleaned up"


def _describe(session: Session) -> dict:
    liveness = session.liveness()
    log_size = session.log_path.stat().st_size if session.log_path.exists() else None
    report = {
        "port": session.port, "url": session.url, "pid": session.pid, "status": liveness,
        "started_at": session.started_at.isoformat(), "uptime_seconds": round(session.uptime(), 1),
        "command": sessions.display_command(session.command), "log_path": str(session.log_path), "log_bytes": log_size,
    }
    if liveness != "running":
        sessions.forget(session)
        report["status"] = "stale"
        report["message"] = _stale_message(session, liveness)
        return report
    try:
        report.update(sessions.server_info(session))
    except (OSError, ValueError) as exc:
        report["status"] = "not answering"
        report["message"] = (f"process {session.pid} is alive but {session.url} does not answer ({exc}); "
                             f"see {session.log_path} or run `comfy-pipeline server restart --port {session.port}`")
    return report


def _gigabytes(value: object) -> str:
    return f"{value / 1024 ** 3:.1f} GB" if isinstance(value, (int, float)) else "unknown"


def _print_human(report: dict) -> None:
    if report["status"] == "stale":
        print(report["message"])
        return
    print(f"ComfyUI session on port {report['port']}: {report['status']}")
    print(f"  URL: {report['url']}  (pid {report['pid']}, up {report['uptime_seconds']:.0f} s)")
    if report["status"] == "running":
        print(f"  Version: {report.get('version') or 'unknown'}")
        print(f"  VRAM free: {_gigabytes(report.get('vram_free'))}")
        print(f"  Queue: {report['queue_running']} running, {report['queue_pending']} pending")
    else:
        print(f"  {report['message']}")
    size = report["log_bytes"]
    print(f"  Log: {report['log_path']} ({'missing' if size is None else f'{size} bytes'})")


def run_status(args: argparse.Namespace) -> int:
    try:
        if args.port is not None:
            recorded = [s for s in [sessions.recorded_session(args.state_dir, args.port)] if s is not None]
        else:
            recorded = sessions.recorded_sessions(args.state_dir)
    except SessionError as exc:
        return _fail(str(exc), 2 if isinstance(exc, StateFileError) else 1)
    reports = [_describe(s) for s in recorded]
    if args.json:
        print(json.dumps(reports, indent=2))
    elif not reports:
        where = f"on port {args.port} " if args.port is not None else ""
        print(f"no ComfyUI session recorded {where}in {sessions.resolve_state_dir(args.state_dir)} (not running)")
    for report in reports if not args.json else []:
        _print_human(report)
    return 0 if reports and all(r["status"] == "running" for r in reports) else 1


def run_stop(args: argparse.Namespace) -> int:
    try:
        session = _pick(args)
        liveness = session.liveness()
        if liveness != "running":
            sessions.forget(session)
            print(_stale_message(session, liveness))
            return 1
        sessions.stop_session(session, grace=args.grace)
    except (UsageError, StateFileError) as exc:
        return _fail(str(exc), 2)
    except SessionError as exc:
        return _fail(str(exc), 1)
    print(f"stopped the ComfyUI session on port {session.port} (pid {session.pid})")
    return 0


def run_restart(args: argparse.Namespace) -> int:
    try:
        session = _pick(args)
        liveness = session.liveness()
        if liveness == "running":
            sessions.stop_session(session, grace=args.grace)
            print(f"stopped the ComfyUI session on port {session.port} (pid {session.pid})", file=sys.stderr)
        else:
            sessions.forget(session)
            print(_stale_message(session, liveness), file=sys.stderr)
    except (UsageError, StateFileError) as exc:
        return _fail(str(exc), 2)
    except SessionError as exc:
        return _fail(str(exc), 1)
    return _start(session.command, port=session.port, host=session.host, cwd=session.cwd,
                  state_dir=args.state_dir, wait_timeout=args.wait_timeout)
