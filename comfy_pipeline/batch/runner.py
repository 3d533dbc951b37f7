"""Run a batch of workflow jobs on one or several ComfyUI servers and bring their outputs home. No Dagster here.

The GPU is the only expensive thing, so up to `max_in_flight` prompts sit in each server's queue at once:
while we wait for, download and check one prompt, the next is already running. With several servers, each
prompt goes to the server with the least work (our prompts in flight there, or its whole queue when other
clients queued more), and each server's prompts are waited for by a thread of its own, so one slow server
never holds back another. Every graph is pre-flighted before the first submit (a missing model fails in a
second, not after queueing), and anything that stops the batch, including a terminated Dagster run, cancels
the prompts still on the servers.

A prompt the server forgot (it restarted) is submitted once more under the same prompt id: the client posts
nothing for an id the server knows, so it cannot run twice; forgotten a second time, it fails. A server that
stops answering gets no more prompts: its prompts that never started move, under their own ids, to the
servers still answering (it is told to cancel them, should it come back); when no server is left, every
prompt of the batch fails at once instead of one server_down_timeout after another.
"""

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comfy_pipeline.comfyui.errors import (
    ComfyUIError,
    NodeError,
    PromptLost,
    ServerError,
    ServerUnreachable,
    WorkflowValidationError,
    is_transient,
)
from comfy_pipeline.workflows.compat import adapt_to_server
from comfy_pipeline.workflows.preflight import preflight_on_server
from comfy_pipeline.workflows.workflow import Workflow

if TYPE_CHECKING:  # the client (requests, websocket-client) is loaded by whoever makes one, not on import
    from comfy_pipeline.batch.ledger import PromptLedger
    from comfy_pipeline.comfyui.client import ComfyUIClient, ProgressEvent

log = logging.getLogger(__name__)
RESUBMIT_DELAY_S = 0.5  # after a 5xx on POST /prompt: a proxy or server hiccup, give it a moment


@dataclass
class Job:
    key: str  # stable id within the batch, e.g. "prompt 0" or "video 2" (batch/plan.py)
    workflow: Workflow
    values: dict[str, Any]  # workflow parameter values
    filename_prefix: str  # server-side prefix, unique per run: never a cached or overwritten output
    dest_dir: Path
    dest_stem: str  # descriptive local file name without extension
    upload: Path | None = None  # local image to upload; its server name goes to the workflow's image parameter
    prompt_id: str | None = None  # chosen ahead (see queue_ahead): a prompt queued under it is adopted, not re-posted


@dataclass
class JobResult:
    job: Job
    prompt_id: str | None = None
    files: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # upload, queue_wait, execution, download (s)
    cached_nodes: list[str] = field(default_factory=list)
    error: Exception | None = None
    server: str | None = None  # URL of the server it was given to (credentials redacted)

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
    graphs = []
    for job in jobs:
        values = dict(job.values)
        if job.upload is not None:
            values.setdefault(job.workflow.image_input or "image", f"{job.upload.name}")
        graphs.append((job.workflow.name, job.workflow.inject(values, filename_prefix=job.filename_prefix)))
    checked = preflight_on_server(client, graphs)
    for position, report in checked.failing[:1]:  # the first refused job names the cause; nothing is submitted
        job = jobs[position]
        raise WorkflowValidationError(
            f"pre-flight against {client.url} failed for {job.key}; nothing was submitted",
            [
                NodeError(p.node_id, p.class_type, p.kind,
                          f"{p.message.rstrip('.')}. {p.hint}" if p.hint else p.message, p.input_name)
                for p in report.problems
            ],
            workflow=job.workflow.name,
        )
    return checked.object_info


def run_batch(
    clients: "ComfyUIClient | Sequence[ComfyUIClient]",
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
    """Run `jobs` on the server(s), with up to `max_in_flight` prompts queued on each; results in job order.

    `prompt_timeout` counts from the moment a prompt starts executing; `queue_timeout` bounds its wait in the
    server's queue (behind our other prompts, or another run's). Each prompt id is written to `ledger` before it
    is submitted, so a run that dies leaves a record of what it left on which server. `on_result` gets each
    prompt's result as soon as its files are home, while the GPUs work on the next ones (checks overlap them).

    Setting `stop` (from any thread, e.g. a signal handler) cancels the prompts on the servers at once and makes
    run_batch raise BatchInterrupted: a termination is honoured even when the exception Dagster raised for it
    was swallowed (see comfy_pipeline.batch.interrupts).
    """
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
    clients = [clients] if not isinstance(clients, (list, tuple)) else list(clients)
    if not clients:
        raise ValueError("run_batch needs at least one ComfyUI client")
    logger = logger or log  # the Dagster layer passes context.log, so warnings reach the run's event log
    lanes = _open_lanes(clients, jobs, logger)
    batch = _Batch(lanes, [JobResult(job) for job in jobs], max_in_flight, (prompt_timeout, queue_timeout),
                   on_progress, on_result, stop or threading.Event(), logger, ledger)
    return batch.run()


def queue_ahead(client: "ComfyUIClient", jobs: list[Job], ledger: "PromptLedger | None" = None,
                client_id: str | None = None) -> dict[str, str]:
    """Queue `jobs` now, each under its `prompt_id`, so the GPU starts before whoever runs the batch is ready:
    run_batch on the same jobs later adopts them (the client posts nothing for an id the server knows) and
    brings their outputs home; under its client's `client_id`, its WebSocket gets their progress. The caller
    pre-flights them. Stops at the first failure (the batch will meet it again and report it); job key ->
    prompt id of those queued."""
    object_info = client.object_info()
    queued = {}
    for job in jobs:
        if job.prompt_id is None:
            raise ValueError(f"{job.key}: queue_ahead needs the prompt id the batch will adopt")
        result = JobResult(job)
        if _submit(client, result, object_info, ledger=ledger, client_id=client_id) is None:
            log.warning("could not queue %s ahead (%s); its run will queue it itself", job.key, result.error)
            break
        queued[job.key] = job.prompt_id
    return queued


class BatchInterrupted(Exception):
    """The batch was stopped (the run was terminated); its prompts were cancelled on the ComfyUI server."""

    def __init__(self) -> None:
        super().__init__("stopped: the run was interrupted; its prompts were cancelled on the ComfyUI server")


class _Lane:
    """One server of the batch: its client, our prompts on it in submit order, and whether it still answers."""

    def __init__(self, client: "ComfyUIClient", object_info: dict | None):
        self.client, self.object_info = client, object_info
        self.in_flight: deque[_InFlight] = deque()
        self.alive = object_info is not None

    def load(self) -> float:
        """Our prompts in flight, or the server's whole queue when other clients' prompts make it longer."""
        try:
            return max(len(self.in_flight), self.client.queue_remaining())
        except ComfyUIError:
            return float("inf")  # no answer just now: no new prompt; its own wait decides whether it is down


def _open_lanes(clients: list["ComfyUIClient"], jobs: list[Job], logger: logging.Logger) -> list[_Lane]:
    """Pre-flight every job on every server. A bad graph fails the batch; of several servers, one that does not
    answer is left out (the others share its work), but when none answers the batch fails."""
    lanes = []
    for client in clients:
        try:
            lanes.append(_Lane(client, preflight_jobs(client, jobs)))
        except ServerUnreachable as exc:
            if len(clients) == 1:
                raise
            logger.warning(f"{exc} -- leaving it out of this batch; the other servers share its prompts")
            lanes.append(_Lane(client, None))
            unreachable = exc
    if not any(lane.alive for lane in lanes):
        raise unreachable
    return lanes


class _Batch:
    """The dispatcher (the calling thread) hands prompts to servers; one finisher thread per server waits for its
    prompts in order and brings their files home. `cond` guards `pending` and every lane's `in_flight`."""

    def __init__(self, lanes: list[_Lane], results: list[JobResult], max_in_flight: int,
                 timeouts: tuple[float, float | None], on_progress: ProgressCallback | None,
                 on_result: Callable[[JobResult], None] | None, stop: threading.Event, logger: logging.Logger,
                 ledger: "PromptLedger | None"):
        self.lanes, self.results, self.max_in_flight, self.timeouts = lanes, results, max_in_flight, timeouts
        self.on_progress, self.on_result, self.stop = on_progress, on_result, stop
        self.logger, self.ledger = logger, ledger
        self.pending: deque[JobResult] = deque(results)
        self.cond = threading.Condition()
        self.closing = False
        self.failed = threading.Event()  # the batch is being abandoned: cancelled prompts are never resubmitted
        self.halted = _AnyOf(stop, self.failed)
        self.crashed: BaseException | None = None  # an unexpected error in a finisher thread, raised here
        self.down: ServerUnreachable | None = None  # the last server that stopped answering

    def run(self) -> list[JobResult]:
        watcher = _CancelOnStop(self.lanes, self.stop)
        # Named after the calling thread ("<caller>/comfy-finish-0"), so their log lines can be told apart by run.
        caller = threading.current_thread().name
        threads = [threading.Thread(target=self._finish_lane, args=(lane,), daemon=True,
                                    name=f"{caller}/comfy-finish-{i}") for i, lane in enumerate(self.lanes)]
        for thread in threads:
            thread.start()
        try:
            while self._dispatch_one():
                pass
        except BaseException:
            # Also DagsterExecutionInterruptedError / KeyboardInterrupt: nothing may keep running on the GPU.
            self.failed.set()
            for lane in self.lanes:
                for item in list(lane.in_flight):
                    _cancel_quietly(lane.client, item.result.prompt_id)
                lane.client.abort_downloads()  # its partial file is deleted now, not left to the next run
            raise
        finally:
            with self.cond:
                self.closing = True
                self.cond.notify_all()
            watcher.close()
            for thread in threads:
                thread.join(timeout=5)  # after an interrupt their waits end as the cancels land
        return self.results

    def _dispatch_one(self) -> bool:
        """Submit the next prompt where it belongs, or wait for room; False once everything is done."""
        with self.cond:
            self._raise_if_stopped()
            if not self.pending:
                if not any(lane.in_flight for lane in self.lanes):
                    return False
                self.cond.wait(0.2)
                return True
            alive = [lane for lane in self.lanes if lane.alive]
            if not alive:
                _fail_all(self.pending, self.down)
                return True
            room = [lane for lane in alive if len(lane.in_flight) < self.max_in_flight]
            if not room:
                self.cond.wait(0.2)
                return True
        lane = room[0] if len(alive) == 1 else _least_loaded(alive, room)
        with self.cond:
            if lane is None:  # the server with the least work is full: its next free slot beats a longer queue
                self.cond.wait(0.5)
                return True
            if not self.pending or not lane.alive:
                return True
            result = self.pending.popleft()
        result.error, result.server = None, lane.client.url
        moved = result.prompt_id is not None
        submitted = _submit(lane.client, result, lane.object_info, prompt_id=result.prompt_id, ledger=self.ledger)
        with self.cond:
            if submitted is not None:
                if moved:
                    self.logger.warning(f"{result.job.key}: prompt {result.prompt_id} moved to {lane.client.url}")
                lane.in_flight.append(submitted)
            elif isinstance(result.error, ServerUnreachable):
                self._server_down(lane, result.error, [])
                if any(other.alive for other in self.lanes):
                    result.error = None
                    self.pending.appendleft(result)  # it never reached the server; another one takes it
            self.cond.notify_all()
        return True

    def _raise_if_stopped(self) -> None:
        if self.crashed is not None:
            raise self.crashed
        if self.stop.is_set():
            raise BatchInterrupted()

    def _finish_lane(self, lane: _Lane) -> None:
        try:
            while True:
                with self.cond:
                    while not lane.in_flight and not self.closing:
                        self.cond.wait()
                    if not lane.in_flight or self.failed.is_set():
                        return
                    current = lane.in_flight[0]  # stays listed until finished, so an interrupt cancels it too
                _finish(lane.client, current, self.timeouts, self.on_progress, self.halted, self.logger,
                        lane.object_info, self.ledger)
                if self.on_result is not None and current.result.ok:
                    self.on_result(current.result)
                error = current.result.error
                with self.cond:
                    if lane.in_flight and lane.in_flight[0] is current:
                        lane.in_flight.popleft()
                    left_behind: list[_InFlight] = []
                    if isinstance(error, ServerUnreachable) and not self.halted.is_set():
                        left_behind = self._server_down(lane, error, [current, *lane.in_flight])
                        lane.in_flight.clear()
                    self.cond.notify_all()
                for item in left_behind:  # should it come back, it must not run them as well
                    _cancel_quietly(lane.client, item.result.prompt_id)
        except BaseException as exc:  # a bug or on_result failing: the dispatcher raises it in the calling thread
            with self.cond:
                self.crashed = exc
                self.cond.notify_all()

    def _server_down(self, lane: _Lane, error: ServerUnreachable, on_it: list[_InFlight]) -> list[_InFlight]:
        """Called with `cond` held. The server gets no more prompts. Of its prompts, those it never started
        (its queue runs in order, so all behind the first, and the first if never seen running) move to the
        servers still answering; the rest fail. The prompts to cancel there, should it come back."""
        lane.alive = False
        self.down = error
        others = any(other.alive for other in self.lanes)
        moving = []
        for index, item in enumerate(on_it):
            gone = item.result.error
            never_ran = index > 0 or (isinstance(gone, ServerUnreachable) and gone.prompt_started is False)
            if others and never_ran:
                item.result.error = None
                item.result.files.clear()
                moving.append(item.result)
            else:
                item.result.error = error
        self.pending.extendleft(reversed(moving))  # first in line, in their order
        if others:
            self.logger.warning(f"{error} -- it gets no more prompts; {len(moving)} prompt(s) that had not "
                                "started there move to the other server(s) under their own ids")
        return [item for item in on_it if item.result.prompt_id]


class _AnyOf:
    """Set when any of its events is (the caller's stop, or the batch failing)."""

    def __init__(self, *events: threading.Event):
        self._events = events

    def is_set(self) -> bool:
        return any(event.is_set() for event in self._events)


def _least_loaded(alive: list[_Lane], room: list[_Lane]) -> _Lane | None:
    """The server with the least work, if it has room for one more prompt of ours; None: wait for it."""
    loads = {id(lane): lane.load() for lane in alive}
    best = min(loads.values())
    if best == float("inf"):  # none answered /prompt just now: the submit will tell who is really down
        return min(room, key=lambda lane: len(lane.in_flight))
    candidates = [lane for lane in room if loads[id(lane)] == best]
    return min(candidates, key=lambda lane: len(lane.in_flight)) if candidates else None


class _CancelOnStop:
    """A thread that cancels every in-flight prompt as soon as `stop` is set, so that waits blocked in other
    threads return (interrupted) instead of lasting until the prompt timeout."""

    def __init__(self, lanes: list[_Lane], stop: threading.Event):
        self._lanes, self._stop = lanes, stop
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="comfy-cancel-on-stop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed.is_set():
            if self._stop.wait(0.2):
                for lane in self._lanes:
                    for item in list(lane.in_flight):
                        _cancel_quietly(lane.client, item.result.prompt_id)
                return

    def close(self) -> None:
        self._closed.set()


def _submit(client: "ComfyUIClient", result: JobResult, object_info: dict, prompt_id: str | None = None,
            ledger: "PromptLedger | None" = None, record: bool = True,
            client_id: str | None = None) -> _InFlight | None:
    """Upload, inject and queue the job (under `prompt_id` when given: a resubmit, or a prompt moved from a
    server that stopped answering); None with result.error on failure. The id goes to `ledger` first, with
    the server it is for, unless `record` is False (a resubmit to the same server)."""
    job = result.job
    try:
        values = dict(job.values)
        if job.upload is not None:
            started = time.monotonic()
            values[job.workflow.image_input or "image"] = client.upload_image(job.upload)
            result.timings["upload"] = time.monotonic() - started
        graph, _ = adapt_to_server(job.workflow.inject(values, filename_prefix=job.filename_prefix), object_info)
        submitted_at = time.time()
        prompt_id = prompt_id or job.prompt_id or str(uuid.uuid4())
        if ledger is not None and record:
            ledger.record(prompt_id, client.url)  # before the submit: a crash right after it leaves the id behind
        result.prompt_id = _submit_once(client, graph, prompt_id, client_id)
        log.info("queued %s as ComfyUI prompt %s", job.key, result.prompt_id)
        return _InFlight(result, submitted_at)
    except (ComfyUIError, ValueError, OSError) as exc:
        result.error = exc
        return None


def _submit_once(client: "ComfyUIClient", graph: dict, prompt_id: str, client_id: str | None = None) -> str:
    """Submit under our own prompt id; after a 5xx answer, try once more. Not blind: the client looks the id up
    first and posts nothing if the server did queue it, so the prompt can never run twice."""
    try:
        return client.submit(graph, prompt_id=prompt_id, client_id=client_id)
    except ServerError as exc:
        if not is_transient(exc):  # a 4xx or a wrong answer repeats itself
            raise
        log.warning("POST /prompt for %s failed (%s); trying once more under the same id", prompt_id, exc)
        time.sleep(RESUBMIT_DELAY_S)
        return client.submit(graph, prompt_id=prompt_id, client_id=client_id)


def _finish(client: "ComfyUIClient", item: _InFlight, timeouts: tuple[float, float | None],
            on_progress: ProgressCallback | None, stop: "threading.Event | _AnyOf", logger: logging.Logger,
            object_info: dict, ledger: "PromptLedger | None") -> None:
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
            item = _resubmit(client, item, logger, object_info, ledger)
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
            if stop.is_set():  # the batch is ending: no download may start after its downloads were aborted
                result.error = BatchInterrupted()
                return
            suffix = Path(file.filename).suffix.lower()
            name = f"{job.dest_stem}{'' if index == 0 else f'_{index}'}{suffix}"
            result.files.append(client.download(file, job.dest_dir, filename=name))
        result.timings["download"] = time.monotonic() - download_started
    except PromptLost as exc:
        result.error = PromptLost(exc.prompt_id, resubmitted=True)
    except (ComfyUIError, OSError) as exc:
        result.error = exc


def _resubmit(client: "ComfyUIClient", item: _InFlight, logger: logging.Logger, object_info: dict,
              ledger: "PromptLedger | None") -> _InFlight | None:
    """Submit a forgotten prompt once more under its own id (the client posts nothing if the server knows it)."""
    result = item.result
    logger.warning(f"ComfyUI forgot prompt {result.prompt_id} of {result.job.key} (server restart?); "
                   "submitting it once more under the same id")
    return _submit(client, result, object_info, prompt_id=result.prompt_id, ledger=ledger, record=False)


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
