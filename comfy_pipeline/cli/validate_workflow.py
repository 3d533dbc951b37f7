"""`comfy-pipeline validate-workflow NAME_OR_PATH [--comfyui-url URL] [--json]`

NAME_OR_PATH is a workflow's name in the workflows folder(s) (workflows/, or the folders $COMFY_PIPELINE_WORKFLOWS_DIR
lists, separated by ':'), or the path of a workflow file of yours anywhere, its .params.json beside it.

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
from comfy_pipeline.workflows.preflight import preflight
from comfy_pipeline.workflows.workflow import WorkflowError, load_user_workflow

OFFLINE_SOURCE = "the bundled schema (ComfyUI 0.33.0 with the official models installed)"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate-workflow",
        help="check that a workflow would run on a ComfyUI server (node types, model files, values, links)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("workflow", metavar="NAME_OR_PATH",
                        help="a workflow's name in the workflows folder(s) (z_image_turbo_generation; workflows/, "
                        "or $COMFY_PIPELINE_WORKFLOWS_DIR), or the path of any workflow file of yours, with its "
                        ".params.json beside it")
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
        workflow = load_user_workflow(args.workflow)
    except (WorkflowError, OSError) as exc:
        return _fail(args, str(exc))

    url = None if args.offline else (args.comfyui_url or os.environ.get("COMFYUI_URL") or None)
    version = None
    if url is None:
        object_info, source = load_bundled_object_info(), OFFLINE_SOURCE
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
                object_info, source = client.object_info(), client.url
                version = client.version()
        except (ComfyUIError, ValueError) as exc:
            return _fail(args, str(exc))
        if not isinstance(object_info, dict) or not object_info:
            return _fail(args, f"{source} answered /object_info with no node classes; is this a ComfyUI server?")

    # LoadImage's file is not checked: the pipeline uploads the input image right before it submits.
    report = preflight(workflow.graph(), object_info, workflow=workflow.name, source=source, server_version=version)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0 if report.ok else 1
