"""The records that cross a layer: what a step learned about its servers, each output with its checks, each
failed prompt, and the manifests the assets hand downstream. No Dagster here.

Frozen dataclasses inside the program; JSON only at the edges (the manifests the IO manager stores, the items
listing, the reports), through `to_json()` / `from_json()`. `from_json` reads what any earlier version wrote: a
key it did not write yet gets its default, a key a later version adds is ignored.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from comfy_pipeline.settings import SIMULATOR  # the backend is named as run config names it
from comfy_pipeline.workflows.prompts import PromptSpec

COMFYUI = "comfyui"
FACT_KEYS = ("width", "height", "format", "duration_s", "fps", "frame_count", "codec", "container")


def cell(value: Any) -> Any:
    """A value a JSON/CSV cell can hold as it is."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def spec_json(spec: PromptSpec) -> dict[str, Any]:
    """A prompt spec as the manifests record it: its values, not its provenance (`extra`)."""
    return {k: v for k, v in spec.to_dict().items() if k != "extra"}


def spec_from_json(raw: Mapping[str, Any]) -> PromptSpec:
    known = {f.name for f in fields(PromptSpec)}
    return PromptSpec(**{k: v for k, v in raw.items() if k in known})


@dataclass(frozen=True)
class ServerInfo:
    """The server(s) of a step, from /system_stats. With several servers, `url`, `gpu` and `comfyui_version`
    list each one's, and `unreachable` names those that did not answer (the batch leaves them out)."""

    backend: str  # SIMULATOR or COMFYUI
    url: str
    servers: tuple[str, ...]  # the URLs that answered
    comfyui_version: str | None = None
    gpu: str | None = None
    vram_total_gb: float = 0.0
    vram_free_gb: float = 0.0
    unreachable: tuple[str, ...] = ()
    connection_s: float = 0.0

    @classmethod
    def combine(cls, each: Sequence["ServerInfo"], unreachable: Sequence[str], connection_s: float) -> "ServerInfo":
        """One record for the servers that answered (each described on its own)."""
        def joined(values) -> str:  # distinct, in order
            return ", ".join(dict.fromkeys(str(v) for v in values))

        return cls(
            backend=SIMULATOR if any(i.backend == SIMULATOR for i in each) else COMFYUI,
            url=", ".join(i.url for i in each),
            servers=tuple(i.url for i in each),
            comfyui_version=joined(i.comfyui_version for i in each),
            gpu=joined(i.gpu for i in each),
            vram_total_gb=round(sum(i.vram_total_gb for i in each), 2),
            vram_free_gb=round(sum(i.vram_free_gb for i in each), 2),
            unreachable=tuple(unreachable),
            connection_s=round(connection_s, 4),
        )

    @property
    def simulated(self) -> bool:
        return self.backend == SIMULATOR

    def announcement(self) -> str:
        """What a run says once about where it runs: a simulator's pictures must not pass for model output."""
        if self.simulated:
            return (f"backend: simulator -- the ComfyUI at {self.url} is the offline simulator: its pictures are "
                    "placeholders, not model output. Set COMFYUI_URL to a real GPU server for real ones.")
        return f"ComfyUI {self.comfyui_version} at {self.url} on {self.gpu}"

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "url": self.url, "servers": list(self.servers),
                "comfyui_version": self.comfyui_version, "gpu": self.gpu, "vram_total_gb": self.vram_total_gb,
                "vram_free_gb": self.vram_free_gb, "unreachable": list(self.unreachable),
                "connection_s": self.connection_s}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "ServerInfo":
        return cls(backend=raw.get("backend", "?"), url=raw.get("url", ""), servers=tuple(raw.get("servers") or ()),
                   comfyui_version=raw.get("comfyui_version"), gpu=raw.get("gpu"),
                   vram_total_gb=raw.get("vram_total_gb", 0.0), vram_free_gb=raw.get("vram_free_gb", 0.0),
                   unreachable=tuple(raw.get("unreachable") or ()), connection_s=raw.get("connection_s", 0.0))


@dataclass(frozen=True)
class CheckResult:
    """One check of one output, with values a JSON or CSV cell holds as they are."""

    name: str
    passed: bool
    value: Any
    expected: Any
    message: str

    @classmethod
    def of(cls, check: Any) -> "CheckResult":
        """From a media check (comfy_pipeline.media.Check), whose values may be any type."""
        return cls(check.name, bool(check.passed), cell(check.value), cell(check.expected), check.message)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "value": self.value, "expected": self.expected,
                "message": self.message}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "CheckResult":
        return cls(raw["name"], bool(raw["passed"]), raw.get("value"), raw.get("expected"), raw.get("message", ""))


@dataclass(frozen=True)
class OutputItem:
    """One output at home: what was asked, where it was made, the file, its checks and its facts."""

    job: str  # "prompt 3", "video 3": the same prompt's outputs
    prompt: str
    spec: PromptSpec
    path: str
    checks: tuple[CheckResult, ...]
    workflow: str = ""
    workflow_sha256: str = ""
    prompt_id: str | None = None
    backend: str = "?"
    comfyui_url: str = ""  # the server that made it (credentials redacted)
    comfyui_version: str | None = None
    gpu: str | None = None
    size_bytes: int = 0
    sha256: str = ""
    timings_s: Mapping[str, float] = field(default_factory=dict)  # upload, queue_wait, execution, download, ...
    cached_nodes: tuple[str, ...] = ()
    facts: Mapping[str, Any] = field(default_factory=dict)  # width, height, format, fps, ... as probed
    input_image: str | None = None  # the picture a video was made from
    measures: Mapping[str, float | None] = field(default_factory=dict)  # content measures: mean_luma, motion, ...
    attempt: int = 1  # 2, 3, ... when earlier outputs of the prompt failed a content check (content_retries)
    # The size the workflow was asked for ("1280x704"; "any" where it has no size parameter, e.g. an upscaler);
    # "": not recorded (older manifests), the prompt spec's size is shown.
    requested_size: str = ""
    preview: str = ""  # markdown for the UI; not recorded in the JSON

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def seed(self) -> int:
        return self.spec.seed

    def to_json(self) -> dict[str, Any]:
        raw = {
            "job": self.job, "prompt": self.prompt, "spec": spec_json(self.spec), "seed": self.spec.seed,
            "requested_size": self.requested_size or f"{self.spec.width}x{self.spec.height}", "workflow": self.workflow,
            "workflow_sha256": self.workflow_sha256, "prompt_id": self.prompt_id, "backend": self.backend,
            "comfyui_url": self.comfyui_url, "comfyui_version": self.comfyui_version, "gpu": self.gpu,
            "path": self.path, "size_bytes": self.size_bytes, "sha256": self.sha256,
            "timings_s": dict(self.timings_s), "cached_nodes": list(self.cached_nodes),
            "checks": [c.to_json() for c in self.checks], "measures": dict(self.measures), "attempt": self.attempt,
            **self.facts,
        }
        if self.input_image is not None:
            raw["input_image"] = self.input_image
        return raw

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "OutputItem":
        spec = spec_from_json(raw.get("spec") or {"text": raw["prompt"], "seed": raw.get("seed", 0)})
        return cls(
            job=raw["job"], prompt=raw.get("prompt", spec.text), spec=spec, path=raw["path"],
            checks=tuple(CheckResult.from_json(c) for c in raw.get("checks") or ()),
            workflow=raw.get("workflow", ""), workflow_sha256=raw.get("workflow_sha256", ""),
            prompt_id=raw.get("prompt_id"), backend=raw.get("backend", "?"), comfyui_url=raw.get("comfyui_url", ""),
            comfyui_version=raw.get("comfyui_version"), gpu=raw.get("gpu"), size_bytes=raw.get("size_bytes", 0),
            sha256=raw.get("sha256", ""), timings_s=dict(raw.get("timings_s") or {}),
            cached_nodes=tuple(raw.get("cached_nodes") or ()),
            facts={k: raw[k] for k in FACT_KEYS if k in raw}, input_image=raw.get("input_image"),
            measures=dict(raw.get("measures") or {}), attempt=int(raw.get("attempt", 1)),
            requested_size=str(raw.get("requested_size") or ""),
        )


def error_facts(error: BaseException | None) -> tuple[str, str | None]:
    """(exception type, "node (class)") of a failure; the node is None when the error names none."""
    node = getattr(error, "node_id", None)
    where = f"{node} ({getattr(error, 'node_type', None) or '?'})" if node else None
    return type(error).__name__, where


@dataclass(frozen=True)
class FailedPrompt:
    """A prompt that produced no output: what it was, where it ran and why it failed.

    `error` is what a person reads (type, message, node); `server_traceback`, ComfyUI's Python traceback when
    a node raised, goes only into the items report (`to_json(with_traceback=True)`)."""

    job: str
    prompt: str
    spec: PromptSpec
    error: str
    error_type: str = "Exception"
    comfyui_node: str | None = None  # "57:3 (KSampler)"
    prompt_id: str | None = None
    comfyui_url: str | None = None
    server_traceback: tuple[str, ...] = ()

    @classmethod
    def of(cls, job: str, spec: PromptSpec, error: BaseException | None, prompt_id: str | None,
           server: str | None) -> "FailedPrompt":
        error_type, node = error_facts(error)
        return cls(job=job, prompt=spec.text, spec=spec, error=str(error), error_type=error_type, comfyui_node=node,
                   prompt_id=prompt_id, comfyui_url=server,
                   server_traceback=tuple(getattr(error, "server_traceback", None) or ()))

    def line(self) -> str:
        """`prompt 0 ('a red fox'): ComfyUI prompt <id> failed in node 57:3 (KSampler): ...`"""
        text = self.prompt if len(self.prompt) <= 60 else self.prompt[:57] + "..."
        return f"{self.job} ({text!r}): {self.error}"

    def to_json(self, *, with_traceback: bool = False) -> dict[str, Any]:
        raw = {"job": self.job, "prompt": self.prompt, "spec": spec_json(self.spec), "prompt_id": self.prompt_id,
               "comfyui_url": self.comfyui_url, "error": self.error, "error_type": self.error_type,
               "comfyui_node": self.comfyui_node}
        if with_traceback and self.server_traceback:
            raw["server_traceback"] = list(self.server_traceback)
        return raw

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "FailedPrompt":
        spec = spec_from_json(raw.get("spec") or {"text": raw["prompt"]})
        return cls(job=raw["job"], prompt=raw.get("prompt", spec.text), spec=spec, error=raw.get("error", ""),
                   error_type=raw.get("error_type", "Exception"), comfyui_node=raw.get("comfyui_node"),
                   prompt_id=raw.get("prompt_id"), comfyui_url=raw.get("comfyui_url"),
                   server_traceback=tuple(raw.get("server_traceback") or ()))


@dataclass(frozen=True)
class Lineage:
    """Which run's materialization an input came from, and how (this run, a parent run, the latest)."""

    run_id: str
    how: str

    def to_json(self) -> dict[str, str]:
        return {"run_id": self.run_id, "how": self.how}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> "Lineage | None":
        return cls(raw["run_id"], raw["how"]) if raw else None


@dataclass(frozen=True)
class PromptManifest:
    """The `prompt` asset's value: the prompt specs of the run."""

    prompts: tuple[PromptSpec, ...]
    source: Lineage | None = None  # set by the IO manager when read back

    def to_json(self) -> dict[str, Any]:
        return {"prompts": [spec.to_dict() for spec in self.prompts]}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "PromptManifest":
        return cls(tuple(spec_from_json(p) for p in raw["prompts"]), Lineage.from_json(raw.get("source")))


@dataclass(frozen=True)
class GenerationManifest:
    """The value of `generated_image` and `ltx2_video`: every output with its checks, every failed prompt.

    `rejected` holds the earlier attempts of prompts that were regenerated under `content_retries`: outputs that
    failed a content check (their checks say why); `items` holds the attempt each prompt kept."""

    items: tuple[OutputItem, ...]
    failed: tuple[FailedPrompt, ...] = ()
    backend: str = "?"
    comfyui_url: str = ""
    workflow: str = ""
    workflow_sha256: str = ""
    timings_s: Mapping[str, float] = field(default_factory=dict)  # summed per phase over the step
    source: Lineage | None = None  # set by the IO manager when read back
    rejected: tuple[OutputItem, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"items": [i.to_json() for i in self.items], "failed": [f.to_json() for f in self.failed],
                "rejected": [r.to_json() for r in self.rejected], "backend": self.backend,
                "comfyui_url": self.comfyui_url, "workflow": self.workflow, "workflow_sha256": self.workflow_sha256,
                "timings_s": dict(self.timings_s)}

    def listing_json(self) -> dict[str, Any]:
        """The items report: the outputs, the failed prompts (with the server's traceback) and the rejected
        attempts."""
        return {"items": [i.to_json() for i in self.items],
                "failed": [f.to_json(with_traceback=True) for f in self.failed],
                "rejected": [r.to_json() for r in self.rejected]}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "GenerationManifest":
        return cls(
            items=tuple(OutputItem.from_json(i) for i in raw.get("items") or ()),
            failed=tuple(FailedPrompt.from_json(f) for f in raw.get("failed") or ()),
            backend=raw.get("backend", "?"), comfyui_url=raw.get("comfyui_url", ""),
            workflow=raw.get("workflow", ""), workflow_sha256=raw.get("workflow_sha256", ""),
            timings_s=dict(raw.get("timings_s") or {}), source=Lineage.from_json(raw.get("source")),
            rejected=tuple(OutputItem.from_json(r) for r in raw.get("rejected") or ()),
        )


@dataclass(frozen=True)
class ReportManifest:
    """The `validation_report` asset's value: where the report is and its counts."""

    json: str
    csv: str
    passed: int
    failed: int

    def to_json(self) -> dict[str, Any]:
        return {"json": self.json, "csv": self.csv, "passed": self.passed, "failed": self.failed}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "ReportManifest":
        return cls(raw["json"], raw["csv"], int(raw["passed"]), int(raw["failed"]))
