"""ComfyUI protocol client. No Dagster here: this is usable on its own."""

from .client import ComfyUIClient, PromptResult
from .errors import (
    AuthenticationError,
    ComfyUIError,
    DownloadError,
    ExecutionError,
    NodeError,
    PromptInterrupted,
    PromptLost,
    PromptTimeout,
    ServerError,
    ServerUnreachable,
    WorkflowValidationError,
)
from .events import ProgressEvent
from .files import OutputFile, outputs, safe_filename
from .rejections import node_errors_to_list, rejection_from_response

__all__ = [
    "AuthenticationError",
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
    "ServerError",
    "ServerUnreachable",
    "WorkflowValidationError",
    "node_errors_to_list",
    "outputs",
    "rejection_from_response",
    "safe_filename",
]
