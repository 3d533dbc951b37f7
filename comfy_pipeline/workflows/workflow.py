"""ComfyUI workflows: API-format graphs in `workflows/`, each with a declarative parameter map next to it.

`<name>.json` is the graph as ComfyUI's "Export (API)" writes it; `<name>.params.json` names every value that
may be injected (target node inputs, type, constraints, default), the output nodes and the filename-prefix
input. Adding a workflow means dropping both files into the folder: no code.

Everything a caller passes is checked here, against the map and against the node's bundled object_info
schema, before a single GPU second is spent; errors name the workflow, the parameter, the value and what
is allowed.

Where a workflow may come from: run config names one in the workflows folders (`load_workflow`; several with
$COMFY_PIPELINE_WORKFLOWS_DIR), because anyone who can launch a run writes run config; the command line may also
give the path of any workflow file of the user's own (`load_user_workflow`).
"""

import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from comfy_pipeline.comfyui.schema import MODEL_INPUTS, load_bundled_object_info
from comfy_pipeline.media.content import CONTENT_CHECKS

ENV_DIR = "COMFY_PIPELINE_WORKFLOWS_DIR"
MAP_SUFFIX = ".params.json"
MAX_FILE_BYTES = 5 * 1024 * 1024
DEFAULT_MAX_STRING = 10_000
PARAM_TYPES = ("int", "float", "string", "image")
OUTPUT_KINDS = ("image", "video")
# What a workflow is for (map key "kind") and what it makes. Image-to-* workflows take one parameter of type
# "image": the uploaded input picture. A map without a kind loads (for the command line), but cannot be an asset.
WORKFLOW_KINDS = {"text-to-image": "image", "image-to-image": "image", "image-to-video": "video"}
PARAM_KEYS = {"type", "targets", "default", "minimum", "maximum", "multiple_of", "rule", "min_length",
              "max_length", "required", "description"}
RULE = re.compile(r"(\d+)n\+(\d+)")  # "8n+1": value = 8*n + 1
# A filename prefix is a relative path of plain segments, so ComfyUI writes inside its output folder.
PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
MAX_PREFIX = 200


class WorkflowError(ValueError):
    """A workflow file, its parameter map or a value for it is not usable; the message says what to fix."""


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _nearest(value: int, step: int, offset: int, low: int | None, high: int | None) -> int:
    """The allowed value (step*n + offset, within low..high) nearest to `value`."""
    best = round((value - offset) / step) * step + offset
    while low is not None and best < low:
        best += step
    while high is not None and best > high:
        best -= step
    return best


@dataclass(frozen=True)
class ParamSpec:
    name: str
    targets: tuple[tuple[str, str], ...]
    type: str  # one of PARAM_TYPES; "image" is a file name in the server's input folder
    default: Any
    minimum: int | float | None = None
    maximum: int | float | None = None
    multiple_of: int | None = None
    rule: str | None = None  # "An+B"
    min_length: int | None = None
    max_length: int | None = None
    required: bool = False
    description: str = ""
    # A string parameter that fills a combo input (a fixed list of options in the node's schema): those options.
    choices: tuple[str, ...] | None = None

    def allowed(self) -> str:
        """What values are allowed, in words."""
        if self.choices is not None:
            return "one of " + ", ".join(map(repr, self.choices))
        if self.type in ("string", "image"):
            low = self.min_length or 0
            what = "a file name in the server's input folder" if self.type == "image" else "text"
            return f"{what} of {low} to {self.max_length} characters, without control characters other than \\n and \\t"
        parts = ["an integer" if self.type == "int" else "a number"]
        if self.minimum is not None and self.maximum is not None:
            parts.append(f"from {self.minimum} to {self.maximum}")
        elif self.minimum is not None:
            parts.append(f">= {self.minimum}")
        elif self.maximum is not None:
            parts.append(f"<= {self.maximum}")
        if self.multiple_of:
            parts.append(f"a multiple of {self.multiple_of}")
        if self.rule:
            parts.append(f"of the form {self.rule}")
        return ", ".join(parts)

    def check(self, value: Any, workflow: str | None = None) -> Any:
        """`value` coerced to the parameter's type; WorkflowError when it is not allowed."""
        checker = {"int": self._check_int, "float": self._check_float}.get(self.type, self._check_text)
        return checker(value, workflow)

    def _fail(self, workflow: str | None, value: Any, problem: str, fix: str = "") -> WorkflowError:
        shown = repr(value) if not isinstance(value, str) or len(value) <= 80 else repr(value[:77] + "...")
        where = f"workflow {workflow!r}: " if workflow else ""
        message = f"{where}parameter {self.name!r} = {shown} {problem}; allowed: {self.allowed()}."
        return WorkflowError(message + (f" {fix}" if fix else ""))

    def _check_int(self, value: Any, workflow: str | None) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(workflow, value, f"is not an integer ({type(value).__name__})")
        self._check_range(value, workflow)
        step, offset = self.multiple_of or 1, 0
        if self.rule:
            step, offset = (int(g) for g in RULE.fullmatch(self.rule).groups())
        if (value - offset) % step:
            near = _nearest(value, step, offset, self.minimum, self.maximum)
            raise self._fail(workflow, value, "does not fit the model's grid", f"The nearest allowed value is {near}.")
        return value

    def _check_float(self, value: Any, workflow: str | None) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._fail(workflow, value, f"is not a number ({type(value).__name__})")
        if not math.isfinite(value):
            raise self._fail(workflow, value, "is not a finite number")
        self._check_range(value, workflow)
        return value

    def _check_range(self, value: int | float, workflow: str | None) -> None:
        if self.minimum is not None and value < self.minimum:
            raise self._fail(workflow, value, f"is below the minimum {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise self._fail(workflow, value, f"is above the maximum {self.maximum}")

    def _check_text(self, value: Any, workflow: str | None) -> str:
        if not isinstance(value, str):
            raise self._fail(workflow, value, f"is not text ({type(value).__name__})")
        for ch in value:
            if ch not in "\n\t" and unicodedata.category(ch) in ("Cc", "Cs"):
                raise self._fail(workflow, value, f"contains the control character U+{ord(ch):04X}",
                                 "Remove it (line breaks and tabs are fine).")
        if self.min_length and not value.strip():
            raise self._fail(workflow, value, "is empty")
        if len(value) < (self.min_length or 0):
            raise self._fail(workflow, value, f"is shorter than {self.min_length} characters")
        if self.max_length is not None and len(value) > self.max_length:
            raise self._fail(workflow, value, f"is {len(value)} characters long", "Shorten it.")
        if self.choices is not None and value not in self.choices:
            raise self._fail(workflow, value, "is not one of the node's options")
        if self.type == "image":
            parts = value.replace("\\", "/").split("/")
            if value.startswith(("/", "\\")) or ".." in parts or "" in parts:
                raise self._fail(workflow, value, "is not a plain file name in the input folder",
                                 "Pass the name /upload/image returned.")
        return value


@dataclass(frozen=True)
class OutputSpec:
    node: str
    kind: str  # "image" | "video"


@dataclass(frozen=True, eq=False)
class Workflow:
    name: str
    path: Path
    sha256: str
    kind: str
    params: Mapping[str, ParamSpec]
    outputs: Mapping[str, OutputSpec]
    filename_prefix: tuple[str, str]  # (node id, input name)
    description: str = ""
    # Content checks that do not apply to this workflow's outputs (map key "skip_checks"; absent: none skipped).
    skip_checks: frozenset[str] = frozenset()
    _source: str = field(default="", repr=False)  # the graph as JSON text: nothing can mutate it

    def graph(self) -> dict:
        """The API-format graph: a fresh copy on every call."""
        return json.loads(self._source)

    def defaults(self) -> dict[str, Any]:
        return {name: spec.default for name, spec in self.params.items()}

    @property
    def makes(self) -> str:
        """What the workflow's outputs are: "image" or "video"."""
        return next(iter(self.outputs.values())).kind

    @property
    def image_input(self) -> str | None:
        """The parameter that takes the uploaded input picture (type "image"), if the workflow has one."""
        return next((name for name, spec in self.params.items() if spec.type == "image"), None)

    @functools.cached_property
    def makes_audio(self) -> bool:
        """The workflow puts a sound track into its video: a CreateVideo node whose "audio" input is a link."""
        return any(node["class_type"] == "CreateVideo" and _is_link(node["inputs"].get("audio"))
                   for node in json.loads(self._source).values())

    def validate_values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Every parameter's value, checked and coerced, defaults filled in. Raises WorkflowError."""
        if not isinstance(values, Mapping):
            raise WorkflowError(
                f"workflow {self.name!r}: parameter values must be a mapping, got {type(values).__name__}"
            )
        unknown = sorted(set(values) - set(self.params))
        if unknown:
            raise WorkflowError(
                f"workflow {self.name!r} has no parameter(s) {', '.join(map(repr, unknown))}; "
                f"known parameters: {', '.join(sorted(self.params))}."
            )
        result = {}
        for name, spec in self.params.items():
            if name in values:
                result[name] = spec.check(values[name], self.name)
            elif spec.required:
                raise WorkflowError(f"workflow {self.name!r}: parameter {name!r} is required ({spec.description})")
            else:
                result[name] = spec.default
        return result

    def inject(self, values: Mapping[str, Any], *, filename_prefix: str) -> dict:
        """A new API graph with `values` and `filename_prefix` set. The prefix should be unique per run, so
        that the server neither serves the outputs from its cache nor overwrites older ones."""
        checked = self.validate_values(values)
        prefix = check_filename_prefix(filename_prefix, self.name)
        graph = self.graph()
        for name, value in checked.items():
            for node, input_name in self.params[name].targets:
                graph[node]["inputs"][input_name] = value
        node, input_name = self.filename_prefix
        graph[node]["inputs"][input_name] = prefix
        return graph


def check_filename_prefix(prefix: Any, workflow: str | None = None) -> str:
    """`prefix` if it is a safe relative output prefix ("runs/2024/abc/image"); WorkflowError otherwise."""
    problem = None
    if not isinstance(prefix, str) or not prefix:
        problem = "must be a non-empty string"
    elif len(prefix) > MAX_PREFIX:
        problem = f"is longer than {MAX_PREFIX} characters"
    elif not all(PREFIX_SEGMENT.fullmatch(part) for part in prefix.split("/")):
        problem = ("must be a relative path of segments made of letters, digits, '_', '-' and '.', not starting "
                   "with '.' (no '..', no leading '/', no '%' patterns)")
    if problem:
        where = f"workflow {workflow!r}: " if workflow else ""
        raise WorkflowError(f"{where}filename prefix {prefix!r} {problem}.")
    return prefix


def workflows_dirs() -> list[Path]:
    """The workflows folders, in lookup order: those $COMFY_PIPELINE_WORKFLOWS_DIR lists (several separated by
    ':', like PATH), else the repository's workflows/, else the copy packaged in the wheel. Read at each call."""
    configured = [Path(part) for part in os.environ.get(ENV_DIR, "").split(os.pathsep) if part.strip()]
    if configured:
        return configured
    package = Path(__file__).resolve().parents[1]  # comfy_pipeline/
    repo = package.parent / "workflows"
    if repo.is_dir():
        return [repo]
    return [package / "_bundled_workflows"]


def workflows_dir() -> Path:
    """The first workflows folder (see workflows_dirs)."""
    return workflows_dirs()[0]


def list_workflows(directory: Path | None = None) -> list[str]:
    """The workflow names in `directory`, else in every workflows folder."""
    folders = [directory] if directory is not None else workflows_dirs()
    names = {p.name[: -len(".json")] for folder in folders if folder.is_dir()
             for p in folder.glob("*.json") if not p.name.endswith(MAP_SUFFIX)}
    return sorted(names)


def _folders_text(roots: list[Path]) -> str:
    return f" {roots[0]}" if len(roots) == 1 else "s " + ", ".join(str(root) for root in roots)


def _locate(name_or_path: str | Path, folders: list[Path]) -> tuple[Path, Path]:
    """(workflow file, the workflows folder holding it) for a name or path, which must be inside one of `folders`
    after resolving symlinks. A name is looked up in the folders in order: the first one holding it wins."""
    text = os.fspath(name_or_path)
    if not text or "\x00" in text:
        raise WorkflowError(f"invalid workflow name {text!r}")
    if ".." in Path(text).parts:
        raise WorkflowError(f"workflow name {text!r} contains '..'; name a workflow inside {folders[0]}")
    if text.endswith(MAP_SUFFIX):
        raise WorkflowError(f"{text!r} is a parameter map; name the workflow itself ({text[:-len(MAP_SUFFIX)]}.json)")
    if not text.endswith(".json"):
        text += ".json"
    given = Path(text)
    # A bare name or a relative path means inside a folder; a path from the current directory works too.
    candidates = [given] if given.is_absolute() else [*(folder / given for folder in folders), Path.cwd() / given]
    roots = [folder.resolve() for folder in folders]
    outside = (
        f"outside the workflows folder{_folders_text(roots)}; copy it into one, add its folder to {ENV_DIR} "
        "(several folders separated by ':'), or give its path on the command line (`comfy-pipeline "
        "validate-workflow`, `check --workflows`), which takes a workflow file wherever it is"
    )
    for candidate in candidates:
        if not candidate.exists():
            continue
        resolved = candidate.resolve()
        root = next((root for root in roots if resolved.is_relative_to(root)), None)
        if root is None:
            raise WorkflowError(f"workflow {os.fspath(name_or_path)!r} resolves to {resolved}, {outside}")
        if not resolved.is_file():
            raise WorkflowError(f"workflow {os.fspath(name_or_path)!r} is not a file")
        return resolved, root
    if given.is_absolute() and not any(Path(os.path.abspath(given)).is_relative_to(root) for root in roots):
        raise WorkflowError(f"workflow path {text!r} is {outside}")
    known = ", ".join(sorted({name for folder in folders for name in list_workflows(folder)})) or "none"
    where = ", ".join(str(folder) for folder in folders)
    raise WorkflowError(f"workflow {os.fspath(name_or_path)!r} not found in {where}; available: {known}")


def _read(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)  # never more than the limit, even if the file grows meanwhile
    except OSError as exc:
        raise WorkflowError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise WorkflowError(f"{what} {path.name} is larger than the {MAX_FILE_BYTES} bytes allowed")
    return data


def _parse_json(data: bytes, path: Path, what: str) -> Any:
    try:
        return json.loads(data.decode("utf-8-sig"))  # tolerate the BOM some Windows editors write
    except UnicodeDecodeError as exc:
        raise WorkflowError(f"{what} {path.name} is not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise WorkflowError(
            f"{what} {path.name} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None


def _check_graph(graph: Any, name: str) -> None:
    if isinstance(graph, dict) and "nodes" in graph and "links" in graph:
        raise WorkflowError(
            f"workflow {name!r} is in ComfyUI's UI format (it has 'nodes' and 'links'). Open it in ComfyUI and "
            "save it with Workflow > Export (API), then use that file."
        )
    if isinstance(graph, dict) and set(graph) == {"prompt"}:
        raise WorkflowError(f"workflow {name!r} is wrapped in {{'prompt': ...}}; store only the graph itself")
    if not isinstance(graph, dict) or not graph:
        raise WorkflowError(f"workflow {name!r} must be a JSON object mapping node ids to nodes (ComfyUI API format)")
    for node_id, node in graph.items():
        if (not isinstance(node, dict) or not isinstance(node.get("class_type"), str)
                or not isinstance(node.get("inputs"), dict)):
            raise WorkflowError(
                f"workflow {name!r}: node {node_id!r} needs a 'class_type' string and an 'inputs' object "
                "(is this an API-format export?)"
            )


def _input_spec(object_info: dict, node: dict, input_name: str) -> list | None:
    """The object_info spec of one input; dynamic-combo children ("resize_type.width") follow the picked option."""
    info = object_info.get(node["class_type"])
    if info is None:
        return None
    specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    head, *rest = input_name.split(".")
    spec, path = specs.get(head), head
    for child in rest:
        if spec is None or spec[0] != "COMFY_DYNAMICCOMBO_V3":
            return None
        picked = node["inputs"].get(path)
        option = next((o for o in spec[1].get("options", []) if o.get("key") == picked), None)
        if option is None:
            return None
        spec = {**option["inputs"].get("required", {}), **option["inputs"].get("optional", {})}.get(child)
        path += "." + child
    return spec


SCHEMA_TYPES = {"int": ("INT", "FLOAT"), "float": ("FLOAT",), "string": ("STRING", "COMBO")}


def _combo_options(schema: list) -> list | None:
    """The options of a combo input's schema (legacy `[[...], {...}]` or V3 `["COMBO", {"options": [...]}]`)."""
    if isinstance(schema[0], list):
        return schema[0]
    if schema[0] == "COMBO" and len(schema) > 1 and isinstance(schema[1], dict):
        return schema[1].get("options")
    return None


def _schema_choices(spec: ParamSpec, graph: dict, object_info: dict) -> tuple[str, ...] | None:
    """For a string parameter: the options every combo input it fills accepts, else None (free text). Model file
    combos are left out: which files there are depends on the server, which pre-flight asks."""
    if spec.type != "string":
        return None
    choices = None
    for node_id, input_name in spec.targets:
        class_type = graph[node_id]["class_type"]
        schema = _input_spec(object_info, graph[node_id], input_name)
        if schema is None or (class_type, input_name) in MODEL_INPUTS:
            continue
        options = _combo_options(schema)
        if options is not None:
            kept = [str(option) for option in options]
            choices = tuple(kept) if choices is None else tuple(c for c in choices if c in kept)
    return choices


def _schema_bounds(spec: ParamSpec, graph: dict, object_info: dict, where: str) -> tuple[Any, Any]:
    """The map's range narrowed by every target's object_info min/max; checks the types agree."""
    low, high = spec.minimum, spec.maximum
    for node_id, input_name in spec.targets:
        schema = _input_spec(object_info, graph[node_id], input_name)
        if schema is None:  # a class the bundled schema does not know (a custom node): only the map applies
            continue
        declared = schema[0] if isinstance(schema[0], str) else "COMBO"  # legacy combos are a bare list
        kinds = set(declared.split(","))
        options = schema[1] if len(schema) > 1 else {}
        expected = SCHEMA_TYPES.get(spec.type, ("COMBO",))
        if not kinds & set(expected):
            raise WorkflowError(
                f"{where}: parameter {spec.name!r} is of type {spec.type!r}, but node {node_id} "
                f"({graph[node_id]['class_type']}) input {input_name!r} is {declared}"
            )
        if "min" in options:
            low = options["min"] if low is None else max(low, options["min"])
        if "max" in options:
            high = options["max"] if high is None else min(high, options["max"])
    return low, high


def _param(name: str, raw: Any, graph: dict, object_info: dict, where: str) -> ParamSpec:
    if not isinstance(raw, dict):
        raise WorkflowError(f"{where}: parameter {name!r} must be an object")
    unknown = sorted(set(raw) - PARAM_KEYS)
    if unknown:
        raise WorkflowError(
            f"{where}: parameter {name!r} has unknown key(s) {unknown}; known keys: {sorted(PARAM_KEYS)}"
        )
    if raw.get("type") not in PARAM_TYPES:
        raise WorkflowError(f"{where}: parameter {name!r} has type {raw.get('type')!r}; use one of {list(PARAM_TYPES)}")
    targets = []
    for target in raw.get("targets") or []:
        node_id, input_name = (target.get("node"), target.get("input")) if isinstance(target, dict) else (None, None)
        if node_id not in graph:
            raise WorkflowError(f"{where}: parameter {name!r} targets node {node_id!r}, which is not in the workflow")
        if input_name not in graph[node_id]["inputs"]:
            raise WorkflowError(
                f"{where}: parameter {name!r} targets input {input_name!r} of node {node_id} "
                f"({graph[node_id]['class_type']}), which has no such input; it has {sorted(graph[node_id]['inputs'])}"
            )
        if _is_link(graph[node_id]["inputs"][input_name]):
            raise WorkflowError(
                f"{where}: parameter {name!r} targets node {node_id} input {input_name!r}, which is a link, not a value"
            )
        targets.append((node_id, input_name))
    if not targets:
        raise WorkflowError(f"{where}: parameter {name!r} has no targets (a list of {{'node': ..., 'input': ...}})")
    for key in ("minimum", "maximum", "multiple_of", "min_length", "max_length"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise WorkflowError(f"{where}: parameter {name!r} has {key} {value!r}; it must be a number")
    if raw.get("multiple_of") is not None and (not isinstance(raw["multiple_of"], int) or raw["multiple_of"] < 1):
        raise WorkflowError(
            f"{where}: parameter {name!r} has multiple_of {raw['multiple_of']!r}; use a positive integer"
        )
    if raw.get("rule") is not None and not RULE.fullmatch(str(raw["rule"])):
        raise WorkflowError(f"{where}: parameter {name!r} has rule {raw['rule']!r}; write it as 'An+B', e.g. '8n+1'")
    text = raw["type"] in ("string", "image")
    spec = ParamSpec(
        name=name,
        targets=tuple(targets),
        type=raw["type"],
        default=raw.get("default"),
        minimum=raw.get("minimum"),
        maximum=raw.get("maximum"),
        multiple_of=raw.get("multiple_of"),
        rule=raw.get("rule"),
        min_length=raw.get("min_length", 1) if text else None,
        max_length=raw.get("max_length", DEFAULT_MAX_STRING) if text else None,
        required=bool(raw.get("required", False)),
        description=str(raw.get("description", "")),
    )
    low, high = _schema_bounds(spec, graph, object_info, where)
    if spec.type == "int":
        low, high = (None if low is None else math.ceil(low)), (None if high is None else math.floor(high))
    spec = dataclasses.replace(spec, minimum=low, maximum=high, choices=_schema_choices(spec, graph, object_info))
    try:
        spec.check(spec.default)
    except WorkflowError as exc:
        raise WorkflowError(f"{where}: the default of parameter {name!r} is not allowed: {exc}") from None
    for node_id, input_name in targets:
        if graph[node_id]["inputs"][input_name] != spec.default:
            raise WorkflowError(
                f"{where}: parameter {name!r} has default {spec.default!r}, but node {node_id} input {input_name!r} "
                f"holds {graph[node_id]['inputs'][input_name]!r}; make the map and the workflow agree"
            )
    return spec


def _target(raw: Any, graph: dict, where: str, what: str) -> tuple[str, str]:
    node_id, input_name = (raw.get("node"), raw.get("input")) if isinstance(raw, dict) else (None, None)
    if node_id not in graph:
        raise WorkflowError(f"{where}: {what} names node {node_id!r}, which is not in the workflow")
    if input_name not in graph[node_id]["inputs"]:
        raise WorkflowError(
            f"{where}: {what} names input {input_name!r} of node {node_id} ({graph[node_id]['class_type']}), "
            "which has no such input"
        )
    return node_id, input_name


def _skip_checks(raw: Any, where: str) -> frozenset[str]:
    """The map's "skip_checks": content checks (media.content.CONTENT_CHECKS) its outputs are not held to."""
    if raw is None:
        return frozenset()
    known = ", ".join(CONTENT_CHECKS)
    if not isinstance(raw, list) or not all(isinstance(name, str) for name in raw):
        raise WorkflowError(f"{where}: skip_checks must be a list of content check names ({known}); got {raw!r}")
    unknown = [name for name in raw if name not in CONTENT_CHECKS]
    if unknown:
        raise WorkflowError(f"{where}: skip_checks names unknown content check(s) {', '.join(map(repr, unknown))}; "
                            f"known checks: {known}")
    return frozenset(raw)


def _parse_map(raw: Any, graph: dict, map_path: Path
               ) -> tuple[str, str, dict, dict, tuple[str, str], frozenset[str]]:
    where = f"parameter map {map_path.name}"
    if not isinstance(raw, dict):
        raise WorkflowError(f"{where} must be a JSON object")
    object_info = load_bundled_object_info()
    params_raw = raw.get("parameters")
    if not isinstance(params_raw, dict):
        raise WorkflowError(f"{where} needs a 'parameters' object")
    params = {name: _param(name, spec, graph, object_info, where) for name, spec in params_raw.items()}
    outputs = {}
    outputs_raw = raw.get("outputs")
    if not isinstance(outputs_raw, dict) or not outputs_raw:
        raise WorkflowError(f"{where} needs an 'outputs' object: {{node id: {{'kind': 'image' | 'video'}}}}")
    for node_id, out in outputs_raw.items():
        if node_id not in graph:
            raise WorkflowError(f"{where}: output node {node_id!r} is not in the workflow")
        kind = out.get("kind") if isinstance(out, dict) else None
        if kind not in OUTPUT_KINDS:
            raise WorkflowError(f"{where}: output node {node_id} has kind {kind!r}; use one of {list(OUTPUT_KINDS)}")
        outputs[node_id] = OutputSpec(node_id, kind)
    prefix = _target(raw.get("filename_prefix"), graph, where, "filename_prefix")
    skip = _skip_checks(raw.get("skip_checks"), where)
    kind = _kind(raw.get("kind", ""), params, outputs, where)
    return kind, str(raw.get("description", "")), params, outputs, prefix, skip


def _kind(raw: Any, params: dict, outputs: dict, where: str) -> str:
    """The map's "kind", checked against what the workflow makes and takes."""
    if raw in ("", None):
        return ""
    known = ", ".join(WORKFLOW_KINDS)
    if raw not in WORKFLOW_KINDS:
        raise WorkflowError(f"{where}: kind {raw!r} is not one of {known}")
    made = {out.kind for out in outputs.values()}
    if made != {WORKFLOW_KINDS[raw]}:
        raise WorkflowError(f"{where}: a {raw} workflow makes {WORKFLOW_KINDS[raw]}s, but its outputs are "
                            f"{', '.join(sorted(made))}; fix 'kind' or 'outputs'")
    images = [name for name, spec in params.items() if spec.type == "image"]
    if raw.startswith("image-to-") and len(images) != 1:
        raise WorkflowError(f"{where}: a {raw} workflow needs exactly one parameter of type 'image' (the uploaded "
                            f"input picture, e.g. LoadImage's 'image' input); it has {len(images)}")
    return raw


def load_workflow(name_or_path: str | Path, *, directory: Path | None = None) -> Workflow:
    """Load a workflow and its parameter map by name ("z_image_turbo_generation"), file name or path inside
    `directory`, else inside the workflows folders (workflows_dirs): what run config may name. A file elsewhere
    is refused; a path the user gives on the command line goes through load_user_workflow. Raises WorkflowError
    with what to fix."""
    folders = [Path(directory)] if directory is not None else workflows_dirs()
    for folder in folders:
        if not folder.is_dir():
            raise WorkflowError(f"workflows folder {folder} does not exist; create it or set {ENV_DIR}")
    path, folder = _locate(name_or_path, folders)
    name = path.name[: -len(".json")]
    data = _read(path, "workflow")
    graph = _parse_json(data, path, "workflow")
    _check_graph(graph, name)
    map_path = path.with_name(name + MAP_SUFFIX)
    if not map_path.is_file():
        raise WorkflowError(
            f"workflow {name!r} has no parameter map: create {map_path.name} next to it, naming the injectable "
            "parameters, the output nodes and the filename-prefix input (see the maps of the bundled workflows)"
        )
    if not map_path.resolve().is_relative_to(folder):
        raise WorkflowError(f"parameter map {map_path.name} resolves outside the workflows folder {folder}")
    kind, description, params, outputs, prefix, skip = _parse_map(
        _parse_json(_read(map_path, "parameter map"), map_path, "parameter map"), graph, map_path
    )
    return Workflow(
        name=name,
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        kind=kind,
        params=MappingProxyType(params),
        outputs=MappingProxyType(outputs),
        filename_prefix=prefix,
        description=description,
        skip_checks=skip,
        _source=json.dumps(graph, ensure_ascii=False),
    )


def _user_file(name_or_path: str | Path) -> Path | None:
    """The file a command-line argument names, resolved, or None for a workflow name. A path (with a folder part
    or ending in .json) is taken from the current directory; a bare name is a workflow in the workflows folders,
    else NAME.json in the current directory."""
    text = os.fspath(name_or_path)
    if not text or "\x00" in text:
        return None
    if not (os.sep in text or text.endswith(".json")):
        if any((folder / f"{text}.json").exists() for folder in workflows_dirs()):
            return None
        text += ".json"
    path = Path(text).expanduser()
    if not path.exists() and not text.endswith(".json"):
        path = path.with_name(path.name + ".json")
    return path.resolve() if path.exists() else None


def load_user_workflow(name_or_path: str | Path) -> Workflow:
    """A workflow the user names on the command line: a name in the workflows folders, or the path of a
    workflow file of their own wherever it is (its .params.json beside it). Only the command line may do this;
    run config goes through load_workflow, limited to the workflows folders."""
    path = _user_file(name_or_path)
    if path is None:
        return load_workflow(name_or_path)
    if path.is_dir():
        raise WorkflowError(f"{os.fspath(name_or_path)!r} is a folder; name a workflow file (.json) in it")
    if not path.name.endswith(".json") or path.name.endswith(MAP_SUFFIX):
        raise WorkflowError(
            f"{os.fspath(name_or_path)!r} is not a workflow file: a workflow is ComfyUI's API-format JSON "
            f"(name.json) with its parameter map (name{MAP_SUFFIX}) beside it"
        )
    return load_workflow(path.name, directory=path.parent)


def admit_user_workflow(name_or_path: str | Path) -> str:
    """For a command that starts Dagster runs in its own process (`comfy-pipeline check`): the run-config value
    naming a workflow the user gave on the command line. A name stays a name; a file outside the workflows
    folders becomes its absolute path, and its folder is added after the others to this process's
    $COMFY_PIPELINE_WORKFLOWS_DIR, so that this process's runs may load it. Other processes are not affected."""
    workflow = load_user_workflow(name_or_path)  # a file that cannot be loaded fails here, before any run
    path = _user_file(name_or_path)
    if path is None:
        return os.fspath(name_or_path)
    folders = workflows_dirs()
    if not any(workflow.path.is_relative_to(folder.resolve()) for folder in folders):
        os.environ[ENV_DIR] = os.pathsep.join(str(folder) for folder in [*folders, workflow.path.parent])
    return str(workflow.path)
