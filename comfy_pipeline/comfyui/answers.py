"""The shapes of the ComfyUI answers the client reads, checked in one place before any code looks inside.

A server (or a proxy in front of it) that answers valid JSON of the wrong shape gets a ProtocolError naming the
endpoint and what was wrong, instead of an AttributeError or KeyError somewhere in a run. Only what the client
uses is declared; anything else a newer server adds is allowed. Pydantic, not Dagster.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from .errors import ProtocolError

__all__ = ["MAX_OUTPUTS_PER_PROMPT", "ProtocolError", "checked"]  # ProtocolError: re-exported, it lives in errors

MAX_OUTPUTS_PER_PROMPT = 64  # no workflow of ours saves more; a history entry listing hundreds is hostile


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _SystemStats(_Open):
    system: dict[str, Any] = {}
    devices: list[dict[str, Any]] = []


class _Queue(_Open):
    queue_running: list[list[Any]]
    queue_pending: list[list[Any]]


class _ExecInfo(_Open):
    queue_remaining: int


class _QueueRemaining(_Open):
    exec_info: _ExecInfo


class _Status(_Open):
    status_str: str | None = None
    completed: bool | None = None
    messages: list[list[Any]] = []


class _HistoryEntry(_Open):
    prompt: list[Any] = []
    outputs: dict[str, dict[str, Any]] = {}
    status: _Status = _Status()


class _PromptAccepted(_Open):
    prompt_id: str | None = None
    number: int | None = None
    node_errors: dict[str, Any] | list[Any] = {}


class _Uploaded(_Open):
    name: str
    subfolder: str = ""
    type: str = "input"


_SHAPES: dict[str, TypeAdapter] = {
    "/system_stats": TypeAdapter(_SystemStats),
    "/queue": TypeAdapter(_Queue),
    "/prompt": TypeAdapter(_QueueRemaining),
    "/object_info": TypeAdapter(dict[str, dict[str, Any]]),
    "/history": TypeAdapter(dict[str, _HistoryEntry]),
    "POST /prompt": TypeAdapter(_PromptAccepted),
    "POST /upload/image": TypeAdapter(_Uploaded),
}


def checked(endpoint: str, answer: Any, server: str) -> Any:
    """`answer` as it came (plain JSON), once it has the shape ComfyUI gives at `endpoint`; else ProtocolError."""
    try:
        _SHAPES[endpoint].validate_python(answer)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the answer"
        raise ProtocolError(
            f"ComfyUI at {server} answered {endpoint} with JSON of the wrong shape ({where}: {first['msg']}; "
            f"{exc.error_count()} problem(s) in all). Is this a ComfyUI server, or is a proxy in the way?",
            status=200,
        ) from None
    if endpoint == "/history":
        for prompt_id, entry in answer.items():
            count = sum(len(v) for node in entry.get("outputs", {}).values() for v in node.values()
                        if isinstance(v, list))
            if count > MAX_OUTPUTS_PER_PROMPT:
                raise ProtocolError(
                    f"ComfyUI at {server} lists {count} output files for prompt {prompt_id}; at most "
                    f"{MAX_OUTPUTS_PER_PROMPT} are accepted, so nothing was downloaded.", status=200,
                )
    return answer
