"""`comfy-pipeline validate-workflow NAME_OR_PATH [--comfyui-url URL] [--json]`

Checks a workflow against a ComfyUI server's /object_info (URL from --comfyui-url or $COMFYUI_URL;
credentials from $COMFYUI_TOKEN or $COMFYUI_USERNAME / $COMFYUI_PASSWORD), or offline against the bundled
schema. Exit 0: it would run; 1: it would not; 2: the workflow cannot be loaded or the server not reached.
"""

import argparse
import json
import os
import sys

from comfy_pipeline.comfyui.client import ComfyUIClient
from comfy_pipeline.comfyui.errors import ComfyUIError
from comfy_pipeline.comfyui.schema import load_bundled_object_info
from comfy_pipeline.workflows.preflight import preflight, preflight_on_server
from comfy_pipeline.workflows.workflow import WorkflowError, load_workflow

OFFLINE_SOURCE = "the bundled schema (ComfyUI 0.33.0 with the official models installed)"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate-workflow",
        help="check that a workflow would run on a ComfyUI server (node types, model files, values, links)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("workflow", metavar="NAME_OR_PATH",
                        help="a workflow in the workflows folder: its name (z_image_turbo_generation) or path")
    parser.add_argument("--comfyui-url", default=None,
                        help="server to check against (default: $COMFYUI_URL; without one: the bundled schema)")
    parser.add_argument("--offline", action="store_true",
                        help="check against the bundled schema even if $COMFYUI_URL is set")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def _fail(args: argparse.Namespace, message: str) -> int:
    if args.json:
        print(json.dumps({"ok": False, "error": message}))
    print(f"validate-workflow: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    try:
        workflow = load_workflow(args.workflow)
    except (WorkflowError, OSError) as exc:
        return _fail(args, str(exc))

    url = None if args.offline else (args.comfyui_url or os.environ.get("COMFYUI_URL") or None)
    if url is None:
        report = preflight(workflow.graph(), load_bundled_object_info(), workflow=workflow.name, source=OFFLINE_SOURCE)
    else:
        try:
            with ComfyUIClient(
                url,
                token=os.environ.get("COMFYUI_TOKEN") or None,
                username=os.environ.get("COMFYUI_USERNAME") or None,
                password=os.environ.get("COMFYUI_PASSWORD") or None,
                connect_timeout=5.0,
                read_timeout=30.0,
            ) as client:
                if not _has_node_classes(client.object_info()):
                    return _fail(args, f"{client.url} answered /object_info with no node classes; "
                                 "is this a ComfyUI server?")
                # LoadImage's file is not checked: the pipeline uploads the input image right before it submits.
                report = preflight_on_server(client, [(workflow.name, workflow.graph())]).reports[0]
        except (ComfyUIError, ValueError) as exc:
            return _fail(args, str(exc))
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0 if report.ok else 1


def _has_node_classes(object_info: object) -> bool:
    return isinstance(object_info, dict) and bool(object_info)
