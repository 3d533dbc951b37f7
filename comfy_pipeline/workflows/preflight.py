"""Pre-flight: would a ComfyUI server accept this API-format graph? Answered in a second, before queueing.

It runs the server-faithful validator (`comfyui.validation.validate_prompt`) against the server's
`/object_info` (or the bundled schema, offline) and turns its answer into a list of problems, each with a hint
saying what to install, download or change. Unlike the server, which stops at the first unknown node class,
it lists every node class that is missing.
"""

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from comfy_pipeline.comfyui.rejections import MODEL_EXTENSIONS, model_folder, node_errors_to_list
from comfy_pipeline.comfyui.schema import load_bundled_object_info
from comfy_pipeline.comfyui.validation import validate_prompt
from comfy_pipeline.workflows.compat import adapt_to_server, declared_inputs

KINDS = ("missing_node", "missing_model", "invalid_value", "broken_link", "missing_input", "version_mismatch", "other")
TARGET_VERSION = "0.33.0"  # the ComfyUI whose /object_info is bundled: what the shipped workflows are made for

# Class-name patterns of well-known custom node packs: (test, pack, repository).
CUSTOM_NODE_PACKS: list[tuple[Callable[[str], bool], str, str]] = [
    (lambda c: c.startswith("VHS_"), "ComfyUI-VideoHelperSuite", "https://github.com/Kosinkadink/ComfyUI-VideoHelperSuite"),
    (lambda c: c.startswith("LTXV") or c.startswith("LTX"), "ComfyUI-LTXVideo", "https://github.com/Lightricks/ComfyUI-LTXVideo"),
    (lambda c: "GGUF" in c, "ComfyUI-GGUF", "https://github.com/city96/ComfyUI-GGUF"),
    (lambda c: c.startswith("WanVideo"), "ComfyUI-WanVideoWrapper", "https://github.com/kijai/ComfyUI-WanVideoWrapper"),
    (lambda c: c.startswith("ADE_"), "ComfyUI-AnimateDiff-Evolved", "https://github.com/Kosinkadink/ComfyUI-AnimateDiff-Evolved"),
    (lambda c: c.startswith("ACN_"), "ComfyUI-Advanced-ControlNet", "https://github.com/Kosinkadink/ComfyUI-Advanced-ControlNet"),
    (lambda c: c.startswith("IPAdapter"), "ComfyUI_IPAdapter_plus", "https://github.com/cubiq/ComfyUI_IPAdapter_plus"),
    (lambda c: c.endswith("|pysssss"), "ComfyUI-Custom-Scripts", "https://github.com/pythongosssss/ComfyUI-Custom-Scripts"),
    (lambda c: "rgthree" in c, "rgthree-comfy", "https://github.com/rgthree/rgthree-comfy"),
    (lambda c: c.startswith("easy "), "ComfyUI-Easy-Use", "https://github.com/yolain/ComfyUI-Easy-Use"),
    (lambda c: c.endswith("(segment anything)"), "comfyui_segment_anything", "https://github.com/storyicon/comfyui_segment_anything"),
    (lambda c: c.startswith("Florence2"), "ComfyUI-Florence2", "https://github.com/kijai/ComfyUI-Florence2"),
]

# Where the official model files of our two workflows come from (the templates' own model links).
OFFICIAL_MODEL_URLS = {
    "z_image_turbo_bf16.safetensors": "https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files/diffusion_models/z_image_turbo_bf16.safetensors",
    "qwen_3_4b.safetensors": "https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files/text_encoders/qwen_3_4b.safetensors",
    "ae.safetensors": "https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files/vae/ae.safetensors",
    "ltx-2-19b-dev-fp8.safetensors": "https://huggingface.co/Lightricks/LTX-2/resolve/main/ltx-2-19b-dev-fp8.safetensors",
    "gemma_3_12B_it_fp4_mixed.safetensors": "https://huggingface.co/Comfy-Org/ltx-2/resolve/main/split_files/text_encoders/gemma_3_12B_it_fp4_mixed.safetensors",
    "ltx-2-19b-distilled-lora-384.safetensors": "https://huggingface.co/Lightricks/LTX-2/resolve/main/ltx-2-19b-distilled-lora-384.safetensors",
    "ltx-2-spatial-upscaler-x2-1.0.safetensors": "https://huggingface.co/Lightricks/LTX-2/resolve/main/ltx-2-spatial-upscaler-x2-1.0.safetensors",
}


@dataclass(frozen=True)
class Problem:
    kind: str  # one of KINDS
    node_id: str | None
    class_type: str | None
    input_name: str | None
    message: str
    hint: str = ""

    def format(self) -> str:
        where = f"node {self.node_id}" if self.node_id else "workflow"
        if self.class_type:
            where += f" ({self.class_type})"
        if self.input_name:
            where += f" input '{self.input_name}'"
        text = f"[{self.kind}] {where}: {self.message}"
        return text + (f"\n      fix: {self.hint}" if self.hint else "")


@dataclass
class PreflightReport:
    workflow: str | None
    source: str  # what the graph was checked against: a server URL or "bundled schema"
    problems: list[Problem] = field(default_factory=list)
    incomplete: bool = False  # the checks stopped at unknown node classes or dangling links

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"workflow": self.workflow, "source": self.source, "ok": self.ok, "incomplete": self.incomplete,
                "problems": [asdict(p) for p in self.problems]}

    def format(self) -> str:
        name = repr(self.workflow) if self.workflow else "The workflow"
        if self.ok:
            return f"{name}: OK, it would run (checked against {self.source})."
        lines = [f"{name}: it would NOT run ({len(self.problems)} problem(s), checked against {self.source}):"]
        lines += [f"  - {p.format()}" for p in self.problems]
        if self.incomplete:
            lines.append("  Inputs and models are checked once every node type is installed and every link is sound.")
        return "\n".join(lines)


@functools.cache
def _core_classes() -> frozenset[str]:
    return frozenset(load_bundled_object_info())


def _missing_node_hint(class_type: str) -> str:
    if class_type in _core_classes():
        return "It is a core ComfyUI node: update ComfyUI (these workflows are made for ComfyUI 0.33.0 or newer)."
    for matches, pack, url in CUSTOM_NODE_PACKS:
        if matches(class_type):
            return f"Install the custom node pack {pack} ({url}) on the server and restart ComfyUI."
    return ("Install the custom node pack that provides it (ComfyUI-Manager: 'Install Missing Custom Nodes') "
            "and restart ComfyUI.")


def _combo_options(input_config: Any) -> list | None:
    if isinstance(input_config, list) and input_config:
        if isinstance(input_config[0], list):
            return input_config[0]
        options = input_config[1] if len(input_config) > 1 and isinstance(input_config[1], dict) else {}
        if isinstance(options.get("options"), list):
            return options["options"]
    return None


def _model_hint(name: Any, folder: str | None, available: list | None) -> str:
    place = f"ComfyUI/models/{folder}/" if folder else "the right ComfyUI/models/ folder"
    hint = f"Put {name} into {place} on the server"
    if name in OFFICIAL_MODEL_URLS:
        hint += f" (download: {OFFICIAL_MODEL_URLS[name]})"
    if available:
        shown = ", ".join(map(str, available[:10]))
        if len(available) > 10:
            shown += f", ... ({len(available)} in all)"
        return hint + f", or use a file the server has there: {shown}."
    return hint + "; the server has no usable file there yet."


def _problem(node_id: str, class_type: str, error: dict, message: str, input_name: str | None) -> Problem:
    """One server validation error as a Problem with a hint."""
    kind = error.get("type", "")
    info = error.get("extra_info") or {}
    received = info.get("received_value")
    if kind == "value_not_in_list":
        folder = model_folder(class_type, input_name)
        if folder or (isinstance(received, str) and received.lower().endswith(MODEL_EXTENSIONS)):
            hint = _model_hint(received, folder, _combo_options(info.get("input_config")))
            return Problem("missing_model", node_id, class_type, input_name, message, hint)
        return Problem("invalid_value", node_id, class_type, input_name, message, "Pick one of the listed values.")
    if kind in ("value_bigger_than_max", "value_smaller_than_min", "invalid_input_type"):
        return Problem("invalid_value", node_id, class_type, input_name, message,
                       "Change the value (or the workflow parameter that sets it).")
    if kind == "custom_validation_failed":
        hint = "Upload the image to the server first (the pipeline does this)." if class_type == "LoadImage" else ""
        return Problem("invalid_value", node_id, class_type, input_name, message, hint)
    if kind == "required_input_missing":
        return Problem("missing_input", node_id, class_type, input_name, message,
                       "Give the input a value or a link; re-export the workflow with Export (API).")
    if kind == "return_type_mismatch" or (kind.startswith("exception_during")
                                          and info.get("exception_type") in ("KeyError", "IndexError")):
        return Problem("broken_link", node_id, class_type, input_name, message,
                       "Fix the link in ComfyUI and re-export the workflow with Export (API).")
    return Problem("other", node_id, class_type, input_name, message)


def _structural_problems(graph: dict, object_info: dict) -> list[Problem]:
    """Unknown node classes and dangling links, all of them (the server reports only the first)."""
    problems = []
    for node_id, node in graph.items():
        class_type = node.get("class_type") if isinstance(node, dict) else None
        if not isinstance(class_type, str):
            problems.append(Problem("other", str(node_id), None, None, "the node has no class_type",
                                    "Export the workflow from ComfyUI with Export (API)."))
        elif class_type not in object_info:
            problems.append(Problem("missing_node", str(node_id), class_type, None,
                                    f"node type {class_type} is not installed", _missing_node_hint(class_type)))
    for node_id, node in graph.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        for input_name, value in inputs.items():
            if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)):
                continue
            linked, index = value
            message = None
            if not isinstance(linked, str):
                message = f"links to node {linked!r}, but node ids in links must be strings"
            elif linked not in graph:
                message = f"links to node {linked}, which is not in the workflow"
            else:
                outputs = object_info.get(graph[linked].get("class_type"), {}).get("output")
                if outputs is not None and not 0 <= index < len(outputs):
                    message = (f"links to output {index} of node {linked} ({graph[linked]['class_type']}), "
                               f"which has {len(outputs)} output(s)")
            if message:
                problems.append(Problem("broken_link", str(node_id), node.get("class_type"), input_name, message,
                                        "Fix the link in ComfyUI and re-export the workflow with Export (API)."))
    return problems


def preflight(
    graph: dict,
    object_info: dict,
    *,
    workflow: str | None = None,
    source: str = "bundled schema",
    image_exists: Callable[[str], bool] = lambda name: True,
    server_version: str | None = None,
) -> PreflightReport:
    """Check an API-format graph against an object_info the way the server would.

    `image_exists` answers LoadImage's file check; by default every image counts as present, because the
    pipeline uploads its input images before it submits.
    """
    report = PreflightReport(workflow, source)
    if not isinstance(graph, dict) or not graph:
        report.problems.append(Problem("other", None, None, None, "the workflow is not a non-empty API-format graph",
                                       "Export it from ComfyUI with Export (API)."))
        return report
    mismatch = functools.partial(_as_version_mismatch, object_info=object_info, server_version=server_version)
    report.problems += [mismatch(p) for p in _structural_problems(graph, object_info)]
    if report.problems:  # the server would stop at the first of these; the rest is checked once they are fixed
        report.incomplete = True
        return report

    graph, _ = adapt_to_server(graph, object_info)  # what the pipeline submits: version-dependent inputs renamed
    outcome = validate_prompt(graph, object_info, image_exists=image_exists)
    for node_id, entry in outcome.node_errors.items():
        class_type = str(entry.get("class_type") or graph.get(node_id, {}).get("class_type") or "?")
        translated = node_errors_to_list({node_id: entry})
        for error, node_error in zip(entry.get("errors") or [], translated):
            report.problems.append(_problem(str(node_id), class_type, error, node_error.message, node_error.input_name))
    if outcome.error is not None and not report.problems:
        error = outcome.error
        text = ": ".join(str(p) for p in (error.get("message"), error.get("details")) if p) or str(error.get("type"))
        hint = "Add an output node (SaveImage, SaveVideo, ...)." if error.get("type") == "prompt_no_outputs" else ""
        report.problems.append(Problem("other", None, None, None, text, hint))
    report.problems = [mismatch(problem) for problem in report.problems]
    return report


def _input_shapes(object_info: dict, class_type: str) -> dict[str, str]:
    """Input name -> its type ("COMBO" for a list of options, "COMFY_DYNAMICCOMBO_V3", "INT", ...)."""
    shapes = {}
    for name, declaration in declared_inputs(object_info, class_type).items():
        kind = declaration[0] if isinstance(declaration, (list, tuple)) and declaration else None
        shapes[name] = kind if isinstance(kind, str) else "COMBO"
    return shapes


def _shape(kind: str | None) -> str:
    return {None: "absent", "COMFY_DYNAMICCOMBO_V3": "a dynamic combo", "COMBO": "a combo"}.get(kind, kind or "absent")


def _as_version_mismatch(problem: Problem, object_info: dict, server_version: str | None) -> Problem:
    """A problem in a node that the server declares differently from the ComfyUI the workflow was made for is a
    version mismatch, and says so: re-exporting the same workflow would not help."""
    if problem.kind in ("missing_model", "missing_node", "broken_link", "other") or not problem.class_type:
        return problem  # a missing core node already says "update ComfyUI" (_missing_node_hint)
    reference = load_bundled_object_info()
    if problem.class_type not in reference:
        return problem  # a custom node: its pack, not ComfyUI's version, is the cause
    server_version = f"ComfyUI {server_version}" if server_version else "this server's ComfyUI"
    theirs, ours = _input_shapes(object_info, problem.class_type), _input_shapes(reference, problem.class_type)
    if theirs == ours:
        return problem
    differ = sorted(n for n in set(theirs) | set(ours) if theirs.get(n) != ours.get(n))
    shown = "; ".join(f"{n}: {_shape(theirs.get(n))} on the server, {_shape(ours.get(n))} in {TARGET_VERSION}"
                      for n in differ)
    return Problem("version_mismatch", problem.node_id, problem.class_type, problem.input_name,
                   f"{problem.message} -- the server's {problem.class_type} differs from ComfyUI {TARGET_VERSION}'s, "
                   f"which the workflow was made for ({shown})",
                   f"A ComfyUI version mismatch: update ComfyUI on the server to {TARGET_VERSION} or later, or "
                   "use a workflow exported from the server's own version.")


@dataclass(frozen=True)
class ServerPreflight:
    """Every graph of a piece of work pre-flighted against one server: its /object_info and version (fetched once,
    for the submits that follow) and one report per graph, in the order given."""

    server: str  # the server's URL, without credentials
    object_info: dict
    server_version: str | None
    reports: tuple[PreflightReport, ...]

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.reports)

    @property
    def failing(self) -> list[tuple[int, PreflightReport]]:
        """(position in the given graphs, report) of each graph the server would refuse."""
        return [(i, report) for i, report in enumerate(self.reports) if not report.ok]


def preflight_on_server(client: Any, graphs: list[tuple[str, dict]]) -> ServerPreflight:
    """Pre-flight each (workflow name, API-format graph) against `client`'s server, before any GPU time is spent:
    the one loop the batch runner, `check` and `validate-workflow` share. `client` is a ComfyUIClient (its
    /object_info is fetched once per client); its errors (unreachable, a malformed answer) go to the caller."""
    object_info = client.object_info()
    version = client.version()
    reports = tuple(preflight(graph, object_info, workflow=name, source=client.url, server_version=version)
                    for name, graph in graphs)
    return ServerPreflight(client.url, object_info, version, reports)
