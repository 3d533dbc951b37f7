"""Adapt an API-format graph to the ComfyUI version in front of us, from that server's own `/object_info`.

Node inputs change shape between ComfyUI versions. The first such input: SaveVideo's codec. ComfyUI 0.8.x
declares flat `format` and `codec` combos; later versions make `format` a dynamic combo whose options carry a
nested `codec`, sent as `format.codec`. The official templates use the nested form, so on 0.8.x the server
would reject them with a missing required input. Renaming by the server's declaration, not by version numbers,
covers every version in between and any node that makes the same move. No Dagster here.
"""

import copy
from typing import Any

DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"


def declared_inputs(object_info: dict, class_type: str) -> dict[str, Any]:
    """Top-level input name -> its declaration, required and optional alike; {} for an unknown class."""
    info = object_info.get(class_type)
    if not isinstance(info, dict):
        return {}
    spec = info.get("input") or {}
    return {**(spec.get("required") or {}), **(spec.get("optional") or {})}


def _is_dynamic_combo(declaration: Any) -> bool:
    return isinstance(declaration, (list, tuple)) and bool(declaration) and declaration[0] == DYNAMIC_COMBO


def _option_inputs(declaration: Any, selected: Any) -> dict[str, Any]:
    """The inputs that a dynamic combo declares for its selected option."""
    options = (declaration[1] if len(declaration) > 1 and isinstance(declaration[1], dict) else {}).get("options") or []
    for option in options:
        if isinstance(option, dict) and option.get("key") == selected:
            inputs = option.get("inputs") or {}
            return {**(inputs.get("required") or {}), **(inputs.get("optional") or {})}
    return {}


def adapt_to_server(graph: dict, object_info: dict) -> tuple[dict, list[str]]:
    """A copy of `graph` whose nested/flat input names match the server's declarations, and what was renamed."""
    adapted = copy.deepcopy(graph)
    changes: list[str] = []
    for node_id, node in adapted.items():
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            continue
        declared = declared_inputs(object_info, str(node.get("class_type")))
        if not declared:
            continue
        inputs = node["inputs"]
        for name in list(inputs):
            parent, dot, child = name.partition(".")
            if dot:
                # Nested name on a server whose `parent` is a plain combo: it takes the flat `child` instead.
                if parent in declared and not _is_dynamic_combo(declared[parent]) and child in declared \
                        and child not in inputs:
                    inputs[child] = inputs.pop(name)
                    changes.append(f"node {node_id} ({node['class_type']}): {name} -> {child}")
            elif name not in declared:
                # Flat name on a server that declares it inside a dynamic combo's selected option.
                for combo, declaration in declared.items():
                    nested = f"{combo}.{name}"
                    if _is_dynamic_combo(declaration) and nested not in inputs \
                            and name in _option_inputs(declaration, inputs.get(combo)):
                        inputs[nested] = inputs.pop(name)
                        changes.append(f"node {node_id} ({node['class_type']}): {name} -> {nested}")
                        break
    return adapted, changes
