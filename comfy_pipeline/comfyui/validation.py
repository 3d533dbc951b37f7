"""ComfyUI 0.33.0's prompt validation (`execution.validate_prompt`), re-implemented against an object_info dict.

It follows the server's code path step by step, so the error types, messages, details, extra_info and
even its quirks come out the same: validation of a branch stops at the first exception, an upstream error
is reported once on the node that has it, every failing output is appended to the `dependent_outputs` of
every node with errors, V3 dynamic combos only require the children of the option that was picked.
Used by the simulator's POST /prompt and by offline pre-flight.
"""

import copy
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
# Other V3 dynamic inputs (autogrow, dynamic slots) expand from the live inputs as well; no bundled class
# uses them, so they are skipped rather than half-implemented.
OTHER_DYNAMIC_TYPES = {"COMFY_AUTOGROW_V3", "COMFY_DYNAMICSLOT_V3"}
MATCH_TYPE = "COMFY_MATCHTYPE_V3"

# Nodes whose VALIDATE_INPUTS checks these inputs itself; the server then skips the min/max/combo checks.
# LoadImage checks that the (possibly annotated, possibly in a subfolder) file exists.
CUSTOM_VALIDATED_INPUTS: dict[str, tuple[str, ...]] = {"LoadImage": ("image",)}


@dataclass
class ValidationOutcome:
    error: dict | None  # top-level {"type","message","details","extra_info"}; None when accepted
    # {node_id: {"errors": [...], "dependent_outputs": [...], "class_type": str}}
    node_errors: dict = field(default_factory=dict)
    good_outputs: list[str] = field(default_factory=list)  # output nodes that validated (outputs_to_execute)
    # a copy of the prompt with widget values coerced ("64" -> 64) as the server queues it
    prompt: dict = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        """True when the server would queue the prompt; node_errors may still be non-empty (partial acceptance)."""
        return self.error is None


def validate_prompt(
    prompt: Any,
    object_info: dict,
    *,
    image_exists: Callable[[str], bool] = lambda name: True,
    partial_execution_targets: list[str] | None = None,
) -> ValidationOutcome:
    """Validate an API-format prompt like ComfyUI's POST /prompt does.

    `image_exists(name)` answers LoadImage's check (name as given, e.g. "x.png", "sub/x.png",
    "x.png [output]"). `partial_execution_targets` limits the outputs checked, like the request field of that
    name. Raises TypeError for a prompt that is not a JSON object: the real server
    answers those with HTTP 500, not with a validation error.
    """
    if not isinstance(prompt, dict):
        raise TypeError(f"prompt must be a JSON object mapping node ids to nodes, got {type(prompt).__name__}")
    validator = _Validator(copy.deepcopy(prompt), object_info, image_exists, partial_execution_targets)
    outcome = validator.run()
    outcome.prompt = validator.prompt
    return outcome


def node_title(node: dict, default: Any) -> Any:
    meta = node.get("_meta", {})
    return meta.get("title", default) if isinstance(meta, dict) else default


class _Validator:
    def __init__(self, prompt: dict, object_info: dict, image_exists: Callable[[str], bool], targets: list[str] | None):
        self.prompt = prompt
        self.targets = targets
        self.object_info = object_info
        self.image_exists = image_exists
        # node id -> (valid, errors, node id), as in the server.
        self.validated: dict[Any, tuple[bool, list[dict], Any]] = {}

    def run(self) -> ValidationOutcome:
        prompt = self.prompt
        outputs: list[str] = []
        for node_id in prompt:
            node = prompt[node_id]
            if not isinstance(node, dict):
                raise TypeError(f"node {node_id!r} must be a JSON object with class_type and inputs")
            if "class_type" not in node:
                title = node_title(node, None)
                return ValidationOutcome(error={
                    "type": "missing_node_type",
                    "message": f"Node '{title or f'ID #{node_id}'}' has no class_type. "
                               "The workflow may be corrupted or a custom node is missing.",
                    "details": f"Node ID '#{node_id}'",
                    "extra_info": {"node_id": node_id, "class_type": None, "node_title": title},
                })
            class_type = node["class_type"]
            info = self.object_info.get(class_type) if isinstance(class_type, str) else None
            if info is None:
                title = node_title(node, class_type)
                return ValidationOutcome(error={
                    "type": "missing_node_type",
                    "message": f"Node '{title}' not found. The custom node may not be installed.",
                    "details": f"Node ID '#{node_id}'",
                    "extra_info": {"node_id": node_id, "class_type": class_type, "node_title": title},
                })
            if info.get("output_node") is True and (self.targets is None or node_id in self.targets):
                outputs.append(node_id)

        if not outputs:
            return ValidationOutcome(error={
                "type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {},
            })

        good_outputs: list[str] = []
        failures: list[tuple[str, list[dict]]] = []
        node_errors: dict[str, dict] = {}
        for output in outputs:
            try:
                valid, reasons, _ = self.validate_inputs(output, [])
            except Exception as ex:
                valid = False
                reasons = [{
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": str(ex),
                    "extra_info": {
                        "exception_type": full_type_name(type(ex)),
                        "traceback": traceback.format_tb(ex.__traceback__),
                    },
                }]
                self.validated[output] = (False, reasons, output)
            if valid is True:
                good_outputs.append(output)
                continue
            failures.append((output, reasons))
            # Like the server: every node with errors so far gets this failing output as a dependent.
            for node_id, (node_valid, node_reasons, _) in self.validated.items():
                if node_valid is not True and node_reasons:
                    if node_id not in node_errors:
                        node_errors[node_id] = {
                            "errors": node_reasons,
                            "dependent_outputs": [],
                            "class_type": prompt[node_id]["class_type"],
                        }
                    node_errors[node_id]["dependent_outputs"].append(output)

        if not good_outputs:
            details = "\n".join(
                f"{error['message']}: {error['details']}" for _, errors in failures for error in errors
            )
            return ValidationOutcome(
                error={
                    "type": "prompt_outputs_failed_validation",
                    "message": "Prompt outputs failed validation",
                    "details": details,
                    "extra_info": {},
                },
                node_errors=node_errors,
                good_outputs=[],
            )
        return ValidationOutcome(error=None, node_errors=node_errors, good_outputs=good_outputs)

    def validate_inputs(self, unique_id: Any, visiting: list) -> tuple[bool, list[dict], Any]:
        prompt, validated = self.prompt, self.validated
        if unique_id in validated:
            return validated[unique_id]

        if unique_id in visiting:
            path = visiting[visiting.index(unique_id):] + [unique_id]
            cycle_nodes = list(dict.fromkeys(path))
            cycle_path = " -> ".join(f"{node_id} ({prompt[node_id]['class_type']})" for node_id in path)
            for node_id in cycle_nodes:
                validated[node_id] = (False, [{
                    "type": "dependency_cycle",
                    "message": "Dependency cycle detected",
                    "details": cycle_path,
                    "extra_info": {"node_id": node_id, "cycle_nodes": cycle_nodes},
                }], node_id)
            return validated[unique_id]

        inputs = prompt[unique_id]["inputs"]
        class_type = prompt[unique_id]["class_type"]
        info = self.object_info[class_type]
        class_inputs, is_dynamic = finalized_class_inputs(info.get("input", {}), inputs)
        custom_inputs = CUSTOM_VALIDATED_INPUTS.get(class_type, ())

        errors: list[dict] = []
        valid = True
        for category in ("required", "optional"):
            for name, spec in class_inputs[category].items():
                input_type = spec[0]
                extra_info = spec[1] if len(spec) > 1 else {}
                if name not in inputs:
                    if category == "required":
                        errors.append({
                            "type": "required_input_missing",
                            "message": "Required input is missing",
                            "details": name.split(".")[-1] if is_dynamic else name,
                            "extra_info": {"input_name": name},
                        })
                    continue

                val = inputs[name]
                config = [input_type, extra_info]
                if isinstance(val, list):
                    if len(val) != 2:
                        errors.append({
                            "type": "bad_linked_input",
                            "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                            "details": name,
                            "extra_info": {"input_name": name, "input_config": config, "received_value": val},
                        })
                        continue
                    from_id = val[0]
                    # The next two lines raise KeyError / IndexError / TypeError exactly where the server does.
                    from_class = prompt[from_id]["class_type"]
                    received_type = tuple(self.object_info[from_class]["output"])[val[1]]
                    if not types_match(received_type, input_type):
                        errors.append({
                            "type": "return_type_mismatch",
                            "message": "Return type mismatch between linked nodes",
                            "details": f"{name}, received_type({received_type}) mismatch input_type({input_type})",
                            "extra_info": {
                                "input_name": name,
                                "input_config": config,
                                "received_type": received_type,
                                "linked_node": val,
                            },
                        })
                        continue
                    try:
                        visiting.append(unique_id)
                        try:
                            result = self.validate_inputs(from_id, visiting)
                        finally:
                            visiting.pop()
                        if result[0] is False:
                            valid = False
                    except Exception as ex:
                        valid = False
                        validated[from_id] = (False, [{
                            "type": "exception_during_inner_validation",
                            "message": "Exception when validating inner node",
                            "details": str(ex),
                            "extra_info": {
                                "input_name": name,
                                "input_config": config,
                                "exception_message": str(ex),
                                "exception_type": full_type_name(type(ex)),
                                "traceback": traceback.format_tb(ex.__traceback__),
                                "linked_node": val,
                            },
                        }], from_id)
                    continue

                error = check_value(name, val, input_type, extra_info, config, inputs, skip_range=name in custom_inputs)
                if error is not None:
                    errors.append(error)

        image = inputs.get("image")
        if class_type == "LoadImage" and image is not None and not isinstance(image, list):
            if not (isinstance(image, str) and self.image_exists(image)):
                errors.append({
                    "type": "custom_validation_failed",
                    "message": "Custom validation failed for node",
                    "details": f"image - Invalid image file: {image}",
                    "extra_info": {"input_name": "image"},
                })

        previous = validated.get(unique_id, (True, [], unique_id))
        # A cycle found deeper down may already have put an error on this node: keep it.
        result = (
            previous[0] and valid is True and not errors,
            previous[1] + [error for error in errors if error not in previous[1]],
            unique_id,
        )
        validated[unique_id] = result
        return result


def finalized_class_inputs(class_input: dict, live_inputs: dict) -> tuple[dict[str, dict], bool]:
    """The inputs to check: like `_io.get_finalized_class_inputs`, a dynamic combo is checked only when set,
    and then the children of the chosen option are checked as `parent.child`. Returns (inputs, any_dynamic)."""
    out: dict[str, dict] = {"required": {}, "optional": {}}
    dynamic = False

    def parse(section: dict, prefix: list[str]) -> None:
        nonlocal dynamic
        for category in ("required", "optional"):
            for name, spec in section.get(category, {}).items():
                io_type = spec[0]
                full_name = ".".join(prefix + [name])
                if io_type == DYNAMIC_COMBO:
                    if full_name not in live_inputs:
                        continue
                    chosen = live_inputs[full_name]
                    option = next((o for o in spec[1].get("options", []) if o.get("key") == chosen), None)
                    if option is not None:
                        parse(option.get("inputs", {}), prefix + [name])
                        out[category][full_name] = spec
                        dynamic = True
                elif isinstance(io_type, str) and io_type in OTHER_DYNAMIC_TYPES:
                    continue
                else:
                    out[category][full_name] = spec
                    if prefix:
                        dynamic = True

    parse(class_input, [])
    return out, dynamic


def check_value(
    name: str, val: Any, input_type: Any, extra_info: dict, config: list, inputs: dict, *, skip_range: bool
) -> dict | None:
    """Coerce a widget value in place (as the server does) and check min/max/combo membership."""
    try:
        if isinstance(val, dict) and "__value__" in val:
            val = val["__value__"]
            inputs[name] = val
        if input_type == "INT":
            val = int(val)
            inputs[name] = val
        if input_type == "FLOAT":
            val = float(val)
            inputs[name] = val
        if input_type == "STRING":
            val = str(val)
            inputs[name] = val
        if input_type == "BOOLEAN":
            val = bool(val)
            inputs[name] = val
    except Exception as ex:
        return {
            "type": "invalid_input_type",
            "message": f"Failed to convert an input value to a {input_type} value",
            "details": f"{name}, {val}, {ex}",
            "extra_info": {
                "input_name": name,
                "input_config": config,
                "received_value": val,
                "exception_message": str(ex),
            },
        }
    if skip_range:
        return None
    if "min" in extra_info and val < extra_info["min"]:
        return {
            "type": "value_smaller_than_min",
            "message": f"Value {val} smaller than min of {extra_info['min']}",
            "details": name,
            "extra_info": {"input_name": name, "input_config": config, "received_value": val},
        }
    if "max" in extra_info and val > extra_info["max"]:
        return {
            "type": "value_bigger_than_max",
            "message": f"Value {val} bigger than max of {extra_info['max']}",
            "details": name,
            "extra_info": {"input_name": name, "input_config": config, "received_value": val},
        }
    if isinstance(input_type, list) or input_type == "COMBO":
        options = extra_info.get("options", []) if input_type == "COMBO" else input_type
        if extra_info.get("multiselect", False) and isinstance(val, list):
            invalid = [v for v in val if v not in options]
        else:
            invalid = [val] if val not in options else []
        if invalid:
            # The server does not echo long lists (lots of scanned model files) back.
            if len(options) > 20:
                list_info, input_config = f"(list of length {len(options)})", None
            else:
                list_info, input_config = str(options), config
            return {
                "type": "value_not_in_list",
                "message": "Value not in list",
                "details": f"{name}: {', '.join(repr(v) for v in invalid)} not in {list_info}",
                "extra_info": {"input_name": name, "input_config": input_config, "received_value": val},
            }
    return None


def types_match(received_type: Any, input_type: Any) -> bool:
    """`comfy_execution.validation.validate_node_input` (non-strict)."""
    if received_type == input_type:
        return True
    if "*" in (received_type, input_type) or MATCH_TYPE in (received_type, input_type):
        return True
    if isinstance(received_type, list) and input_type == "COMBO":
        return True
    if not isinstance(received_type, str) or not isinstance(input_type, str):
        return False
    received = {t.strip() for t in received_type.split(",")}
    accepted = {t.strip() for t in input_type.split(",")}
    if "*" in received or "*" in accepted:
        return True
    return bool(received & accepted)


def full_type_name(klass: type) -> str:
    if klass.__module__ == "builtins":
        return klass.__qualname__
    return f"{klass.__module__}.{klass.__qualname__}"
