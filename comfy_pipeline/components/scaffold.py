"""The defs.yaml `dg scaffold defs ... --workflow WORKFLOW` writes: it loads as written."""

import json
import textwrap

from comfy_pipeline.workflows.workflow import (
    WORKFLOW_KINDS,
    WorkflowError,
    load_user_workflow,
    workflows_dirs,
)

# The parameters each kind's prompts feed (batch.plan.prompt_values) and the uploaded picture: not fixed by default.
FED = {"text-to-image": {"prompt", "seed", "width", "height"},
       "image-to-image": {"prompt", "seed", "negative_prompt"},
       "image-to-video": {"prompt", "seed", "frames", "fps", "negative_prompt"}}
INPUTS = {"text-to-image": "prompt", "image-to-image": "generated_image", "image-to-video": "generated_image"}


def defs_yaml(type_name: str, name: str, workflow_name: str) -> str:
    """The defs.yaml of instance `name` of `workflow_name` (a name in the workflows folders, or a file's path)."""
    workflow = load_user_workflow(workflow_name)
    if workflow.kind not in WORKFLOW_KINDS:
        raise WorkflowError(f"workflow {workflow.name!r} does not say what it does: add \"kind\": one of "
                            f"{', '.join(WORKFLOW_KINDS)} to its .params.json")
    in_folders = any(workflow.path.is_relative_to(folder.resolve()) for folder in workflows_dirs())
    reference = workflow.name if in_folders else str(workflow.path)
    fed = FED[workflow.kind] | {workflow.image_input}
    about = textwrap.wrap(f"{workflow.name} ({workflow.kind}): {workflow.description}", 110)
    lines = [
        *(f"# {line}" for line in about),
        f"type: {type_name}",
        "attributes:",
        f"  workflow: {reference if reference.isidentifier() else json.dumps(reference)}",
        f"  input: {INPUTS[workflow.kind]}  # what feeds it: {_input_text(workflow.kind)}",
        "  asset:",
        f"    key: {name}",
        "    group_name: comfy",
        f"    kinds: [comfyui, {workflow.makes}]",
        "    # automation_condition: \"{{ dg.AutomationCondition.eager() }}\"  # follow the input under the daemon",
        "  # Fixed values for every prompt (checked against the workflow's .params.json when the definitions load).",
        "  params:",
    ]
    fixed = [f"    {p}: {json.dumps(spec.default)}  # {_allowed(spec)}" for p, spec in workflow.params.items()
             if p not in fed and spec.default is not None]
    given = [p for p in workflow.params if p in fed and p != workflow.image_input]
    fed_lines = [f"    # set by each prompt: {', '.join(given)}"] if given else []
    lines += fixed + fed_lines
    if not fixed:
        lines[-1 - len(fed_lines)] = "  params: {}"
    lines += ["  # quality: {image_min_bytes: 1024, skip_checks: [detail]}  # this asset's check settings",
              "  # pool: my-gpu  # default: the server set's pool", "  # retry: {max_retries: 3, delay: 10}", ""]
    return "\n".join(lines)


def _input_text(kind: str) -> str:
    return "prompt specs" if kind == "text-to-image" else "the good images of an image asset"


def _allowed(spec) -> str:
    return (spec.description or spec.type).split(". ")[0][:100]

