"""`comfy-pipeline validate-workflow NAME_OR_PATH [--comfyui-url URL] [--json]`

NAME_OR_PATH is a workflow's name in the workflows folder(s) (workflows/, or the folders $COMFY_PIPELINE_WORKFLOWS_DIR
lists, separated by ':'), or the path of a workflow file of yours anywhere, its .params.json beside it.

Checks a workflow against a ComfyUI server's /object_info (the first server comfy_pipeline/settings.py chooses:
--comfyui-url, COMFYUI_URLS, COMFYUI_URL, a running `comfy-pipeline server` session; credentials from
$COMFYUI_TOKEN or $COMFYUI_USERNAME / $COMFYUI_PASSWORD), or offline against the bundled schema (no server
configured, or `simulator`). Exit 0: it would run; 1: it would not; 2: the workflow cannot be loaded or the
server not reached.
"""

import argparse
import json
import sys

from comfy_pipeline import settings
from comfy_pipeline.comfyui.errors import ComfyUIError
from comfy_pipeline.comfyui.schema import load_bundled_object_info
from comfy_pipeline.workflows.preflight import preflight, preflight_on_server
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
                        help="server to check against (default: the first of $COMFYUI_URLS, else $COMFYUI_URL, else "
                        "a running session; without one: the bundled schema)")
    parser.add_argument("--offline", action="store_true",
                        help="check against the bundled schema even if a server is configured")
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

    try:
        choice = None if args.offline else settings.choose_servers(flag=args.comfyui_url)
    except settings.SettingError as exc:
        return _fail(args, str(exc))
    if choice is None or choice.simulator:
        report = preflight(workflow.graph(), load_bundled_object_info(), workflow=workflow.name, source=OFFLINE_SOURCE)
    else:
        try:
            with settings.make_client(choice.urls[0], connect_timeout=5.0, read_timeout=30.0) as client:
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
