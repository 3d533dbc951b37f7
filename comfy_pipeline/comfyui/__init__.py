"""ComfyUI protocol client (no Dagster: usable on its own): HTTP and WebSocket, uploads and downloads with their
deadlines, answers checked against ComfyUI's shapes, graph validation, the error tree (errors.py: which faults are
transient) and the persistent `comfy-pipeline server` session (session.py)."""

import importlib

# Loaded on first use: `from comfy_pipeline.comfyui.errors import ...` (the Dagster definitions do this) should
# not pay for requests and websocket-client when nothing talks to a server yet.
_HOMES = {
    "ComfyUIClient": "client", "PromptResult": "client", "ProgressEvent": "events",
    "OutputFile": "files", "outputs": "files", "safe_filename": "files",
    "node_errors_to_list": "rejections", "rejection_from_response": "rejections",
    **{name: "errors" for name in (
        "AuthenticationError", "ComfyUIError", "DownloadError", "ExecutionError", "NodeError", "NoServerConfigured",
        "PromptInterrupted",
        "PromptLost", "ProtocolError", "is_transient", "PromptTimeout", "ServerError", "ServerUnreachable",
        "WorkflowValidationError",
    )},
}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AuthenticationError",
    "NoServerConfigured",
    "ComfyUIClient",
    "ComfyUIError",
    "DownloadError",
    "ExecutionError",
    "NodeError",
    "OutputFile",
    "ProgressEvent",
    "PromptInterrupted",
    "PromptLost",
    "PromptResult",
    "PromptTimeout",
    "ProtocolError",
    "ServerError",
    "ServerUnreachable",
    "WorkflowValidationError",
    "is_transient",
    "node_errors_to_list",
    "outputs",
    "rejection_from_response",
    "safe_filename",
]
