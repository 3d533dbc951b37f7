"""`comfy-pipeline`: the command line. Each subcommand lives in its own module and registers itself here.

Exit codes, for every subcommand: 0 success, 1 the thing checked failed, 2 usage error or server unreachable.
"""

import argparse
import importlib
import sys

# subcommand name -> module with `register(subparsers)`; the module sets `func` on its parser.
SUBCOMMANDS = {
    "simulator": "comfy_pipeline.simulator.cli",
    "validate-workflow": "comfy_pipeline.cli.validate_workflow",
    "server": "comfy_pipeline.cli.server",
    "check": "comfy_pipeline.cli.check",
    "bench": "comfy_pipeline.cli.bench.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="comfy-pipeline",
        description="Run and check ComfyUI image-to-video work (Z-Image-Turbo -> LTX-2).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMANDS.values():
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
