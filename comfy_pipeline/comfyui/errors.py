"""Errors raised by the ComfyUI client: one tree, and whether a fault is transient decided here only.

    ComfyUIError                       base of everything the client raises
    +-- ServerUnreachable        [T]   refused, DNS, TLS, connect timeout, stopped answering mid-wait
    +-- ServerError              [T*]  answered, but not as the protocol says (*transient when HTTP 5xx)
    |   +-- ProtocolError              valid JSON of the wrong shape (asking again gets the same answer)
    +-- AuthenticationError            HTTP 401/403 from the server or a proxy in front of it
    +-- NoServerConfigured             a deployment's run with no server configured
    +-- WorkflowValidationError        the graph was rejected before running (server or offline pre-flight)
    +-- ExecutionError                 a node raised while the prompt ran
    +-- PromptInterrupted              the prompt was interrupted on the server
    +-- PromptLost               [T]   the server forgot the prompt (it restarted)
    +-- PromptTimeout                  the prompt did not finish in time (cancelled)
    +-- DownloadError                  an output could not be downloaded safely

[T]: transient, a later attempt may not meet it: `is_transient(exc)` (or `exc.transient`) is what the batch
runner and the Dagster assets ask, so that retrying is decided in one place. Everything else is permanent:
bad input, a bad graph, a node that raises, a server that answers in the wrong shape.

Every message says what failed and what to do about it, and never contains a credential:
URLs are passed through `redact_url` before they are put in a message.
"""

from dataclasses import dataclass, field


class ComfyUIError(Exception):
    """Base class for everything the ComfyUI client raises."""

    transient: bool = False  # see the tree above


def is_transient(error: BaseException | None) -> bool:
    """A server fault that a later attempt may not meet (unreachable, restarted, 5xx); False for anything else."""
    return isinstance(error, ComfyUIError) and error.transient


class ServerUnreachable(ComfyUIError):
    """The server could not be reached (refused, DNS, TLS, connect timeout).

    `prompt_started`, when it went down during a wait: whether the prompt was seen running (a prompt never
    seen running may move to another server); None when it went down outside a wait."""

    transient = True

    def __init__(self, url: str, reason: str, *, prompt_started: bool | None = None):
        self.url = url
        self.reason = reason
        self.prompt_started = prompt_started
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

    @property
    def transient(self) -> bool:  # a proxy or server hiccup; a 4xx or a wrong answer repeats itself
        return (self.status or 0) >= 500


class ProtocolError(ServerError):
    """The server answered, but not in ComfyUI's shape. Not transient: asking again gets the same answer."""

    @property
    def transient(self) -> bool:
        return False


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


MAX_TRACEBACK_FRAMES = 40  # the server's traceback is kept for the items report; a hostile one stays bounded
MAX_FRAME_CHARS = 4000


@dataclass
class ExecutionError(ComfyUIError):
    """A node raised while the prompt ran on the server.

    Its message (what a person reads in a check, a report row, a run failure) is the exception's type and
    message and the node; ComfyUI's Python traceback (server file paths, `^^^^` lines) is kept apart in
    `server_traceback`, which only the items report (JSON) records."""

    prompt_id: str
    node_id: str | None
    node_type: str | None
    exception_type: str
    exception_message: str
    server_traceback: list[str] = field(default_factory=list)  # ComfyUI's format_tb lines, last frames

    def __post_init__(self):
        frames = self.server_traceback[-MAX_TRACEBACK_FRAMES:]
        self.server_traceback = [str(frame)[:MAX_FRAME_CHARS] for frame in frames]
        super().__init__(str(self))

    def __str__(self) -> str:
        return (
            f"ComfyUI prompt {self.prompt_id} failed in node {self.node_id} ({self.node_type}): "
            f"{self.exception_type}: {self.exception_message.strip()}"
        )


class PromptInterrupted(ComfyUIError):
    """The prompt was interrupted on the server (by us or by someone else)."""

    def __init__(self, prompt_id: str, node_id: str | None = None):
        self.prompt_id = prompt_id
        self.node_id = node_id
        where = f" at node {node_id}" if node_id else ""
        super().__init__(f"ComfyUI prompt {prompt_id} was interrupted{where}.")


class PromptLost(ComfyUIError):
    """The prompt is in neither the queue nor the history: the server restarted and forgot it."""

    transient = True

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
