"""Run a batch of workflow jobs on a ComfyUI server and bring their outputs home. No Dagster here.

The GPU is the only expensive thing, so up to `max_in_flight` prompts sit in the server's queue at once:
while we wait for, download and check one prompt, the next is already running. Every graph is pre-flighted
before the first submit (a missing model fails in a second, not after queueing), and anything that stops
the batch, including a terminated Dagster run, cancels the prompts still on the server.

A prompt the server forgot (it restarted) is submitted once more under the same prompt id: the client posts
nothing for an id the server knows, so it cannot run twice; forgotten a second time, it fails. A server that
stops answering fails every prompt of the batch at once instead of one server_down_timeout after another.
"""

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comfy_pipeline.comfyui.errors import (
    ComfyUIError, NodeError, PromptLost, ServerError, ServerUnreachable, WorkflowValidationError,
)
from comfy_pipeline.workflows.compat import adapt_to_server
from comfy_pipeline.workflows.preflight import preflight
from comfy_pipeline.workflows.workflow import Workflow

if TYPE_CHECKING:  # the client (requests, websocket-client) is loaded by whoever makes one, not on import
    from comfy_pipeline.batch.ledger import PromptLedger
    from comfy_pipeline.comfyui.client import ComfyUIClient, ProgressEvent

log = logging.getLogger(__name__)
RESUBMIT_DELAY_S = 0.5  # after a 5xx on POST /prompt: a proxy or server hiccup, give it a moment


@dataclass
class Job:
    key: str  # stable id within the batch, e.g. "p0"
    workflow: Workflow
    values: dict[str, Any]  # workflow parameter values
    filename_prefix: str  # server-side prefix, unique per run: never a cached or overwritten output
    dest_dir: Path
    dest_stem: str  # descriptive local file name without extension
    upload: Path | None = None  # local image to upload; its server name goes to the `image` parameter


@dataclass
class JobResult:
    job: Job
    prompt_id: str | None = None
    files: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # upload, queue_wait, execution, download (s)
    cached_nodes: list[str] = field(default_factory=list)
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.files)


@dataclass
class _InFlight:
    result: JobResult
    submitted_at: float


ProgressCallback = Callable[[Job, "ProgressEvent"], None]


def preflight_jobs(client: "ComfyUIClient", jobs: list[Job]) -> dict:
    """Check every graph against the server's /object_info (pre-flight adapts it to the server's version, as
    the submit does) before any GPU time is spent; the /object_info, for the submits."""
    object_info = client.object_info()
    version = client.version()
    for job in jobs:
        values = dict(job.values)
        if job.upload is not None:
            values.setdefault("image", f"{job.upload.name}")
        graph = job.workflow.inject(values, filename_prefix=job.filename_prefix)
        report = preflight(graph, object_info, workflow=job.workflow.name, source=client.url, server_version=version)
        if not report.ok:
            raise WorkflowValidationError(
                f"pre-flight against {client.url} failed for {job.key}; nothing was submitted",
                [
                    NodeError(p.node_id, p.class_type, p.kind,
                              f"{p.message.rstrip('.')}. {p.hint}" if p.hint else p.message, p.input_name)
                    for p in report.problems
                ],
                workflow=job.workflow.name,
            )
    return object_info


def run_batch(
    client: "ComfyUIClient",
    jobs: list[Job],
    *,
    max_in_flight: int = 4,
    prompt_timeout: float = 900.0,
    queue_timeout: float | None = None,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    logger: logging.Logger | None = None,
    ledger: "PromptLedger | None" = None,
    on_result: Callable[[JobResult], None] | None = None,
) -> list[JobResult]:
    """Run `jobs` with up to `max_in_flight` prompts queued on the server; results in job order.

    `prompt_timeout` counts from the moment a prompt starts executing; `queue_timeout` bounds its wait in the
    server's queue (behind our other prompts, or another run's). Each prompt id is written to `ledger` before it
    is submitted, so a run that dies leaves a record of what it left on the server. `on_result` gets each
    prompt's result as soon as its files are home, while the GPU works on the next ones (checks overlap it).

    Setting `stop` (from any thread, e.g. a signal handler) cancels the prompts on the server at once and makes
    run_batch raise BatchInterrupted: a termination is honoured even when the exception Dagster raised for it
    was swallowed (see comfy_pipeline.batch.interrupts).
    """
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
    object_info = preflight_jobs(client, jobs)
    results = [JobResult(job) for job in jobs]
    pending = deque(results)
    in_flight: deque[_InFlight] = deque()
    stop = stop or threading.Event()
    logger = logger or log  # the Dagster layer passes context.log, so warnings reach the run's event log
    watcher = _CancelOnStop(client, stop, in_flight)
    try:
        while pending or in_flight:
            while pending and len(in_flight) < max_in_flight:
                if stop.is_set():
                    raise BatchInterrupted()
                result = pending.popleft()
                submitted = _submit(client, result, object_info, ledger=ledger)
                if submitted is not None:
                    in_flight.append(submitted)
                elif isinstance(result.error, ServerUnreachable):
                    _fail_all(pending, result.error)
            if in_flight:
                current = in_flight[0]  # stays listed until finished, so an interrupt cancels it too
                _finish(client, current, (prompt_timeout, queue_timeout), on_progress, stop, logger, object_info)
                in_flight.popleft()
                if on_result is not None and current.result.ok:
                    on_result(current.result)
                if stop.is_set():
                    raise BatchInterrupted()
                if isinstance(current.result.error, ServerUnreachable):
                    _fail_all(pending, current.result.error)
                    while in_flight:  # waiting for each would take server_down_timeout apiece
                        item = in_flight.popleft()
                        item.result.error = current.result.error
                        _cancel_quietly(client, item.result.prompt_id)
    except BaseException:
        # Also DagsterExecutionInterruptedError / KeyboardInterrupt: nothing may keep running on the GPU.
        for item in list(in_flight):
            _cancel_quietly(client, item.result.prompt_id)
        raise
    finally:
        watcher.close()
    return results


class BatchInterrupted(Exception):
    """The batch was stopped (the run was terminated); its prompts were cancelled on the server."""

    def __init__(self) -> None:
        super().__init__("stopped: the run was interrupted; its prompts were cancelled on the ComfyUI server")


class _CancelOnStop:
    """A thread that cancels every in-flight prompt as soon as `stop` is set, so that a wait() blocked in the
    main thread returns (interrupted) instead of lasting until the prompt timeout."""

    def __init__(self, client: "ComfyUIClient", stop: threading.Event, in_flight: deque):
        self._client, self._stop, self._in_flight = client, stop, in_flight
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="comfy-cancel-on-stop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed.is_set():
            if self._stop.wait(0.2):
                for item in list(self._in_flight):
                    _cancel_quietly(self._client, item.result.prompt_id)
                return

    def close(self) -> None:
        self._closed.set()


def _submit(client: "ComfyUIClient", result: JobResult, object_info: dict, prompt_id: str | None = None,
            ledger: "PromptLedger | None" = None) -> _InFlight | None:
    """Upload, inject and queue the job (under `prompt_id` when given); None with result.error on failure."""
    job = result.job
    try:
        values = dict(job.values)
        if job.upload is not None:
            started = time.monotonic()
            values["image"] = client.upload_image(job.upload)
            result.timings["upload"] = time.monotonic() - started
        graph, _ = adapt_to_server(job.workflow.inject(values, filename_prefix=job.filename_prefix), object_info)
        submitted_at = time.time()
        if prompt_id is None:
            prompt_id = str(uuid.uuid4())
            if ledger is not None:
                ledger.record(prompt_id)  # before the submit: a crash right after it still leaves the id behind
        result.prompt_id = _submit_once(client, graph, prompt_id)
        log.info("queued %s as ComfyUI prompt %s", job.key, result.prompt_id)
        return _InFlight(result, submitted_at)
    except (ComfyUIError, ValueError, OSError) as exc:
        result.error = exc
        return None


def _submit_once(client: "ComfyUIClient", graph: dict, prompt_id: str) -> str:
    """Submit under our own prompt id; after a 5xx answer, try once more. Not blind: the client looks the id up
    first and posts nothing if the server did queue it, so the prompt can never run twice."""
    try:
        return client.submit(graph, prompt_id=prompt_id)
    except ServerError as exc:
        if not (exc.status or 0) >= 500:
            raise
        log.warning("POST /prompt for %s failed (%s); trying once more under the same id", prompt_id, exc)
        time.sleep(RESUBMIT_DELAY_S)
        return client.submit(graph, prompt_id=prompt_id)


def _finish(client: "ComfyUIClient", item: _InFlight, timeouts: tuple[float, float | None],
            on_progress: ProgressCallback | None, stop: threading.Event, logger: logging.Logger,
            object_info: dict) -> None:
    result = item.result
    job = result.job
    callback = (lambda event: on_progress(job, event)) if on_progress else None
    try:
        timeout, queue_timeout = timeouts
        try:
            outcome = client.wait(result.prompt_id, timeout, on_progress=callback, queue_timeout=queue_timeout)
        except PromptLost:
            if stop.is_set():  # we deleted it from the queue ourselves
                raise
            item = _resubmit(client, item, logger, object_info)
            if item is None:
                return
            outcome = client.wait(result.prompt_id, timeout, on_progress=callback, queue_timeout=queue_timeout)
        started = outcome.started_at or item.submitted_at
        result.timings["queue_wait"] = max(0.0, started - item.submitted_at)
        result.timings["execution"] = max(0.0, (outcome.finished_at or time.time()) - started)
        result.cached_nodes = list(outcome.cached_nodes)
        wanted = {spec.node for spec in job.workflow.outputs.values()}
        files = [f for f in outcome.outputs if f.node_id in wanted and f.type == "output"]
        if not files:
            raise ComfyUIError(
                f"ComfyUI prompt {result.prompt_id} finished but output node(s) {sorted(wanted)} produced no files"
            )
        download_started = time.monotonic()
        for index, file in enumerate(files):
            suffix = Path(file.filename).suffix.lower()
            name = f"{job.dest_stem}{'' if index == 0 else f'_{index}'}{suffix}"
            result.files.append(client.download(file, job.dest_dir, filename=name))
        result.timings["download"] = time.monotonic() - download_started
    except PromptLost as exc:
        result.error = PromptLost(exc.prompt_id, resubmitted=True)
    except (ComfyUIError, OSError) as exc:
        result.error = exc


def _resubmit(client: "ComfyUIClient", item: _InFlight, logger: logging.Logger, object_info: dict) -> _InFlight | None:
    """Submit a forgotten prompt once more under its own id (the client posts nothing if the server knows it)."""
    result = item.result
    logger.warning(f"ComfyUI forgot prompt {result.prompt_id} of {result.job.key} (server restart?); "
                   "submitting it once more under the same id")
    return _submit(client, result, object_info, prompt_id=result.prompt_id)


def _fail_all(pending: deque[JobResult], error: Exception) -> None:
    while pending:
        pending.popleft().error = error


def _cancel_quietly(client: "ComfyUIClient", prompt_id: str | None) -> None:
    if not prompt_id:
        return
    try:
        client.cancel(prompt_id)
    except Exception as exc:  # best effort while already failing; the original error matters more
        log.warning("could not cancel ComfyUI prompt %s: %s", prompt_id, exc)
