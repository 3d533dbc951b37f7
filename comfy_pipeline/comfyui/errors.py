"""Errors raised by the ComfyUI client.

Every message says what failed and what to do about it, and never contains a credential:
URLs are passed through `redact_url` before they are put in a message.
"""

from dataclasses import dataclass, field


class ComfyUIError(Exception):
    """Base class for everything the ComfyUI client raises."""


class ServerUnreachable(ComfyUIError):
    """The server could not be reached (refused, DNS, TLS, connect timeout)."""

    prompt_started: bool | None = None  # when it went down during a wait: whether the prompt was seen running

    def __init__(self, url: str, reason: str):
        self.url = url
        self.reason = reason
        super().__init__(
            f"ComfyUI server at {url} is not reachable ({reason}). "
            "Check that ComfyUI is running and that the URL (COMFYUI_URL / --comfyui-url) is right."
        )


class NoServerConfigured(ComfyUIError):
    """A deployment's run with no ComfyUI server configured: it must not quietly make placeholder pictures."""

    def __init__(self) -> None:
        super().__init__(
            "No ComfyUI server is configured, and this Dagster instance is a deployment's (PostgreSQL storage or "
            "COMFY_PIPELINE_REQUIRE_SERVER=1), where the offline simulator's placeholder pictures must not pass for "
            "real output. Set COMFYUI_URLS (comma-separated) or COMFYUI_URL to your GPU server(s), or set "
            "COMFYUI_URL=simulator to run the simulator on purpose."
        )


class ServerError(ComfyUIError):
    """The server answered, but not the way the protocol says (HTTP 5xx, bad JSON, ...)."""

    def __init__(self, message: str, status: int | None = None):
        self.status = status
        super().__init__(message)


class AuthenticationError(ComfyUIError):
    """HTTP 401/403 from the server or from the proxy in front of it."""


@dataclass(frozen=True)
class NodeError:
    """One validation problem of one node, as ComfyUI reports it in `node_errors`."""

    node_id: str
    class_type: str
    kind: str  # ComfyUI's error type: value_not_in_list, required_input_missing, ...
    message: str  # human-readable, already translated ("model file 'x' is not in folder ...")
    input_name: str | None = None

    def __str__(self) -> str:
        where = f"node {self.node_id} ({self.class_type})"
        if self.input_name:
            where += f" input '{self.input_name}'"
        return f"{where}: {self.message}"


class WorkflowValidationError(ComfyUIError):
    """The server (or the offline pre-flight) rejected the workflow before running it."""

    def __init__(self, summary: str, errors: list[NodeError] | None = None, workflow: str | None = None):
        self.summary = summary
        self.errors = list(errors or [])
        self.workflow = workflow
        lines = [f"Workflow {workflow!r} was rejected: {summary}" if workflow else f"Workflow was rejected: {summary}"]
        lines += [f"  - {e}" for e in self.errors]
        super().__init__("\n".join(lines))


@dataclass
class ExecutionError(ComfyUIError):
    """A node raised while the prompt ran on the server."""

    prompt_id: str
    node_id: str | None
    node_type: str | None
    exception_type: str
    exception_message: str
    traceback_tail: list[str] = field(default_factory=list)

    def __post_init__(self):
        super().__init__(str(self))

    def __str__(self) -> str:
        tail = "".join(self.traceback_tail).rstrip()
        msg = (
            f"ComfyUI prompt {self.prompt_id} failed in node {self.node_id} ({self.node_type}): "
            f"{self.exception_type}: {self.exception_message.strip()}"
        )
        return f"{msg}\n{tail}" if tail else msg


class PromptInterrupted(ComfyUIError):
    """The prompt was interrupted on the server (by us or by someone else)."""

    def __init__(self, prompt_id: str, node_id: str | None = None):
        self.prompt_id = prompt_id
        self.node_id = node_id
        where = f" at node {node_id}" if node_id else ""
        super().__init__(f"ComfyUI prompt {prompt_id} was interrupted{where}.")


class PromptLost(ComfyUIError):
    """The prompt is in neither the queue nor the history: the server restarted and forgot it."""

    def __init__(self, prompt_id: str, *, resubmitted: bool = False):
        self.prompt_id = prompt_id
        self.resubmitted = resubmitted
        advice = (
            "It had already been submitted again once after the server forgot it, so it is not submitted a third "
            "time: look at the ComfyUI server log for why it keeps restarting."
            if resubmitted else "Submit it again."
        )
        super().__init__(
            f"ComfyUI prompt {prompt_id} is in neither the queue nor the history: "
            f"the server probably restarted and forgot it. {advice}"
        )


class PromptTimeout(ComfyUIError):
    """The prompt did not finish in time; it has been cancelled on the server unless `cancelled` is False."""

    def __init__(self, prompt_id: str, timeout: float, *, cancel_error: str | None = None, queued: bool = False):
        self.prompt_id = prompt_id
        self.timeout = timeout
        self.queued = queued  # it never started: it waited in the server's queue the whole time
        self.cancelled = cancel_error is None
        what = (
            "was cancelled on the server" if cancel_error is None
            else f"could not be cancelled on the server ({cancel_error}); look at its queue, it may still run"
        )
        if queued:
            super().__init__(
                f"ComfyUI prompt {prompt_id} waited {timeout:g} s in the server's queue without starting and {what}. "
                "The server is busy with other work: raise the queue timeout, or share the server through a pool."
            )
        else:
            super().__init__(
                f"ComfyUI prompt {prompt_id} did not finish within {timeout:g} s of starting and {what}. "
                "Raise the prompt timeout if the GPU needs longer."
            )


class DownloadError(ComfyUIError):
    """An output could not be downloaded safely (size limit, short read, bad name)."""
