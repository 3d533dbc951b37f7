"""Overlapping test runs for `comfy-pipeline check`: the GPU server's queue is fed while runs start and finish.

A Dagster run spends a fraction of a second before its first prompt reaches the server and after its last one
comes back (planning, event writes, checks, the report). Run one test after another and the GPU idles for all
of it. Here several tests' runs are in flight at once, each in its own thread, and they share the server's
queue:

- the next test starts once the previous one has its prompts on the server (or has ended), so run
  start-ups do not compete with each other for the CPU, and the queue fills in test order;
- at most `max_in_flight` runs at a time;
- each run ends in its own result, handed to the caller in the main thread in the order runs finish;
- after a failure, the next test starts only when no run is in flight: a server that may be broken is probed
  one test at a time, not fed more work; a success restores the overlap;
- when `stop()` says so (the circuit breaker), no further test starts; the runs already in flight, whose
  prompts are on the GPU already, finish and are reported;
- Ctrl-C / SIGTERM: each running run is interrupted the way Dagster interrupts a run
  (DagsterExecutionInterruptedError in its thread: its batch cancels its prompts on the server), `cancel(run_id)`
  sweeps up what is left, and KeyboardInterrupt goes on to the caller. Interrupted runs are not reported.

No Dagster import here: the caller passes the functions that run a test and tell whether its prompts are queued.
"""

import contextlib
import ctypes
import queue
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")  # a test
R = TypeVar("R")  # its result

POLL_S = 0.02  # how often the main thread looks whether the newest run has queued its prompts
INTERRUPT_GRACE_S = 15.0  # how long interrupted runs get to cancel their prompts and end


@dataclass
class _Launch(Generic[T]):
    test: T
    run_id: str
    thread: threading.Thread | None = None
    fed: bool = False  # its prompts are on the server, or it has ended


@dataclass
class WindowOutcome:
    not_started: int = 0  # tests never started because stop() said so
    finished_after_stop: int = 0  # runs already in flight when stop() said so, allowed to finish
    interrupted: list[str] = field(default_factory=list)  # run ids of runs cut short by Ctrl-C


class RunWindow(Generic[T, R]):
    def __init__(self, *, max_in_flight: int, queued: Callable[[str], bool],
                 interrupt_error: type[BaseException] = KeyboardInterrupt,
                 cancel: Callable[[str], None] | None = None):
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self._queued = queued  # run_id -> True once the run has its prompts on the server
        self._interrupt_error = interrupt_error  # what an interrupted run sees, as if Dagster had raised it
        self._cancel = cancel  # run_id -> cancel whatever that run still has on the server

    def run(self, tests: list[T], start: Callable[[T, str], R], finished: Callable[[T, R], bool],
            stop: Callable[[], bool] = lambda: False,
            run_id_of: Callable[[T], str] = lambda _: str(uuid.uuid4())) -> WindowOutcome:
        """Run every test with `start(test, run_id)` in its own thread (`run_id_of(test)`: a new id unless the
        caller chose them ahead); `finished(test, result)` is called in this thread as each run ends and says
        whether the test passed. Returns what was left out and why."""
        done: queue.Queue[tuple[_Launch[T], Any, BaseException | None]] = queue.Queue()
        waiting = list(tests)
        in_flight: list[_Launch[T]] = []
        outcome = WindowOutcome()
        probing = False  # the last test to end failed: one test at a time until one passes
        stopped = False
        with sigterm_as_keyboard_interrupt():
            try:
                while waiting or in_flight:
                    if not stopped and stop():
                        stopped = True
                        outcome.not_started, outcome.finished_after_stop = len(waiting), len(in_flight)
                        waiting.clear()
                    for launch in in_flight:
                        launch.fed = launch.fed or self._queued(launch.run_id)
                    if waiting and self._may_start(in_flight, probing):
                        test = waiting.pop(0)
                        in_flight.append(self._start(test, run_id_of(test), start, done))
                        continue
                    try:
                        launch, result, error = done.get(timeout=POLL_S)
                    except queue.Empty:
                        continue
                    in_flight.remove(launch)
                    if error is not None:
                        raise error
                    probing = not finished(launch.test, result)
            except BaseException:
                outcome.interrupted = self._interrupt(in_flight)
                raise
        return outcome

    def _may_start(self, in_flight: list[_Launch[T]], probing: bool) -> bool:
        if probing:
            return not in_flight
        return len(in_flight) < self.max_in_flight and all(launch.fed for launch in in_flight)

    def _start(self, test: T, run_id: str, start: Callable[[T, str], R], done: queue.Queue) -> _Launch[T]:
        launch = _Launch(test, run_id)

        def work() -> None:
            try:
                result, error = start(test, launch.run_id), None
            except BaseException as exc:  # handed to the main thread, which raises it there
                result, error = None, exc
            launch.fed = True
            done.put((launch, result, error))

        # A daemon thread: an interrupted run that does not end within the grace period cannot hold up the exit.
        launch.thread = threading.Thread(target=work, name=f"check-run-{launch.run_id[:8]}", daemon=True)
        launch.thread.start()
        return launch

    def _interrupt(self, in_flight: list[_Launch[T]]) -> list[str]:
        """Interrupt every running run as Dagster would (the exception in its thread), wait for them to end
        (bounded), then cancel anything of theirs still on the server."""
        for launch in in_flight:
            if launch.thread is not None and launch.thread.ident is not None:
                _raise_in_thread(launch.thread.ident, self._interrupt_error)
        deadline = time.monotonic() + INTERRUPT_GRACE_S
        for launch in in_flight:
            if launch.thread is not None:
                launch.thread.join(max(0.0, deadline - time.monotonic()))
        for launch in in_flight:
            if self._cancel is not None:
                try:
                    self._cancel(launch.run_id)
                except Exception as exc:  # best effort while already stopping; say so
                    print(f"could not cancel the prompts of run {launch.run_id}: {exc}", file=sys.stderr)
        return [launch.run_id for launch in in_flight]


def _raise_in_thread(ident: int, error: type[BaseException]) -> None:
    """Raise `error` in thread `ident` at its next Python instruction (the C API Dagster's own interrupt relies on
    for the main thread is the signal handler; threads get no signals, so this is the equivalent)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(error))


@contextlib.contextmanager
def sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM stops the check like Ctrl-C (runs interrupted, prompts cancelled) instead of killing it outright."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class TaggedStream:
    """A stand-in for sys.stderr while runs overlap: lines written from a run's thread, or from a thread it started
    (the batch runner names its threads "<caller>/..."), start with its test name, so interleaved progress lines
    say which test they belong to. Other threads' lines pass unchanged."""

    def __init__(self, stream: Any):
        self._stream = stream
        self._tags: dict[str, str] = {}  # thread name -> tag
        self._lock = threading.Lock()

    def tag(self, name: str | None) -> None:
        """Tag what the calling thread (and the threads it names after itself) writes from now on."""
        self._tags[threading.current_thread().name] = name or ""

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # a text stream, as click and others probe by writing b""
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        tag = self._tags.get(threading.current_thread().name.split("/", 1)[0])
        if tag:
            text = "".join(f"{tag}|{line}" if line.strip() else line for line in text.splitlines(keepends=True))
        with self._lock:
            return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ...
        return getattr(self._stream, name)


@contextlib.contextmanager
def tagged_stderr() -> Iterator[TaggedStream]:
    original = sys.stderr
    sys.stderr = tagged = TaggedStream(original)
    try:
        yield tagged
    finally:
        sys.stderr = original
