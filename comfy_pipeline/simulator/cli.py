"""`comfy-pipeline simulator`: serve the offline ComfyUI simulator until SIGINT/SIGTERM."""

import argparse
import math
import os
import signal
import sys
import threading

from comfy_pipeline.simulator.faults import KINDS, parse_fault_spec


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulator",
        help="run an offline ComfyUI simulator (real protocol, no GPU)",
        description="Serve a simulated ComfyUI 0.33.0: the real HTTP/WebSocket protocol, simulated GPU time, "
                    "real PNG/MP4 outputs. Binds to loopback unless --host says otherwise.",
    )
    configure(parser)
    parser.set_defaults(func=run)


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a port is a whole number from 0 to 65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a whole number from 0 to 65535, got {value}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, 0 or more, got {text}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=port, default=8188, help="port (default: 8188; 0 picks a free one)")
    parser.add_argument("--data-dir",
                        help="folder for input/, output/ and temp/ (default: a temporary folder, removed on exit)")
    parser.add_argument("--image-seconds", type=seconds, default=0.5,
                        help="simulated GPU seconds per text-to-image prompt")
    parser.add_argument("--video-seconds", type=seconds, default=2.0,
                        help="simulated GPU seconds per image-to-video prompt")
    parser.add_argument("--fault", action="append", default=[], metavar="KIND[:RATE]",
                        help=f"inject a fault, repeatable; KIND is one of {', '.join(KINDS)}")
    parser.add_argument("--token", default=os.environ.get("COMFY_SIMULATOR_TOKEN"),
                        help="require 'Authorization: Bearer TOKEN' (default: $COMFY_SIMULATOR_TOKEN)")
    parser.add_argument("--username", help="require HTTP basic auth with this user name")
    parser.add_argument("--password", default=os.environ.get("COMFY_SIMULATOR_PASSWORD"),
                        help="basic-auth password (default: $COMFY_SIMULATOR_PASSWORD)")


def run(args: argparse.Namespace) -> int:
    try:
        faults = [parse_fault_spec(spec) for spec in args.fault]
    except ValueError as error:
        print(f"comfy-pipeline simulator: {error}", file=sys.stderr)
        return 2
    if args.password is not None and args.username is None:
        print("comfy-pipeline simulator: --password needs --username", file=sys.stderr)
        return 2
    from comfy_pipeline.simulator.embedded import Simulator  # aiohttp only when serving

    simulator = Simulator(
        args.host, args.port, data_dir=args.data_dir, image_seconds=args.image_seconds,
        video_seconds=args.video_seconds, token=args.token, username=args.username, password=args.password,
    )
    try:
        simulator.start()
    except (OSError, OverflowError, RuntimeError) as error:
        simulator.stop()  # removes the temporary data folder it made
        reason = getattr(error, "strerror", None) or str(error)
        print(f"comfy-pipeline simulator: cannot listen on {args.host}:{args.port}: {reason}", file=sys.stderr)
        return 2
    for kind, rate in faults:
        simulator.set_fault(kind, rate=rate)

    stop = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stop.set())
    print(f"ComfyUI simulator listening on {simulator.url} (data in {simulator.data_dir})", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        simulator.stop()
    print("ComfyUI simulator stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfy_pipeline.simulator",
                                     description="Run the offline ComfyUI simulator.")
    configure(parser)
    return run(parser.parse_args(argv))
