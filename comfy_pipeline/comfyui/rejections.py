"""Turn ComfyUI's validation answer (`error` + `node_errors`) into messages that say what to fix.

The server reports a missing model file as a generic `value_not_in_list` ("ckpt_name: 'x' not in []") and an
unknown node class as a top-level `missing_node_type` with empty `node_errors`; both are spelled out here.
The offline pre-flight builds the same kind of answer and reuses these functions.
"""

import re
from typing import Any

from .errors import NodeError, WorkflowValidationError

# Which models/ folder a loader input reads from. Class-specific entries win over the plain input name.
MODEL_FOLDER_BY_CLASS_INPUT = {
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("LatentUpscaleModelLoader", "model_name"): "latent_upscale_models",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("ModelPatchLoader", "name"): "model_patches",
}
MODEL_FOLDER_BY_INPUT = {
    "ckpt_name": "checkpoints",
    "unet_name": "diffusion_models",
    "clip_name": "text_encoders",
    "clip_name1": "text_encoders",
    "clip_name2": "text_encoders",
    "clip_name3": "text_encoders",
    "clip_name4": "text_encoders",
    "text_encoder": "text_encoders",
    "vae_name": "vae",
    "lora_name": "loras",
    "control_net_name": "controlnet",
    "style_model_name": "style_models",
    "gligen_name": "gligen",
    "hypernetwork_name": "hypernetworks",
    "photomaker_model_name": "photomaker",
    "audio_encoder_name": "audio_encoders",
}
MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".onnx")


def model_folder(class_type: str, input_name: str | None) -> str | None:
    """The models/ folder a loader input reads from, or None when the input is not a model file."""
    if input_name is None:
        return None
    return MODEL_FOLDER_BY_CLASS_INPUT.get((class_type, input_name)) or MODEL_FOLDER_BY_INPUT.get(input_name)


def _allowed_values(input_config: Any) -> list | None:
    """The combo list of an input config, in either notation: [[...], {...}] or ["COMBO", {"options": [...]}]."""
    if isinstance(input_config, list) and input_config:
        if isinstance(input_config[0], list):
            return input_config[0]
        if len(input_config) > 1 and isinstance(input_config[1], dict):
            options = input_config[1].get("options")
            if isinstance(options, list):
                return options
    return None


def _short_list(values: list, limit: int = 12) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return f"[{shown}, ... ({len(values)} in all)]" if len(values) > limit else f"[{shown}]"


def _message(class_type: str, error: dict) -> tuple[str, str | None]:
    """(message, input name) for one entry of node_errors[id]["errors"]."""
    kind = error.get("type", "")
    details = str(error.get("details") or "")
    info = error.get("extra_info") or {}
    input_name = info.get("input_name")
    received = info.get("received_value")

    if kind == "value_not_in_list":
        allowed = _allowed_values(info.get("input_config"))
        folder = model_folder(class_type, input_name)
        if folder:
            return f"model file {received!r} is not in folder '{folder}' on the server", input_name
        if isinstance(received, str) and received.lower().endswith(MODEL_EXTENSIONS):
            return f"model file {received!r} is not on the server", input_name
        if allowed is not None:
            return f"{received!r} is not an allowed value; choose one of {_short_list(allowed)}", input_name
        return details or "value not in list", input_name
    if kind == "required_input_missing":
        name = input_name or details
        return f"required input '{name}' is missing", name
    if kind in ("value_bigger_than_max", "value_smaller_than_min"):
        return str(error.get("message") or details), input_name
    if kind == "invalid_input_type":
        return f"{error.get('message')}: got {received!r}", input_name
    if kind == "return_type_mismatch":
        linked = info.get("linked_node") or ["?"]
        expected = (info.get("input_config") or ["?"])[0]
        return (
            f"gets {info.get('received_type')} from node {linked[0]}, but needs {expected}",
            input_name,
        )
    if kind == "custom_validation_failed" and class_type == "LoadImage":
        return f"input image is not on the server ({details}); upload it first", input_name or "image"
    if kind == "dependency_cycle":
        return f"is part of a dependency cycle: {details}", None
    if kind == "exception_during_validation":
        exc_type = info.get("exception_type", "exception")
        hint = "; check the links of this node" if exc_type in ("KeyError", "IndexError") else ""
        return f"could not be validated ({exc_type}: {details}){hint}", input_name
    text = str(error.get("message") or kind or "invalid")
    return (f"{text}: {details}" if details else text), input_name


def node_errors_to_list(node_errors: dict) -> list[NodeError]:
    """Every problem in a `node_errors` dict, one NodeError each, in the server's order."""
    result: list[NodeError] = []
    for node_id, node in (node_errors or {}).items():
        class_type = str(node.get("class_type") or "?")
        for error in node.get("errors") or []:
            message, input_name = _message(class_type, error)
            result.append(
                NodeError(
                    node_id=str(node_id),
                    class_type=class_type,
                    kind=str(error.get("type") or "unknown"),
                    message=message,
                    input_name=input_name,
                )
            )
    return result


def rejection_from_response(body: dict, *, workflow: str | None = None) -> WorkflowValidationError:
    """The WorkflowValidationError for a rejected POST /prompt body (HTTP 400, or 200 with node_errors)."""
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    kind = error.get("type", "")
    info = error.get("extra_info") or {}
    errors = node_errors_to_list(body.get("node_errors") or {})

    older = _older_unknown_node(error)
    if older:  # ComfyUI before missing_node_type: invalid_prompt "Cannot execute because node X does not exist."
        kind, info = "missing_node_type", older
    if kind == "missing_node_type":
        node_id = str(info.get("node_id") or "?")
        class_type = info.get("class_type")
        if class_type:
            message = f"node type {class_type} is not installed on the server (a custom node is missing)"
            summary = f"node type {class_type} is not installed"
        else:
            message = "has no class_type; the workflow is damaged or not in API format"
            summary = f"node {node_id} has no class_type"
        errors.insert(0, NodeError(node_id, str(class_type or "?"), kind, message))
        return WorkflowValidationError(summary, errors, workflow)
    if kind == "prompt_no_outputs":
        summary = "the workflow has no output node (SaveImage, SaveVideo, PreviewImage, ...)"
    elif kind == "no_prompt":
        summary = "the request carried no workflow (post the API-format graph as {'prompt': ...})"
    elif errors:
        models = sum(1 for e in errors if e.message.startswith("model file"))
        summary = f"{len(errors)} problem(s) in {len({e.node_id for e in errors})} node(s)"
        if models:
            summary += f", {models} missing model file(s)"
    else:
        summary = ": ".join(p for p in (error.get("message"), error.get("details")) if p) or "rejected"
    return WorkflowValidationError(summary, errors, workflow)


_OLD_UNKNOWN_NODE = re.compile(r"Cannot execute because node (?P<class_type>.+) does not exist\.?$")
_OLD_NODE_ID = re.compile(r"Node ID '#(?P<node_id>[^']+)'")


def _older_unknown_node(error: dict) -> dict | None:
    """extra_info of a missing_node_type answer, from the invalid_prompt shape that ComfyUI 0.8.x gives."""
    if error.get("type") != "invalid_prompt":
        return None
    match = _OLD_UNKNOWN_NODE.match(str(error.get("message") or ""))
    if not match:
        return None
    node = _OLD_NODE_ID.search(str(error.get("details") or ""))
    return {"class_type": match["class_type"], "node_id": node["node_id"] if node else None}
