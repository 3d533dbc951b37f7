"""The shapes of the ComfyUI answers the client reads, checked in one place before any code looks inside.

A server (or a proxy in front of it) that answers valid JSON of the wrong shape gets a ProtocolError naming the
endpoint and what was wrong, instead of an AttributeError or KeyError somewhere in a run. Only what the client
uses is declared; anything else a newer server adds is allowed. Pydantic, not Dagster.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, model_validator

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


class _FileRef(_Open):
    filename: str
    subfolder: str = ""
    type: str = "output"


FILE_KEYS = ("images", "gifs", "videos", "audio")  # the keys output nodes list their files under


class _NodeOutput(_Open):
    """One node's outputs: the file keys hold file references; any other list item that names a `filename` is
    taken for a file too (see files.outputs), so it must be one."""

    images: list[_FileRef] = []
    gifs: list[_FileRef] = []
    videos: list[_FileRef] = []
    audio: list[_FileRef] = []

    @model_validator(mode="after")
    def _other_files(self) -> "_NodeOutput":
        for key, value in (self.model_extra or {}).items():
            for index, item in enumerate(value if isinstance(value, list) else []):
                if isinstance(item, dict) and "filename" in item:
                    _inner(_FILE_REF, item, f"{key}.{index}")
        return self


def _inner(shape: TypeAdapter, value: Any, where: str) -> None:
    """Check a value the outer model cannot type by itself, naming where it sits (pydantic would not)."""
    try:
        shape.validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        inside = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"{where}{'.' + inside if inside else ''}: {first['msg']}") from None


class _Cached(_Open):
    nodes: list[str | int] = []


class _Failed(_Open):
    node_id: str | int | None = None
    node_type: str | None = None
    exception_type: str | None = None
    exception_message: str | None = None
    traceback: list[str] = []


class _Interrupted(_Open):
    node_id: str | int | None = None


_MESSAGE_DATA = {"execution_cached": TypeAdapter(_Cached), "execution_error": TypeAdapter(_Failed),
                 "execution_interrupted": TypeAdapter(_Interrupted)}


class _Status(_Open):
    status_str: str | None = None
    completed: bool | None = None
    messages: list[tuple[str, dict[str, Any]]] = []  # [event, data] pairs, as the WebSocket sent them

    @model_validator(mode="after")
    def _message_data(self) -> "_Status":
        for index, (kind, data) in enumerate(self.messages):
            if kind in _MESSAGE_DATA:
                _inner(_MESSAGE_DATA[kind], data, f"messages.{index}.1")
        return self


class _HistoryEntry(_Open):
    prompt: list[Any] = []
    outputs: dict[str, _NodeOutput] = {}
    status: _Status  # ComfyUI has written it since 2023; the outcome of a prompt is read from it


_FILE_REF = TypeAdapter(_FileRef)


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
    "/ws": TypeAdapter(_HistoryEntry),  # a finished prompt's entry, as pieced together from WebSocket events
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
