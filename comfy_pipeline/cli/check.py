"""`comfy-pipeline check`: the design document's test runner for a ComfyUI deployment, on top of the Dagster jobs.

Every test is one run of a pipeline job, executed in-process on a real Dagster instance (DAGSTER_HOME when
set), so a terminal check and a scheduled run take the same code path. The runs overlap (check_runs.py): the
next test starts as soon as the previous one has its prompts on the server, so the GPU works on one test's
prompt while other runs start up or check their outputs. Results are checkpointed as each run finishes
(`--resume` continues an interrupted check: tests whose runs were still in flight run again), three
consecutive failures (in the order runs finish) stop the check from starting further tests, and the JSON
report lists every test with its outputs, checks, errors and per-phase timings.

Exit codes: 0 all passed, 1 a test failed, 2 usage error or server unreachable.
"""

import argparse
import atexit
import contextlib
import gc
import json
import math
import os
import signal
import stat
import sys
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from comfy_pipeline import settings
from comfy_pipeline.batch import ledger, outputs
from comfy_pipeline.batch.breaker import THRESHOLD
from comfy_pipeline.batch.records import GenerationManifest, ServerInfo
from comfy_pipeline.batch.report import PASSED, REGENERATED, output_rows
from comfy_pipeline.cli.check_runs import RunWindow, WindowOutcome, sigterm_as_keyboard_interrupt, tagged_stderr
from comfy_pipeline.cli.checkpoints import CheckpointError, CheckpointStore
from comfy_pipeline.comfyui.client import ComfyUIClient
from comfy_pipeline.comfyui.redaction import redact_url, scrub
from comfy_pipeline.comfyui.session import SessionError
from comfy_pipeline.storage import is_store_url
from comfy_pipeline.workflows.prompts import (
    IMAGE_WORKFLOW,
    MAX_PROMPT_FILE_BYTES,
    VIDEO_WORKFLOW,
    PromptError,
    PromptSpec,
    check_specs,
    check_text,
    library_specs,
    load_json_bounded,
    specs_from_seed_prompts,
)
from comfy_pipeline.workflows.workflow import WorkflowError, admit_user_workflow, load_workflow

TEST_TYPES = ("all", "connection-only", "image-only", "video-only", "full-pipeline")
JOB_FOR_TEST_TYPE = {
    "connection": "comfyui_connection_job",
    "image": "image_generation_job",
    "video": "video_generation_job",
    "pipeline": "image_to_video_job",
}
PHASES = ("connection", "workflow_load", "upload", "queue_wait", "execution", "download", "validation")
# Runs in flight at once: one on the GPU, one queued behind it, one starting up or checking its outputs.
# COMFY_PIPELINE_CHECK_RUNS_IN_FLIGHT=1 runs one test after another (the bench measures both).
MAX_RUNS_IN_FLIGHT = 3
# Tests whose image prompts are queued before Dagster loads: as many as the circuit breaker's threshold, so a
# broken server gets no more prompts than the breaker lets fail. Once the first of them has succeeded (and again
# whenever a test passes) the server is known to work and the queue is topped up: every image-only test's prompt,
# and this many pipeline tests ahead (each pipeline test's video goes behind whatever image prompts are queued
# then: a short lead keeps the pipeline runs from waiting behind the whole check's images).
QUEUE_AHEAD = THRESHOLD
STATUS_POLL_S = 0.05  # how often the check asks whether the first prompt queued ahead has ended
CANCEL_WAIT_S = 15.0  # how long a stopped check waits for its cancelled prompts to leave the server
QUEUE_AHEAD_ENV = "COMFY_PIPELINE_CHECK_QUEUE_AHEAD"  # 0: none (each run queues its own, as without overlap)
RUNS_IN_FLIGHT_ENV = "COMFY_PIPELINE_CHECK_RUNS_IN_FLIGHT"


class UsageError(Exception):
    """Bad arguments or input files: exit 2."""


@dataclass
class Test:
    name: str
    type: str  # connection | image | video | pipeline
    spec: PromptSpec | None = None
    image: Path | None = None
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))  # chosen ahead: its prompts are queued ahead
    prompt_ids: list[str] = field(default_factory=list)  # image prompts queued ahead under these ids
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # ... and this client id: the run's socket


@dataclass
class TestResult:
    name: str
    type: str
    success: bool
    duration: float
    run_id: str | None = None
    outputs: list[str] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # the validation report's: one per output, verdict first
    errors: list[str] = field(default_factory=list)
    performance: dict[str, float] = field(default_factory=dict)
    backend: str | None = None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "check",
        help="test a ComfyUI deployment end to end (connection, image, video, full pipeline)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--test-type", choices=TEST_TYPES, default="all")
    p.add_argument("--comfyui-url",
                   help="ComfyUI server; wins over COMFYUI_URLS and COMFYUI_URL. Unset: the first of COMFYUI_URLS, "
                   "else COMFYUI_URL, else a running `comfy-pipeline server` session, else the embedded simulator")
    # A string default goes through type=float too: a bad TEST_TIMEOUT is a usage error, not silently ignored.
    p.add_argument("--timeout", type=float, default=os.environ.get("TEST_TIMEOUT", "900"),
                   help="seconds one prompt may take on the server (env TEST_TIMEOUT; default 900)")
    p.add_argument("--output-dir", default=os.environ.get("COMFY_PIPELINE_OUTPUT_DIR", "comfy_outputs"))
    p.add_argument("--prompt", action="append", default=[], help="an image prompt (repeatable)")
    p.add_argument("--prompts-file", type=Path,
                   help="a prompts.json as in the design document: image_generation + video_generation lists")
    p.add_argument("--image", type=Path, help="start image for the video-only test")
    p.add_argument("--seed", type=int)
    p.add_argument("--frames", type=int, help="video length in frames (8n+1)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted check without redoing finished tests")
    p.add_argument("--report", action="store_true", help="summarise the progress of the last check and exit")
    p.add_argument("--state-dir", type=Path, help="where progress is kept (default .comfy_pipeline/)")
    p.add_argument("--json", action="store_true", help="print the JSON report on stdout")
    p.add_argument("--workflows", metavar="IMAGE[,VIDEO]",
                   help="the workflows to test with: names in the workflows folder(s) (workflows/, or "
                   "$COMFY_PIPELINE_WORKFLOWS_DIR), or paths to workflow files of your own anywhere, each with its "
                   ".params.json beside it; e.g. smoke_image,smoke_video: the model-free pair that tests a "
                   "deployment before its model files are in place")
    p.add_argument("--image-min-bytes", type=_non_negative_int, help="smallest acceptable image (default 10240)")
    p.add_argument("--video-min-bytes", type=_non_negative_int, help="smallest acceptable video (default 102400)")
    p.add_argument("--content-retries", type=_non_negative_count,
                   help="queue a prompt whose output failed a content check (black, flat, frozen, off-start, "
                   "silent) again with the next seed, up to this many times (default 0: report it as failed)")
    p.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    p.set_defaults(func=run)


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of bytes, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more bytes, got {value}")
    return value


def _non_negative_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def chosen_workflows(args: argparse.Namespace) -> tuple[str, str]:
    """(image workflow, video workflow) from --workflows, the official ones by default, as this check's runs
    name them in their run config: a file of the user's own outside the workflows folders is admitted for the
    runs of this process (admit_user_workflow; idempotent)."""
    names = [n.strip() for n in (args.workflows or "").split(",") if n.strip()]
    if len(names) > 2:
        raise UsageError(f"--workflows takes IMAGE[,VIDEO], got {len(names)} names: {args.workflows}")
    return (admit_user_workflow(names[0]) if names else IMAGE_WORKFLOW,
            admit_user_workflow(names[1]) if len(names) > 1 else VIDEO_WORKFLOW)


def run(args: argparse.Namespace) -> int:
    secrets = settings.credentials().secrets
    try:
        return _run(args)
    except (UsageError, PromptError, WorkflowError, CheckpointError, SessionError, settings.SettingError) as exc:
        _error(scrub(str(exc), secrets), args)
        return 2
    except Exception as exc:  # one clear line unless --verbose; the runs themselves are in the Dagster log
        _error(scrub(f"{type(exc).__name__}: {exc}", secrets), args)
        return 1


def _run(args: argparse.Namespace) -> int:
    state_dir = args.state_dir or Path(os.environ.get("COMFY_PIPELINE_STATE_DIR", ".comfy_pipeline"))
    store = CheckpointStore(state_dir / "check-progress.json")
    if args.report:
        print(store.format_report())
        return 0
    _require_local_output(args.output_dir)
    if not math.isfinite(args.timeout) or args.timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    _runs_in_flight(), _queue_ahead_count()  # a bad setting is a usage error before any work
    tests = plan_tests(args)
    with contextlib.ExitStack() as stack:
        url, backend_note = stack.enter_context(_server(args))
        if backend_note:
            print(backend_note, file=sys.stderr)
        _require_reachable(url)
        own = stack.enter_context(_client(url, read_timeout=30.0))  # pre-flight and queue-ahead: one /object_info
        problems = preflight_tests(own, tests, args)
        to_run = store.begin([t.name for t in tests], resume=args.resume)
        skipped = len(tests) - len(to_run)
        if skipped:
            print(f"resuming: {skipped} test(s) already finished, {len(to_run)} to go", file=sys.stderr)
        chosen = [t for t in tests if t.name in to_run]
        with sigterm_as_keyboard_interrupt():
            ahead = AheadQueue(own, chosen, problems, args)
            try:
                ahead.first_tests()  # the GPU starts now, while Dagster loads
                with _instance() as instance:
                    results = run_tests(chosen, problems, url, args, instance, store, ahead)
            except KeyboardInterrupt:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # cleaning up: a second Ctrl-C must not cut it short
                ahead.close()
                _cancel_queued_ahead(url, chosen, Path(args.output_dir).resolve())
                done = store.report()["completed"] - skipped
                print(f"interrupted: {done} test(s) finished and recorded; the runs in flight were stopped and "
                      "their prompts cancelled. Continue with --resume.", file=sys.stderr)
                raise
        ahead.close()
        _cancel_queued_ahead(url, chosen, Path(args.output_dir).resolve())  # tests the breaker kept from starting
    order = {test.name: i for i, test in enumerate(tests)}
    results.sort(key=lambda r: order[r.name])  # the report lists tests as planned, not as they finished
    report_path = _write_report(args, results, store)
    _print_summary(results, report_path)
    if args.json:
        print(json.dumps(json.loads(report_path.read_text()), indent=2))
    finished = store.report()
    return 0 if finished.get("failed", 0) == 0 and not finished.get("pending") else 1


def plan_tests(args: argparse.Namespace) -> list[Test]:
    specs = _specs(args)
    if args.image is not None:
        _require_image(args.image)
    if args.test_type == "video-only" and args.image is None:
        raise UsageError("--test-type video-only needs --image PATH (the picture to animate)")
    tests: list[Test] = []
    if args.test_type in ("all", "connection-only"):
        tests.append(Test("connection", "connection"))
    if args.test_type == "image-only":
        tests += [Test(f"image-{i + 1}", "image", spec) for i, spec in enumerate(specs)]
    if args.test_type in ("all", "full-pipeline"):
        tests += [Test(f"pipeline-{i + 1}", "pipeline", spec) for i, spec in enumerate(specs)]
    if args.test_type in ("all", "video-only") and args.image is not None:
        tests.append(Test("video-1", "video", specs[0], args.image.resolve()))
    return tests


def run_tests(tests: list[Test], problems: list[tuple[str, str]], url: str, args: argparse.Namespace,
              instance: Any, store: CheckpointStore, ahead: "AheadQueue | None" = None) -> list[TestResult]:
    """Run `tests` with overlapping runs; each result is checkpointed and printed the moment its run ends.
    `ahead` queues further tests' prompts ahead as tests pass, and cancels them when the breaker opens."""
    import dagster as dg

    output_dir = Path(args.output_dir).resolve()
    results: list[TestResult] = []

    def start(test: Test, run_id: str) -> TestResult:
        print(f"== {test.name} ({test.type}) ==", file=sys.stderr)
        stderr.tag(test.name)  # its progress lines from here on start with its name
        blocked = [line for role, line in problems if role in _WORKFLOW_ROLES[test.type]]
        if blocked:
            return TestResult(test.name, test.type, False, 0.0, errors=[blocked[0]])
        return run_test(test, url, args, instance, run_id=run_id)

    def launch(test: Test) -> str:  # called in this thread the moment the window starts `test`
        if ahead is not None:
            ahead.launched(test)
        return test.run_id

    def finished(test: Test, result: TestResult) -> bool:
        results.append(result)
        store.record(test.name, success=result.success, duration=result.duration, details=_details(result))
        _print_line(result)
        if ahead is not None:
            if store.breaker_open:
                ahead.cancel_waiting(url)  # tests that will not start must not keep the GPU busy meanwhile
            elif result.success:
                ahead.top_up()
        return result.success

    window: RunWindow[Test, TestResult] = RunWindow(
        max_in_flight=_runs_in_flight(),
        # A run has its prompts on the server once its ledger records one (written just before each submit).
        queued=lambda run_id: ledger.has_record(output_dir, run_id),
        interrupt_error=dg.DagsterExecutionInterruptedError,
        cancel=lambda run_id: _cancel_run(url, output_dir, run_id),
    )
    # Interpreter shutdown with Dagster loaded spends ~0.4 s in its final garbage collection of objects that
    # are about to be freed anyway; freezing them first skips that while the GPU would otherwise wait for us.
    atexit.register(gc.freeze)
    with tagged_stderr() as stderr:
        outcome = window.run(tests, start, finished, stop=lambda: store.breaker_open,
                             run_id_of=launch)
    if store.breaker_open:
        _print_breaker(store, outcome)
    return results


class AheadQueue:
    """Queues tests' image prompts on the server ahead of their runs, each under a prompt id its test's run
    adopts (config `prompt_ids`: the client posts nothing for an id the server knows), so the GPU never waits
    for a run to start. First as many tests' as the circuit breaker lets fail, before Dagster is even imported
    (loading it and starting the first run take seconds); once the first of those prompts has succeeded on the
    server, the server is known to work and the rest follow (`top_up`). The ids go to each run's ledger first: a
    check that dies leaves them to be cancelled, like any run's.

    A watcher thread queues the rest the moment the first prompt succeeds (the first run ends seconds later);
    the main thread starts runs meanwhile. The lock makes each test either queued ahead before its run starts
    (the run adopts the id) or left to its run, never both."""

    def __init__(self, client: ComfyUIClient, tests: list[Test], problems: list[tuple[str, str]],
                 args: argparse.Namespace):
        self._client = client
        self._output_dir = Path(args.output_dir).resolve()
        self._image_workflow = chosen_workflows(args)[0]
        self._lead = _queue_ahead_count()  # 0: nothing is queued ahead at all
        blocked = {role for role, _ in problems}
        # A test whose pre-flight failed is not run: queueing its image would only burn GPU time.
        self._waiting = [t for t in tests if t.type in ("image", "pipeline")
                         and not blocked & set(_WORKFLOW_ROLES[t.type])]
        self._workflow = None
        self._failed = False  # queueing failed once: the runs meet the problem themselves, and say what it is
        self._closed = threading.Event()
        self._lock = threading.Lock()

    def first_tests(self) -> None:
        """As many tests' prompts as the circuit breaker lets fail (nothing is known about the server yet), and
        a watcher that queues the rest once the first of them has succeeded."""
        first = self._waiting[:self._lead]
        self._queue(first)
        if first and first[0].prompt_ids:
            threading.Thread(target=self._top_up_after, args=(first[0].prompt_ids[0],), daemon=True,
                             name="check-queue-ahead").start()

    def top_up(self) -> None:
        """The server works: queue every image test still waiting, and `lead` pipeline tests ahead."""
        if self._lead == 0:
            return
        with self._lock:
            pipeline_ahead = sum(1 for t in self._waiting if t.type == "pipeline" and t.prompt_ids)
            more = []
            for test in self._waiting:
                if test.prompt_ids:
                    continue
                if test.type == "pipeline":
                    if pipeline_ahead >= self._lead:
                        continue
                    pipeline_ahead += 1
                more.append(test)
        self._queue(more)

    def launched(self, test: Test) -> None:
        """`test`'s run starts now: it adopts what was queued for it, or queues its own prompts."""
        with self._lock:
            if test in self._waiting:
                self._waiting.remove(test)

    def close(self) -> None:
        """Queue nothing more (the check is ending or stopping); returns once no queueing is under way."""
        self._closed.set()
        with self._lock:
            pass

    def cancel_waiting(self, url: str) -> None:
        """The tests not started yet will not be (the breaker opened): cancel their prompts now."""
        self.close()
        with self._lock:
            waiting, self._waiting = self._waiting, []
        _cancel_queued_ahead(url, waiting, self._output_dir)

    def _top_up_after(self, prompt_id: str) -> None:
        """Wait for `prompt_id` to end; if it succeeded, top up. Any error: the runs go on as they would."""
        try:
            while not self._closed.is_set():
                if self._client.status(prompt_id) == "done":
                    self._client.wait(prompt_id, timeout=1.0)  # done: returns, or raises if it failed
                    self.top_up()
                    return
                self._closed.wait(STATUS_POLL_S)
        except Exception:  # a failed prompt, or a server that stopped answering: its run will say what it is
            return

    def _queue(self, tests: list[Test]) -> None:
        from comfy_pipeline.batch.plan import gpu_job
        from comfy_pipeline.batch.runner import queue_ahead as queue_jobs

        for test in tests:
            with self._lock:
                if self._failed or self._closed.is_set() or test not in self._waiting or test.prompt_ids:
                    continue
                if self._workflow is None:
                    self._workflow = load_workflow(self._image_workflow)
                job = gpu_job("images", 0, test.spec, None, self._workflow, test.run_id, self._output_dir,
                              str(uuid.uuid4()))
                if not queue_jobs(self._client, [job], ledger.PromptLedger(self._output_dir, test.run_id),
                                  test.client_id):
                    self._failed = True  # the runs meet the problem themselves, and say what it is
                    return
                test.prompt_ids = [job.prompt_id]


def _cancel_queued_ahead(url: str, tests: list[Test], output_dir: Path) -> None:
    """Tests that never started (the breaker tripped, Ctrl-C) must not leave their prompts on the GPU. (A run
    that started owns its prompts; one that ended has no record left, so this changes nothing for it.)"""
    for test in tests:
        if test.prompt_ids:
            try:
                _cancel_run(url, output_dir, test.run_id)
            except Exception as exc:  # best effort while stopping; the next run's sweep tries again
                print(f"could not cancel the prompts queued ahead for {test.name}: {exc}", file=sys.stderr)


def _runs_in_flight() -> int:
    return _count_setting(RUNS_IN_FLIGHT_ENV, MAX_RUNS_IN_FLIGHT, minimum=1, what="runs")


def _queue_ahead_count() -> int:
    return _count_setting(QUEUE_AHEAD_ENV, QUEUE_AHEAD, minimum=0, what="tests")


def _count_setting(variable: str, default: int, *, minimum: int, what: str) -> int:
    text = os.environ.get(variable, str(default))
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise UsageError(f"{variable} must be a whole number of {what}, {minimum} or more; got {text!r}")
    return value


def _print_breaker(store: CheckpointStore, outcome: WindowOutcome) -> None:
    running = (f"; the {outcome.finished_after_stop} test(s) already running were allowed to finish"
               if outcome.finished_after_stop else "")
    print(f"stopping: {store.consecutive_failures} consecutive failures (circuit breaker): "
          f"{outcome.not_started} test(s) not started{running}. Fix the cause, then run again with --resume.",
          file=sys.stderr)


def run_test(test: Test, url: str, args: argparse.Namespace, instance: Any, run_id: str | None = None) -> TestResult:
    from comfy_pipeline.definitions import (
        defs,  # Dagster is imported only when a test actually runs
    )

    job = defs.resolve_job_def(JOB_FOR_TEST_TYPE[test.type])
    started = time.monotonic()
    result = job.execute_in_process(
        run_config=_run_config(test, url, args), instance=instance, raise_on_error=False, run_id=run_id,
        tags={"comfy_pipeline/check": test.name},
    )
    return _summarise(test, result, time.monotonic() - started)


def _cancel_run(url: str, output_dir: Path, run_id: str) -> None:
    """Cancel whatever an interrupted run still has on the server, from its ledger of prompt ids."""
    if not ledger.has_record(output_dir, run_id):
        return
    with _client(url, read_timeout=10.0) as client:
        cancelled = ledger.cancel_orphans(output_dir, client.url, client.cancel, lambda _: True, only_run=run_id)
        _wait_until_gone(client, {entry.prompt_id for entry in cancelled})


def _wait_until_gone(client: ComfyUIClient, prompt_ids: set[str], timeout: float = CANCEL_WAIT_S) -> None:
    """A cancelled prompt that was running stops at the server's next interrupt check: wait (bounded) until the
    server lists none of them, so that when the check exits nothing of it is left on the GPU."""
    deadline = time.monotonic() + timeout
    while prompt_ids and time.monotonic() < deadline:
        queue = client.queue()
        listed = {item[1] for key in ("queue_running", "queue_pending") for item in queue[key] if len(item) > 1}
        if not prompt_ids & listed:
            return
        time.sleep(0.1)


def _run_config(test: Test, url: str, args: argparse.Namespace) -> Any:
    """The test's run config, its ops' config built from the assets' own config classes (what the launchpad and
    the sensors use), so no field is dropped on the way."""
    import dagster as dg

    from comfy_pipeline.defs.config import ImageConfig, PromptConfig, VideoConfig

    # Run config is stored in the run database as it is: never a credential in it. User and password in the
    # URL go to the environment (the resource reads them there), the URL without them to the config.
    comfy = {"url": credentials_to_environment(url), "output_dir": str(Path(args.output_dir).resolve()),
             "prompt_timeout": args.timeout}
    thresholds = {key: getattr(args, key) for key in ("image_min_bytes", "video_min_bytes", "content_retries")
                  if getattr(args, key, None) is not None}
    image_workflow, video_workflow = chosen_workflows(args)
    ops: dict[str, Any] = {}
    if test.type in ("image", "pipeline"):
        ops["prompt"] = PromptConfig.from_specs([test.spec])
        ops["generated_image"] = ImageConfig(workflow=image_workflow, prompt_ids=test.prompt_ids)
        if test.prompt_ids:  # queued ahead: the run adopts them, and hears their progress on its socket
            comfy["client_id"] = test.client_id
    if test.type == "video":
        ops["ltx2_video"] = VideoConfig.animate(test.image, test.spec, workflow=video_workflow)
    if test.type == "pipeline":
        ops["ltx2_video"] = VideoConfig(workflow=video_workflow)
    return dg.RunConfig(
        ops=ops,
        resources={"comfy": {"config": comfy}, **({"quality": {"config": thresholds}} if thresholds else {})},
        loggers={"progress": {"config": {"log_level": "DEBUG" if args.verbose else "INFO"}}},
    )


def _summarise(test: Test, result: Any, duration: float) -> TestResult:
    import dagster as dg

    summary = TestResult(test.name, test.type, bool(result.success), round(duration, 3), run_id=result.run_id)
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            meta = {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}
            summary.backend = meta.get("backend", summary.backend)
            manifest = _manifest(result, event)
            for item in manifest.items if manifest else ():
                summary.outputs.append(item.path)
                summary.checks += [{"output": item.path, **check.to_json()} for check in item.checks]
            if manifest is not None:  # the report's rows, without the check lists listed above
                asset = event.event_specific_data.materialization.asset_key.to_user_string()
                summary.rows += [{k: v for k, v in row.items() if k != "checks"}
                                 for row in output_rows(asset, manifest)]
            for phase, seconds in (meta.get("timings_s") or {}).items():
                summary.performance[phase] = round(summary.performance.get(phase, 0.0) + seconds, 4)
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            data = event.step_failure_data
            user = data.user_failure_data
            summary.errors.append(user.description if user and user.description else data.error.message.strip())
    if test.type == "connection" and result.success:
        found = result.output_for_node("comfyui_connection")
        info = ServerInfo.from_json(found)
        summary.backend = info.backend
        summary.performance["connection"] = info.connection_s
        summary.checks.append({"name": "server_answers", "passed": True, "value": info.comfyui_version,
                               "expected": "a ComfyUI version",
                               "message": f"{info.gpu}, queue {found.get('queue_pending')} pending"})
    failed_checks = [c for c in summary.checks if not c["passed"]]
    if failed_checks and summary.success:
        summary.success = False
    if not summary.success and not summary.errors and failed_checks:
        summary.errors = [f"{c['name']}: {c['message']}" for c in failed_checks]
    return summary


def _manifest(result: Any, event: Any) -> GenerationManifest | None:
    """What a materialization recorded, from the asset's value: the manifest the run handed downstream (the
    metadata only points at the list, which grows with the prompts). The report's value is no such manifest."""
    key = event.event_specific_data.materialization.asset_key
    try:
        value = result.asset_value(key)
    except Exception:  # no value captured for this asset (it failed after materializing): nothing to list
        return None
    if not isinstance(value, dict) or "items" not in value:
        return None
    return GenerationManifest.from_json(value)


# --- inputs --------------------------------------------------------------------------------------------


def _specs(args: argparse.Namespace) -> list[PromptSpec]:
    specs: list[PromptSpec] = []
    if args.prompts_file is not None:
        specs += _read_prompts_file(args.prompts_file)
    specs += [PromptSpec(text=check_text(text)) for text in args.prompt]
    if not specs:
        specs = library_specs()[:1]
    overrides: dict[str, Any] = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.frames is not None:
        overrides["frames"] = args.frames
    # Sizes, frames, fps and seeds are checked against the workflows' parameter maps before any run starts.
    return check_specs([PromptSpec(**{**s.to_dict(), **overrides}) for s in specs])


def _read_prompts_file(path: Path) -> list[PromptSpec]:
    """A prompts.json as in the design document: a regular file (a FIFO would block), bounded in size and depth."""
    where = f"--prompts-file {path}"
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UsageError(f"{where}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{where}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{where}: not a regular file; give the path of a prompts.json")
    if info.st_size > MAX_PROMPT_FILE_BYTES:
        raise UsageError(f"{where}: {info.st_size:,} bytes is too big (limit {MAX_PROMPT_FILE_BYTES:,})")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise UsageError(f"{where}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{where}: not valid UTF-8 (byte {exc.start}); save it as UTF-8") from None
    try:
        return specs_from_seed_prompts(load_json_bounded(text, where), f"--prompts-file {path.name}")
    except (TypeError, AttributeError, ValueError) as exc:  # a wrong shape the spec reader did not foresee
        raise UsageError(f"{where}: not a prompts.json ({exc})") from None


def _require_image(path: Path) -> None:
    from comfy_pipeline.media import MediaError, probe_image

    try:
        probe_image(path)
    except MediaError as exc:
        raise UsageError(f"--image {exc}; give a PNG, JPEG or WebP image") from None


# --- server --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _server(args: argparse.Namespace):
    """The one server the check tests, as settings.choose_servers picks it; its runs get it as their run config
    URL, which wins over the environment there too, so every prompt of the check goes to it."""
    choice = settings.choose_servers(flag=args.comfyui_url)
    if not choice.simulator:
        url = args.comfyui_url = choice.urls[0]  # the report names it
        note = None
        if choice.source == "session":
            note = f"using the running ComfyUI session at {url} (comfy-pipeline server status)"
        elif len(choice.urls) > 1:
            note = f"checking the first of the {len(choice.urls)} servers in {choice.source}: {redact_url(url)}"
        yield url, note
        return
    from comfy_pipeline.simulator import Simulator

    why = ("No --comfyui-url / COMFYUI_URLS / COMFYUI_URL and no running session" if choice.by_default
           else f"{choice.source} chose `simulator`")
    with Simulator() as sim:
        yield sim.url, (
            f"*** {why}: checking the EMBEDDED SIMULATOR at {sim.url}. Its pictures are placeholders; nothing "
            "here says anything about a GPU server. ***"
        )


def credentials_to_environment(url: str) -> str:
    """`url` without user info; a user and password found in it are set as COMFYUI_USERNAME / COMFYUI_PASSWORD."""
    parts = urlsplit(url)
    if parts.username is None:
        return url
    os.environ["COMFYUI_USERNAME"] = unquote(parts.username)
    os.environ["COMFYUI_PASSWORD"] = unquote(parts.password or "")
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


# The workflows (by role: the image one, the video one) each type of test runs.
_WORKFLOW_ROLES = {"connection": (), "image": ("image",), "video": ("video",), "pipeline": ("image", "video")}


def preflight_tests(client: ComfyUIClient, tests: list[Test], args: argparse.Namespace) -> list[tuple[str, str]]:
    """Pre-flight every workflow the planned tests need against the server, before any GPU time, and print what
    is wrong on the terminal: missing models with their folders, missing nodes, version mismatches. Returns
    (workflow role, one-line summary) per workflow that would fail; its tests fail without being run."""
    from comfy_pipeline.workflows.preflight import preflight_on_server

    needed = {role for test in tests for role in _WORKFLOW_ROLES[test.type]}
    names = dict(zip(("image", "video"), chosen_workflows(args)))
    roles, graphs = [], []
    for role in (r for r in ("image", "video") if r in needed):
        workflow = load_workflow(names[role])
        values = {"image": "start.png"} if "image" in workflow.params else {}
        roles.append(role)
        graphs.append((workflow.name, workflow.inject(values, filename_prefix="comfy_pipeline/preflight")))
    if not graphs:
        return []
    failing = []
    for position, report in preflight_on_server(client, graphs).failing:
        print(f"pre-flight of {report.workflow} on {client.url} failed; its tests are not run:", file=sys.stderr)
        for problem in report.problems:
            print("  " + problem.format().replace("\n", "\n  "), file=sys.stderr)
        counts = ", ".join(f"{k.replace('_', ' ')}: {sum(p.kind == k for p in report.problems)}"
                           for k in dict.fromkeys(p.kind for p in report.problems))
        failing.append((roles[position], f"pre-flight of {report.workflow} failed ({counts}); nothing was submitted"))
    return failing


def _client(url: str, *, read_timeout: float) -> ComfyUIClient:
    """A client for the check's own calls, with the credentials from the environment."""
    return settings.make_client(url, connect_timeout=5.0, read_timeout=read_timeout)


def _require_reachable(url: str) -> None:
    with _client(url, read_timeout=10.0) as client:
        health = client.health()
    if not health["ok"]:
        raise UsageError(f"cannot reach ComfyUI at {redact_url(url)}: {health['error']}. Start the server or fix "
                         "--comfyui-url / COMFYUI_URL.")


# Dagster captures a run's stdout/stderr by pointing the process's file descriptors 1 and 2 at a file, with a
# tail process per stream. With runs overlapping in one process those redirections overwrite each other (lines
# vanish, a run can fail writing to a closed pipe), so the check's runs do without: what they say is in the
# event log and on the terminal.
NO_COMPUTE_LOGS = {"compute_logs": {"module": "dagster._core.storage.noop_compute_log_manager",
                                    "class": "NoOpComputeLogManager"}}


@contextlib.contextmanager
def _instance():
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    home = os.environ.get("DAGSTER_HOME")
    if home:
        home = os.path.expanduser(home)
        if not os.path.isabs(home) or not os.path.isdir(home):
            raise UsageError(f"DAGSTER_HOME={home} must be the absolute path of an existing directory")
        with dg.DagsterInstance.from_ref(InstanceRef.from_dir(home, overrides=NO_COMPUTE_LOGS)) as instance:
            yield instance
        return
    with tempfile.TemporaryDirectory(prefix="comfy-check-dagster-") as home:
        with dg.DagsterInstance.local_temp(home, overrides=NO_COMPUTE_LOGS) as instance:
            yield instance


# --- output --------------------------------------------------------------------------------------------


def _details(result: TestResult) -> dict:
    return {"run_id": result.run_id, "outputs": result.outputs, "errors": result.errors}


def _write_report(args: argparse.Namespace, results: list[TestResult], store: CheckpointStore) -> Path:
    folder = Path(args.output_dir) / "reports"
    path = outputs.confined(folder, f"check_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}_{os.getpid()}.json")
    totals = {phase: round(sum(r.performance.get(phase, 0.0) for r in results), 4) for phase in PHASES}
    report = {
        "server": redact_url(args.comfyui_url) if args.comfyui_url else None,
        "backend": sorted({r.backend for r in results if r.backend}),
        "test_type": args.test_type,
        "tests": [r.__dict__ for r in results],
        "performance_s": totals,
        "progress": store.report(),
    }
    return outputs.write_json(path, report)


def _print_line(result: TestResult) -> None:
    status = "PASS" if result.success else "FAIL"
    if result.errors:
        lines = result.errors[0].splitlines()
        # "1 of 2 prompt(s) failed:" says less than the line after it, which names the prompt and the cause.
        detail = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]
    else:
        detail = ", ".join(Path(p).name for p in result.outputs)
    print(f"{status} {result.name} in {result.duration:.1f}s  {detail}", file=sys.stderr)


def _print_summary(results: list[TestResult], report_path: Path) -> None:
    """A line per test (outputs that passed of those made), then each output or prompt that failed or was made
    again, with its reason."""
    width = max([len(r.name) for r in results] + [4])
    print(f"\n{'test'.ljust(width)}  {'type':10} {'result':6} {'time':>7}  outputs passed", file=sys.stderr)
    for r in results:
        made = [row for row in r.rows if row["verdict"] != REGENERATED and row["path"]]
        passed = sum(1 for row in made if row["verdict"] == PASSED)
        print(f"{r.name.ljust(width)}  {r.type:10} {'PASS' if r.success else 'FAIL':6} {r.duration:6.1f}s  "
              f"{passed}/{len(made)}", file=sys.stderr)
    for r in results:
        for row in r.rows:
            if row["verdict"] != PASSED:
                what = Path(row["path"]).name if row["path"] else f"{row['job']} ({row['prompt']!r})"
                print(f"  {r.name}: {row['verdict']} {what}: {row['reason']}", file=sys.stderr)
    print(f"report: {report_path}", file=sys.stderr)


def _require_local_output(output_dir: str) -> None:
    """`check` keeps its test outputs, prompt records and reports in a local folder (it reads them back as files):
    an object-store location, given or from COMFY_PIPELINE_OUTPUT_DIR, is a usage error saying what to pass."""
    if not is_store_url(output_dir):
        return
    parts = urlsplit(output_dir)
    shown = urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))  # never a user:password part
    raise UsageError(f"the output location is an object store ({shown}, from --output-dir or "
                     "COMFY_PIPELINE_OUTPUT_DIR); check needs a local folder: pass --output-dir DIR (a local folder)")


def _error(message: str, args: argparse.Namespace) -> None:
    print(f"comfy-pipeline check: {message}", file=sys.stderr)
    if getattr(args, "verbose", False):
        traceback.print_exc()
