"""Prompt specs: what one image-to-video item asks for, where specs come from, and how prompt files parse.

No Dagster here: the Dagster config classes, the inbox sensor and the CLI all build `PromptSpec`s with
these functions, so every entry point gives the same error for the same bad input.
"""

import json
import stat
import unicodedata
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from comfy_pipeline.workflows.workflow import WorkflowError, load_workflow

IMAGE_WORKFLOW = "z_image_turbo_generation"
VIDEO_WORKFLOW = "ltx2_image_to_video"
MAX_PROMPT_CHARS = 10_000
MAX_PROMPT_FILE_BYTES = 1_000_000
MAX_PROMPTS_PER_FILE = 200  # one run's batch; more belongs in several files (or runs)
MAX_JSON_DEPTH = 20


class PromptError(ValueError):
    """A prompt or prompt file is not usable; the message says what to fix."""


@dataclass(frozen=True)
class PromptSpec:
    text: str
    motion_prompt: str | None = None  # the LTX-2 prompt; defaults to `text`
    negative_prompt: str | None = None  # None: the workflow's own negative prompt
    seed: int = 0
    width: int = 1024
    height: int = 784
    frames: int = 121
    fps: int = 25
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # provenance (source file, ...)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_text(text: Any, what: str = "prompt") -> str:
    """Reject what would waste GPU time or corrupt a graph: empty, huge, control characters."""
    if not isinstance(text, str):
        raise PromptError(f"The {what} must be text, got {type(text).__name__}.")
    stripped = text.strip()
    if not stripped:
        fix = "write what the image should show" if what == "prompt" else "write it, or leave it out"
        raise PromptError(f"The {what} is empty: {fix}.")
    if len(stripped) > MAX_PROMPT_CHARS:
        raise PromptError(
            f"The {what} is {len(stripped):,} characters long; the limit is {MAX_PROMPT_CHARS:,}. Shorten it."
        )
    for ch in stripped:
        if ch not in "\n\t" and unicodedata.category(ch) in ("Cc", "Cs"):
            raise PromptError(
                f"The {what} contains the control character U+{ord(ch):04X}; remove it "
                "(only line breaks and tabs are allowed)."
            )
    return stripped


def image_values(spec: PromptSpec) -> dict[str, Any]:
    """The image workflow's parameter values for `spec`."""
    return {"prompt": spec.text, "seed": spec.seed, "width": spec.width, "height": spec.height}


def edit_values(spec: PromptSpec) -> dict[str, Any]:
    """An image-to-image workflow's parameter values for the prompt its input image was made from (no size: the
    workflow decides the output's, e.g. an upscaler)."""
    values = {"prompt": spec.text, "seed": spec.seed}
    if spec.negative_prompt:
        values["negative_prompt"] = spec.negative_prompt
    return values


def video_values(spec: PromptSpec) -> dict[str, Any]:
    """The video workflow's parameter values for `spec` (without the uploaded image's name)."""
    values = {"prompt": spec.motion_prompt or spec.text, "seed": spec.seed, "frames": spec.frames, "fps": spec.fps}
    if spec.negative_prompt:
        values["negative_prompt"] = spec.negative_prompt
    return values


def check_specs(specs: list[PromptSpec]) -> list[PromptSpec]:
    """`specs` if both workflows accept every text and number in them; else PromptError naming the prompt, the
    parameter, the value and what is allowed. Every entry point calls this before it talks to the server, so
    a bad value costs no GPU time (not even the image of a run whose video settings are wrong).
    A workflow that cannot be loaded raises WorkflowError."""
    image_workflow, video_workflow = load_workflow(IMAGE_WORKFLOW), load_workflow(VIDEO_WORKFLOW)
    for i, spec in enumerate(specs):
        where = f"prompt {i}: " if len(specs) > 1 else ""
        try:
            check_text(spec.text)
            for key in ("motion_prompt", "negative_prompt"):
                if getattr(spec, key) is not None:
                    check_text(getattr(spec, key), key.replace("_", " "))
            image_workflow.validate_values(image_values(spec))
            video_workflow.validate_values({**video_values(spec), "image": "start.png"})
        except (PromptError, WorkflowError) as exc:
            raise PromptError(f"{where}{exc}") from None
    return specs


_FIELD_NAMES = {f.name for f in fields(PromptSpec)} - {"extra"}


def spec_from_mapping(data: Any, where: str = "prompt spec") -> PromptSpec:
    """Build a spec from a JSON object, naming unknown keys and wrong types instead of ignoring them."""
    if isinstance(data, str):
        return PromptSpec(text=check_text(data))
    if not isinstance(data, dict):
        raise PromptError(f"{where}: expected a prompt string or an object with 'text', got {type(data).__name__}.")
    unknown = sorted(set(data) - _FIELD_NAMES)
    if unknown:
        raise PromptError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_FIELD_NAMES)}.")
    if "text" not in data:
        raise PromptError(f"{where}: 'text' (the image prompt) is missing.")
    values: dict[str, Any] = {"text": check_text(data["text"])}
    for key in ("motion_prompt", "negative_prompt"):
        if data.get(key) is not None:
            values[key] = check_text(data[key], key.replace("_", " "))
    for key in ("seed", "width", "height", "frames", "fps"):
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise PromptError(f"{where}: '{key}' must be a whole number, got {value!r}.")
            values[key] = value
    return PromptSpec(**values)


def library_specs() -> list[PromptSpec]:
    """The prompt library shipped with the project: image prompts paired with motion prompts."""
    raw = json.loads(resources.files("comfy_pipeline.data").joinpath("prompt_library.json").read_text("utf-8"))
    return specs_from_seed_prompts(raw, "the prompt library")


def specs_from_seed_prompts(raw: Any, where: str) -> list[PromptSpec]:
    """The seed design's prompts.json shape: {"image_generation": [...], "video_generation": [...]}."""
    if not isinstance(raw, dict) or not isinstance(raw.get("image_generation"), list):
        raise PromptError(f"{where}: expected an object with a list 'image_generation' "
                          "(and optionally 'video_generation').")
    motions = raw.get("video_generation") or []
    if not isinstance(motions, list):
        raise PromptError(f"{where}: 'video_generation' must be a list of motion prompts.")
    specs = []
    for i, item in enumerate(raw["image_generation"]):
        spec = spec_from_mapping(item, f"{where}, image_generation[{i}]")
        if spec.motion_prompt is None and i < len(motions):
            spec = PromptSpec(**{**spec.to_dict(), "motion_prompt": check_text(motions[i], "motion prompt")})
        specs.append(spec)
    if not specs:
        raise PromptError(f"{where}: 'image_generation' is empty; add at least one prompt.")
    return specs


def load_json_bounded(text: str, where: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads for files people and programs drop on us: a clear PromptError for bad JSON and for nesting
    deeper than `max_depth` (which would otherwise end in a RecursionError)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:  # bound the nesting before the parser recurses into it
        if in_string:
            escaped, in_string = (not escaped and char == "\\"), in_string and (escaped or char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > max_depth:
                raise PromptError(f"{where}: JSON nested deeper than {max_depth} levels; "
                                  "this file is not what it should be.")
        elif char in "]}":
            depth -= 1
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PromptError(f"{where}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}.") from None


@dataclass(frozen=True)
class PromptBytes:
    """A prompt file's name and content, already read from wherever it was (an object store's inbox)."""

    name: str
    data: bytes

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix


def check_prompt_file_size(name: str, size: int) -> None:
    """A prompt file above MAX_PROMPT_FILE_BYTES is refused before it is read."""
    if size > MAX_PROMPT_FILE_BYTES:
        raise PromptError(f"{name}: {size:,} bytes is too big for a prompt file "
                          f"(limit {MAX_PROMPT_FILE_BYTES:,}).")


def read_prompt_file(path: Path | PromptBytes) -> list[PromptSpec]:
    """`.txt`: the whole file is one prompt. `.json`: a spec, a list of specs, or the seed's prompts.json.
    Only a regular file (not a FIFO, a device or a folder), at most MAX_PROMPT_FILE_BYTES, at most
    MAX_PROMPTS_PER_FILE prompts. A PromptBytes is parsed by the same rules (its name gives the kind)."""
    if isinstance(path, PromptBytes):
        check_prompt_file_size(path.name, len(path.data))
        data = path.data
    else:
        try:
            info = path.stat()
        except OSError as exc:
            raise PromptError(f"{path.name}: cannot be read ({exc.strerror}).") from None
        if not stat.S_ISREG(info.st_mode):
            raise PromptError(f"{path}: not a regular file; give the path of a .txt or .json prompt file.")
        check_prompt_file_size(path.name, info.st_size)
        data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PromptError(
            f"{path.name}: not valid UTF-8 (byte {exc.start}); save the file as UTF-8."
        ) from None
    if path.suffix.lower() == ".txt":
        try:
            return [PromptSpec(text=check_text(text), extra={"source": path.name})]
        except PromptError as exc:
            raise PromptError(f"{path.name}: {exc}") from None
    if path.suffix.lower() != ".json":
        raise PromptError(f"{path.name}: prompt files must end in .txt (one prompt) or .json (prompt specs).")
    raw = load_json_bounded(text, path.name)
    if isinstance(raw, dict) and "image_generation" in raw:
        specs = specs_from_seed_prompts(raw, path.name)
    elif isinstance(raw, list):
        if not raw:
            raise PromptError(f"{path.name}: the list of prompt specs is empty.")
        specs = [spec_from_mapping(item, f"{path.name}, item {i}") for i, item in enumerate(raw)]
    else:
        specs = [spec_from_mapping(raw, path.name)]
    if len(specs) > MAX_PROMPTS_PER_FILE:
        raise PromptError(f"{path.name}: {len(specs):,} prompts in one file; the limit is {MAX_PROMPTS_PER_FILE} "
                          "(split it into several files).")
    return [PromptSpec(**{**s.to_dict(), "extra": {"source": path.name}}) for s in specs]
