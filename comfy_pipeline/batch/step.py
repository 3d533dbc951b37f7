"""One GPU step of a run (the images, or the videos), from server survey to checked outputs. No Dagster here.

`run_gpu_step` does what the image and the video asset share: load the workflow, ask the servers who they are,
cancel what dead runs left on them, run every prompt through the batch runner (each output checked as soon as
it is home, while the GPU works on the next), and describe every output and every failed prompt. It returns a
StepOutcome; the Dagster layer turns that into metadata, check results and failures.

An output that fails a content check (black, flat, frozen, off-start, silent) is a broken output like one that
fails a file check: it is kept where it was written and reported. With `content_retries`, its prompt is queued
again with the next seed (on any of the servers), up to that many times; the attempt kept is in `items`, the
earlier ones in `rejected`.

It raises only for what stops the whole step: a bad workflow or bad prompt ids (StepInputError, WorkflowError),
a server fault before or during the batch (ComfyUIError: ask `is_transient`), or BatchInterrupted.
"""

import dataclasses
import importlib
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from comfy_pipeline.batch import ledger, outputs, plan
from comfy_pipeline.batch.inspection import Inspection, OutputShape, describe, inspect_image, inspect_video
from comfy_pipeline.batch.interrupts import interrupt_flag
from comfy_pipeline.batch.progress import ProgressLogger
from comfy_pipeline.batch.records import FailedPrompt, GenerationManifest, OutputItem, ServerInfo
from comfy_pipeline.batch.report import batch_figures, failure_lines, output_rows, verdict
from comfy_pipeline.batch.runner import BatchInterrupted, JobResult, run_batch
from comfy_pipeline.comfyui.errors import ComfyUIError, is_transient
from comfy_pipeline.media import CONTENT_CHECKS, ContentThresholds, MediaError, probe_image
from comfy_pipeline.storage import ObjectMissing, Store, is_store_url, open_uri
from comfy_pipeline.workflows.prompts import PromptSpec
from comfy_pipeline.workflows.workflow import Workflow, WorkflowError, load_workflow


class StepInputError(ValueError):
    """The step was given something it cannot run (bad prompt ids): permanent, nothing was submitted."""


class Servers(Protocol):
    """What a step needs of its ComfyUI server(s): the Dagster resource (defs.resources.ComfyUIResource) is one."""

    output_store: Store
    max_in_flight: int
    prompt_timeout: float
    queue_timeout: float

    def get_clients(self) -> list: ...

    def server_info(self) -> ServerInfo: ...


MAX_LINES = 20  # broken outputs named in a failure's text; the listing names them all


@dataclass(frozen=True)
class OutputKind:
    """What differs between the image and the video step; everything else is one code path."""

    folder: str  # "images", "videos": the run folder's subfolder, and plan.gpu_job's kind
    # (output, shape asked for, workflow, file thresholds, content thresholds, start image) -> Inspection
    inspect: Callable[[Path, OutputShape, Workflow, Any, ContentThresholds, Path | None], Inspection]


# Through the module's names, so that a test can watch the inspections.
IMAGES = OutputKind("images", lambda *args: inspect_image(*args))
VIDEOS = OutputKind("videos", lambda *args: inspect_video(*args))


@dataclass(frozen=True)
class Source:
    """One prompt of the step: its index in the run ("prompt 3" -> "video 3"), its spec, the image to animate."""

    index: int
    spec: PromptSpec
    image: Path | None = None  # a local file (an image kept on an object store is fetched to one first)
    attempt: int = 1  # 2, 3, ...: queued again after a content check failed (content_retries)
    image_uri: str = ""  # where the image is kept when that is an object store (s3://...): what records name

    @property
    def image_name(self) -> str | None:
        return self.image_uri or (None if self.image is None else str(self.image))

    def again(self, max_seed: int | None = None) -> "Source":
        """The next attempt: the same prompt with the next seed (0 after the workflow's largest)."""
        seed = self.spec.seed + 1 if max_seed is None or self.spec.seed < max_seed else 0
        return dataclasses.replace(self, spec=dataclasses.replace(self.spec, seed=seed), attempt=self.attempt + 1)


@dataclass(frozen=True)
class StepOutcome:
    """Everything a finished step made and missed. `items` are in prompt order, as are `failed`."""

    server: ServerInfo
    workflow_load_s: float
    items: tuple[OutputItem, ...]
    failed: tuple[FailedPrompt, ...]
    errors: tuple[BaseException, ...]  # of the failed prompts, in the same order
    rejected: tuple[OutputItem, ...] = ()  # attempts that failed a content check and were made again

    @property
    def broken(self) -> list[OutputItem]:
        """Outputs that came home but failed a check (kept for inspection)."""
        return [item for item in self.items if not item.passed]

    @property
    def transient(self) -> bool:
        """Every prompt failed for a reason a later attempt may not meet."""
        return bool(self.errors) and all(is_transient(e) for e in self.errors)

    def summary(self) -> str:
        """`1 of 3 prompt(s) failed:` and one line per failed prompt (never a server traceback)."""
        count = len(self.items) + len(self.failed)
        return f"{len(self.failed)} of {count} prompt(s) failed:\n" + "\n".join(f.line() for f in self.failed)

    def phases(self) -> dict[str, float]:
        """Seconds per phase, summed over the step: connection, workflow load, then each output's (the rejected
        attempts' too: they took GPU time)."""
        found = {"connection": self.server.connection_s, "workflow_load": self.workflow_load_s}
        for item in (*self.items, *self.rejected):
            for phase, seconds in item.timings_s.items():
                found[phase] = round(found.get(phase, 0.0) + seconds, 4)
        return found

    def incomplete(self) -> str:
        """What is missing or broken, for a step that fails after recording everything good: each failed
        prompt, and each broken output with the reasons (the files are kept where they were written)."""
        broken = self.broken
        lines = [self.summary()] if self.failed else []
        if broken:
            lines.append(f"{len(broken)} output(s) failed their checks (kept for inspection):")
            lines += [broken_line(item) for item in broken[:MAX_LINES]]
            if len(broken) > MAX_LINES:
                lines.append(f"... and {len(broken) - MAX_LINES} more (see the items listing)")
        lines.append(f"The other {len(self.items) - len(broken)} output(s) were checked and recorded.")
        return "\n".join(lines)

    def previews(self, count: int) -> str:
        """Markdown: the first `count` outputs' previews, each under its job, verdict and prompt."""
        shown = [f"**{item.job}, {'passed' if item.passed else 'FAILED'}: {md_cell(item.prompt)[:120]}**\n\n"
                 f"{item.preview}" for item in self.items[:count]]
        more = len(self.items) - count
        return "\n\n".join(shown + ([f"({more} more outputs: see items_json)"] if more > 0 else []))

    def write_listing(self, run_folder: outputs.RunFolder, name: str) -> str:
        """The items report, `reports/<name>_items.json`: every output and failed prompt, with the server's
        traceback of each failed one. A retried step rewrites it. Its path (or URI)."""
        return run_folder.write_json("reports", f"{name}_items.json", self.manifest().listing_json(), replace=True)

    def facts(self) -> dict[str, Any]:
        """Facts of the whole batch for the UI, the same few however many prompts: the servers, the workflow, the
        batch figures (report.batch_figures), per-output means of the phases, and the distinct sizes made."""
        server, items = self.server, self.items
        first = items[0] if items else None
        return {
            "backend": server.backend, "comfyui_url": ", ".join(sorted({i.comfyui_url for i in items})),
            "comfyui_version": server.comfyui_version or "?", "gpu": server.gpu or "?",
            "vram_total_gb": server.vram_total_gb, "workflow": first.workflow if first else "",
            "workflow_sha256": first.workflow_sha256 if first else "", **self.check_counts(),
            "size_bytes_total": sum(i.size_bytes for i in items),
            **{f"{phase}_s_mean": _mean([i.timings_s.get(phase, 0.0) for i in items])
               for phase in ("queue_wait", "execution", "download")},
            **output_shapes(items),
        }

    def check_counts(self) -> dict[str, int | float]:
        """The batch's plottable numbers (report.batch_figures): counts, measure means and worst values."""
        return batch_figures(self.manifest())

    def rows(self, asset: str = "") -> list[dict[str, Any]]:
        """One row per output, regenerated attempt and failed prompt (report.output_rows)."""
        return output_rows(asset, self.manifest())

    def outputs_per_server(self) -> dict[str, int]:
        servers = sorted({item.comfyui_url for item in self.items})
        return {url: sum(item.comfyui_url == url for item in self.items) for url in servers}

    def problems(self) -> list[str]:
        """One line per failed output (its path and reason) and per failed prompt (its error)."""
        return failure_lines(self.rows())

    def verdict(self) -> str:
        """What the step's check says: `2 of 4 outputs failed: <path>: <reason>; ...`, or that all passed."""
        return verdict(self.rows())

    def manifest(self) -> GenerationManifest:
        first = self.items[0] if self.items else None
        return GenerationManifest(
            items=self.items, failed=self.failed, backend=self.server.backend, comfyui_url=self.server.url,
            workflow=first.workflow if first else "", workflow_sha256=first.workflow_sha256 if first else "",
            timings_s=self.phases(), rejected=self.rejected,
        )


def prompt_label(item: OutputItem) -> str:
    """`prompt 0 ('a red fox')`: which prompt an output is of."""
    text = item.prompt if len(item.prompt) <= 60 else item.prompt[:57] + "..."
    return f"{item.job} ({text!r})"


def broken_line(item: OutputItem) -> str:
    """`prompt 0 ('a red fox'): /out/00_a-red-fox_seed0.png: image is black: ...; ...`"""
    reasons = "; ".join(c.message for c in item.checks if not c.passed)
    return f"{prompt_label(item)}: {item.path}: {reasons}"


# A black or flat picture compresses to a tiny file: with a failed content check, a failed size check is the
# same bad draw, not a bad file.
SYMPTOMS = ("file_size",)


def content_failure(item: OutputItem) -> bool:
    """The output failed a content check and is otherwise a good file: a new seed may do better. A file that is
    broken (wrong format, does not decode, wrong dimensions or length) is a server or transfer fault, not a bad
    draw, and is not made again."""
    failed = [c for c in item.checks if not c.passed]
    return (any(c.name in CONTENT_CHECKS for c in failed)
            and all(c.name in CONTENT_CHECKS or c.name in SYMPTOMS for c in failed))


def run_gpu_step(kind: OutputKind, sources: Sequence[Source], *, workflow_name: str | Path, prompt_ids: Sequence[str],
                 servers: Servers, thresholds: Any, run_id: str, run_folder: outputs.RunFolder,
                 run_ended: Callable[[str], bool], log: Any,
                 on_server: Callable[[ServerInfo], None] | None = None,
                 content: ContentThresholds = ContentThresholds(), content_retries: int = 0,
                 workflow_folder: Path | None = None, fixed: Mapping[str, Any] | None = None,
                 output_subfolder: str = "", workflow_kind: str = "") -> StepOutcome:
    """Run every source through the kind's workflow on `servers`, check each output against `thresholds`
    (ImageThresholds or VideoThresholds) and `content` (the workflow's skip_checks left out) and describe them
    all, the failed prompts included. A prompt whose output failed a content check is queued again with the next
    seed, up to `content_retries` times. `run_ended` says whether another run has ended (its prompts left on a
    server are then cancelled); `log` is a logger (Dagster's context.log); `on_server` hears who the servers are
    before any prompt is queued. The workflow is looked up in the workflows folders, or in `workflow_folder` (a
    component's own); `fixed` are parameter values for every prompt, over the prompts' own; `output_subfolder`
    keeps an asset's outputs apart from others' of the same kind in the run folder (and on the server);
    `workflow_kind`: the kind the step runs (a workflow of another kind, named in run config, is refused).
    Files are made and checked in the run folder's staging folder, then published to the run folder (on an
    object store: uploaded whole) before they are described; images kept on an object store are fetched first."""
    if content_retries < 0:
        raise StepInputError(f"content_retries must be 0 or more, got {content_retries}")
    loading_started = time.monotonic()
    workflow = load_workflow(workflow_name, directory=workflow_folder)
    if workflow_kind and workflow.kind and workflow.kind != workflow_kind:
        raise WorkflowError(f"workflow {workflow.name!r} is {workflow.kind}, but this step runs {workflow_kind} "
                            "workflows: name one of that kind")
    workflow_load_s = round(time.monotonic() - loading_started, 4)
    server = servers.server_info()
    for problem in server.unreachable:
        log.warning(f"not answering, left out of this step: {problem}")
    if on_server is not None:
        on_server(server)
    with run_folder.staging() as staging:
        return _run_rounds(kind, sources, workflow, workflow_load_s, prompt_ids, servers, server, run_id, run_folder,
                           staging, run_ended, log, thresholds, content, content_retries, fixed, output_subfolder)


def _run_rounds(kind: OutputKind, sources: Sequence[Source], workflow: Workflow, workflow_load_s: float,
                prompt_ids: Sequence[str], servers: Servers, server: ServerInfo, run_id: str,
                run_folder: outputs.RunFolder, staging: Path, run_ended: Callable[[str], bool], log: Any,
                thresholds: Any, content: ContentThresholds, content_retries: int, fixed: Mapping[str, Any] | None,
                output_subfolder: str) -> StepOutcome:
    """The step's rounds: every source, then the content retries, until none is left."""
    folder = outputs.kind_dir(staging, kind.folder, output_subfolder)
    cancel_orphans(servers, server, run_ended, log)
    ids = chosen_prompt_ids(prompt_ids, len(sources))
    sources = fetch_images(sources, staging / "inputs", servers.output_store)
    _warm_up_report_imports()
    kept: dict[int, OutputItem | FailedPrompt] = {}  # by source index: the attempt each prompt ends with
    errors: dict[int, BaseException] = {}
    rejected: list[OutputItem] = []
    round_sources, round_ids = list(sources), ids
    max_seed = workflow.params["seed"].maximum if "seed" in workflow.params else None
    with ThreadPoolExecutor(max_workers=2) as pool:
        while round_sources:
            made = _run_round(kind, round_sources, round_ids, workflow, servers, server, run_id, folder, pool,
                              thresholds, content, log, fixed or {}, output_subfolder,
                              lambda file: run_folder.publish(staging, file))
            again = []
            for source, found in made:
                if isinstance(found, OutputItem) and content_failure(found) and source.attempt <= content_retries:
                    rejected.append(found)
                    retry = source.again(max_seed)
                    log.warning(f"{broken_line(found)} -- queueing it again with seed {retry.spec.seed} "
                                f"(content retry {source.attempt} of {content_retries})")
                    again.append(retry)
                    continue
                if isinstance(found, OutputItem):
                    kept[source.index] = found
                else:
                    kept[source.index], errors[source.index] = found
            round_sources, round_ids = again, [None] * len(again)  # a new prompt each: new ids
    order = [s.index for s in sources]
    items = tuple(kept[i] for i in order if isinstance(kept[i], OutputItem))
    failed = tuple(kept[i] for i in order if isinstance(kept[i], FailedPrompt))
    return StepOutcome(server, workflow_load_s, items, failed, tuple(errors[i] for i in order if i in errors),
                       tuple(rejected))


def _run_round(kind: OutputKind, sources: Sequence[Source], ids: Sequence[str | None], workflow: Workflow,
               servers: Servers, server: ServerInfo, run_id: str, folder: Path, pool: ThreadPoolExecutor,
               thresholds: Any, content: ContentThresholds, log: Any, fixed: Mapping[str, Any],
               subfolder: str, publish: Callable[[Path], str]) -> list[tuple[Source, Any]]:
    """One batch of the step: each source with its described output, or (its FailedPrompt, the error). Each
    output is checked, then published (`publish`: its final path or URI), while the GPU works on the next."""
    jobs = [plan.gpu_job(kind.folder, s.index, s.spec, s.image, workflow, run_id, folder, ids[n], attempt=s.attempt,
                         fixed=fixed, subfolder=subfolder) for n, s in enumerate(sources)]
    source_of = {job.key: source for job, source in zip(jobs, sources)}
    checking = {}

    def check_and_publish(file: Path, shape: OutputShape, image: Path | None) -> tuple[Inspection, str]:
        return kind.inspect(file, shape, workflow, thresholds, content, image), publish(file)

    def check_when_home(result: JobResult) -> None:  # while the GPU works on the next prompts
        source = source_of[result.job.key]
        shape = OutputShape.of(workflow, result.job.values)
        checking[result.job.key] = pool.submit(check_and_publish, result.files[0], shape, source.image)

    results = _run(servers, server, jobs, run_id, check_when_home, log)
    made: list[tuple[Source, Any]] = []
    for source, result in zip(sources, results):
        if result.ok:  # every output was handed to the checks
            found, stored_as = checking[result.job.key].result()
            made.append((source, describe(source.spec, source.image_name, result, workflow, server, found,
                                          attempt=source.attempt, stored_as=stored_as)))
        else:
            failure = FailedPrompt.of(result.job.key, source.spec, result.error, result.prompt_id, result.server)
            made.append((source, (failure, result.error)))
    return made


def sources_from_images(images: GenerationManifest, asset: str = "generated_image") -> list[Source]:
    """The sources of a step that works on images: each image of `images` (the value of `asset`) that passed its
    checks, under its prompt's index."""
    usable = [item for item in images.items if item.passed]
    if not usable:
        run = images.source.run_id if images.source else "?"
        broken = [broken_line(item) for item in images.items]
        why = ":\n" + "\n".join(broken[:MAX_LINES]) if broken else "."
        raise StepInputError(f"No usable input image: every image of {asset} (run {run}) failed its "
                             f"checks{why}")
    return [_source(int(item.job.rsplit(" ", 1)[-1]), item.spec, item.path) for item in usable]


def sources_from_files(spec: PromptSpec, paths: Sequence[str]) -> list[Source]:
    """The video step's sources from image files the run config names: every local one is probed before any
    prompt is queued (one on an object store when it is fetched, still before any is queued)."""
    sources = [_source(i, spec, raw) for i, raw in enumerate(paths)]
    for source in sources:
        if source.image is not None:
            _probe_input(source.image, source.image_name)
    return sources


def _source(index: int, spec: PromptSpec, image: str) -> Source:
    if is_store_url(image):
        return Source(index, spec, image_uri=image)
    return Source(index, spec, Path(image).expanduser())


def _probe_input(image: Path, name: str | None) -> None:
    try:
        probe_image(image)
    except MediaError as exc:
        where = f" ({name})" if name and name != str(image) else ""
        raise StepInputError(f"input image cannot be used{where}: {exc}. Give the path (or s3:// URI) of a PNG, "
                             "JPEG or WebP image.") from None


def fetch_images(sources: Sequence[Source], folder: Path, output_store: Store) -> list[Source]:
    """The sources with every image kept on an object store fetched into `folder` (streamed) and probed. One in
    another bucket is fetched through the output store's endpoint."""
    fetched = []
    for source in sources:
        if source.image is None and source.image_uri:
            key = output_store.key_of(source.image_uri)
            store = output_store
            try:
                if key is None:
                    store, key = open_uri(source.image_uri, endpoint_url=getattr(output_store, "endpoint_url", None))
                image = store.get_file(key, folder)
            except ObjectMissing:
                raise StepInputError(f"input image {source.image_uri} does not exist. Give the URI of an image "
                                     "that does.") from None
            _probe_input(image, source.image_uri)
            source = dataclasses.replace(source, image=image)
        fetched.append(source)
    return fetched


def output_shapes(items: Sequence[OutputItem]) -> dict[str, str]:
    """The distinct sizes (and, for videos, frames and fps) of the outputs, as text: one value when all agree."""
    def distinct(values) -> str:
        return ", ".join(dict.fromkeys(v for v in values if v)) or "?"

    shapes = {"output_sizes": distinct(f"{i.facts['width']}x{i.facts['height']}" for i in items
                                       if "width" in i.facts and "height" in i.facts)}
    if any("frame_count" in i.facts for i in items):
        shapes["output_frames"] = distinct(f"{i.facts.get('frame_count')} frames @ {i.facts.get('fps')} fps"
                                           for i in items)
    return shapes


def _mean(values: Sequence[float]) -> float:
    return round(sum(values) / len(values), 4) if values else 0.0


def md_table(header: list[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table, its cells made safe (no `|`, no line breaks)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def chosen_prompt_ids(given: Sequence[str], count: int) -> list[str | None]:
    """The prompt ids chosen ahead (config `prompt_ids`), one per prompt; None each when none were given."""
    from comfy_pipeline.comfyui.client import is_canonical_uuid  # loaded by the step's client already

    if not given:
        return [None] * count
    bad = [i for i in given if not is_canonical_uuid(i)]
    if len(given) != count or bad:
        raise StepInputError(
            f"config prompt_ids: give one lowercase UUID per prompt ({count}), or none; got {len(given)}"
            + (f", of which not UUIDs: {bad[:3]}" if bad else ""))
    return list(given)


def cancel_orphans(servers: Servers, server: ServerInfo, run_ended: Callable[[str], bool], log: Any) -> None:
    """Clean up after dead runs before queueing our own work: their prompts on these servers (batch.ledger) and
    their partial downloads in the output folder."""
    for client in servers.get_clients():
        if client.url not in server.servers:
            continue  # not answering: swept once it is back
        found = ledger.cancel_orphans(servers.output_store, client.url, client.cancel, run_ended)
        for dead_run in sorted({e.run_id for e in found}):
            ids = [e.prompt_id for e in found if e.run_id == dead_run]
            log.warning(f"run {dead_run} died with {len(ids)} prompt(s) on {client.url}; cancelled them "
                        "there: " + ", ".join(ids))
    for part in outputs.sweep_unfinished(servers.output_store, run_ended):
        log.info(f"removed {part}, a partial output a dead run left behind")


def _run(servers: Servers, server: ServerInfo, jobs: list, run_id: str, on_result: Callable[[JobResult], None],
         log: Any) -> list[JobResult]:
    clients = [c for c in servers.get_clients() if c.url in server.servers]  # those that answered
    record = ledger.PromptLedger(servers.output_store, run_id)
    try:
        with interrupt_flag() as stop:
            results = run_batch(
                clients, jobs, max_in_flight=servers.max_in_flight, prompt_timeout=servers.prompt_timeout,
                queue_timeout=servers.queue_timeout, on_progress=ProgressLogger(log), stop=stop,
                logger=log, ledger=record, on_result=on_result,
            )
    except (BatchInterrupted, ComfyUIError, WorkflowError):
        record.close()  # nothing of ours is left running: run_batch cancels its prompts when it fails
        raise
    # Not on an interrupt it did not see through (KeyboardInterrupt, Dagster's): the record is left for the sweep.
    record.close()
    for result in results:
        if result.ok:
            via = f" on {result.server}" if len(clients) > 1 else ""
            log.info(f"{result.job.key}: {result.files[0]} (prompt {result.prompt_id}{via})")
        else:
            log.error(f"{result.job.key}: {result.error}")
    return results


def _warm_up_report_imports() -> None:
    """Import pandas (for the report) in the background while the GPU works, instead of after it."""
    if "pandas" not in sys.modules:
        threading.Thread(target=importlib.import_module, args=("pandas",), daemon=True).start()

