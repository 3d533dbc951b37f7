"""Progress of a multi-test run that survives interruption.

Each test's result is written to a small JSON file (atomically) the moment it finishes, so a run that was killed
can be resumed without redoing finished tests. After `breaker_threshold` consecutive failures the circuit breaker
opens: the caller stops instead of hammering a broken server. The count starts again with every `begin()`, so a
resumed run gets a fresh chance once the cause has been fixed.
"""

import math
import time
from pathlib import Path

from comfy_pipeline.batch import outputs
from comfy_pipeline.batch.breaker import THRESHOLD, Breaker
from comfy_pipeline.workflows.prompts import load_json_bounded

FORMAT_VERSION = 1


class CheckpointError(Exception):
    """The progress file cannot be used; the message says why and what to do."""


class CheckpointStore:
    def __init__(self, path: Path, *, breaker_threshold: int = THRESHOLD):
        Breaker(threshold=breaker_threshold)  # refuses a threshold below 1
        self.path = Path(path)
        self.breaker_threshold = breaker_threshold
        self._state: dict | None = None  # read lazily: a fresh begin() must not trip over a broken old file

    def begin(self, tests: list[str], *, resume: bool) -> list[str]:
        """Start a run of `tests`; returns the tests still to run. Fresh: all of them (earlier progress is
        discarded). Resume: those without a recorded result (no progress file yet: all of them)."""
        if len(set(tests)) != len(tests):
            duplicates = sorted({t for t in tests if tests.count(t) > 1})
            raise CheckpointError(f"test names must be unique; repeated: {', '.join(duplicates)}")
        previous = self._read() if resume and self.path.exists() else None
        if previous is not None and set(previous["tests"]) != set(tests):
            added = sorted(set(tests) - set(previous["tests"]))
            removed = sorted(set(previous["tests"]) - set(tests))
            raise CheckpointError(
                f"cannot resume: the tests differ from the interrupted run recorded in {self.path} "
                f"(new: {', '.join(added) or 'none'}; missing: {', '.join(removed) or 'none'}); "
                "run the same tests again, or start over without --resume"
            )
        now = time.time()
        self._state = {
            "version": FORMAT_VERSION,
            "tests": list(tests),
            "results": previous["results"] if previous else {},
            "consecutive_failures": 0,
            "started_at": previous["started_at"] if previous else now,
            "updated_at": now,
        }
        self._write()
        return [t for t in tests if t not in self._state["results"]]

    def record(self, name: str, *, success: bool, duration: float, details: dict) -> None:
        """Record one finished test and write the file at once."""
        state = self._require_begun()
        if name not in state["tests"]:
            raise CheckpointError(f"test {name!r} is not part of this run ({len(state['tests'])} tests)")
        breaker = self._breaker().after(name, success=success)  # before the results change: it reads their order
        state["results"].pop(name, None)  # results stay in the order they finished
        state["results"][name] = {
            "success": bool(success), "duration": round(float(duration), 3), "details": details,
            "finished_at": time.time(),
        }
        state["consecutive_failures"] = len(breaker.failures)
        state["updated_at"] = time.time()
        self._write()

    @property
    def consecutive_failures(self) -> int:
        return self._loaded()["consecutive_failures"]

    @property
    def breaker_open(self) -> bool:
        return self._breaker().open

    def _breaker(self) -> Breaker:
        """The failures since begin() are the last `consecutive_failures` results (kept in the order they ended)."""
        state = self._loaded()
        count = state["consecutive_failures"]
        return Breaker(tuple(list(state["results"])[len(state["results"]) - count:]), self.breaker_threshold)

    def report(self) -> dict:
        state = self._loaded()
        results = state["results"]
        passed = sum(1 for r in results.values() if r["success"])
        completed = len(results)
        total = len(state["tests"])
        if self.breaker_open and completed < total:
            status = "stopped by circuit breaker"
        elif completed == total:
            status = "completed"
        else:
            status = "in progress" if completed else "not started"
        tests = []
        for name in state["tests"]:
            result = results.get(name)
            outcome = "pending" if result is None else ("passed" if result["success"] else "failed")
            tests.append({"name": name, "status": outcome, **({} if result is None else
                         {"duration": result["duration"], "details": result["details"]})})
        return {
            "path": str(self.path),
            "status": status,
            "total": total,
            "completed": completed,
            "passed": passed,
            "failed": completed - passed,
            "pending": total - completed,
            "success_rate": round(100.0 * passed / completed, 1) if completed else None,
            "consecutive_failures": state["consecutive_failures"],
            "breaker_threshold": self.breaker_threshold,
            "breaker_open": self.breaker_open,
            "tests": tests,
        }

    def format_report(self) -> str:
        r = self.report()
        rate = "n/a" if r["success_rate"] is None else f"{r['success_rate']:g}%"
        lines = [
            f"Progress: {r['completed']}/{r['total']} completed",
            f"  Passed: {r['passed']}",
            f"  Failed: {r['failed']}",
            f"  Pending: {r['pending']}",
            f"  Consecutive Failures: {r['consecutive_failures']}",
            f"Overall Status: {r['status']}",
            f"Success Rate: {rate}",
            "",
            "Test Results:",
        ]
        marks = {"passed": "[ok]  ", "failed": "[FAIL]", "pending": "[ .. ]"}
        for test in r["tests"]:
            took = f" ({test['duration']:.1f} s)" if "duration" in test else ""
            lines.append(f"  {marks[test['status']]} {test['name']}: {test['status']}{took}")
        lines += ["", f"Recommendation: {self._recommendation(r)}"]
        return "\n".join(lines)

    def _recommendation(self, r: dict) -> str:
        if r["breaker_open"] and r["pending"]:
            return (f"stopped after {r['consecutive_failures']} consecutive failures; fix the cause, "
                    f"then resume to run the {r['pending']} remaining tests")
        if r["pending"]:
            return f"{r['pending']} tests not run yet; resume to continue"
        if r["failed"]:
            return f"{r['failed']} of {r['total']} tests failed; see their errors above"
        return "all tests passed"

    # --- file ----------------------------------------------------------------------------------------------

    def _require_begun(self) -> dict:
        if self._state is None:
            raise CheckpointError("call begin() before recording results")
        return self._state

    def _loaded(self) -> dict:
        """The state of this run, or the one on disk when this store has not begun one (for a report)."""
        if self._state is None:
            if not self.path.exists():
                raise CheckpointError(f"no progress recorded yet: {self.path} does not exist")
            self._state = self._read()
        return self._state

    def _read(self) -> dict:
        try:
            state = load_json_bounded(self.path.read_text(encoding="utf-8"), str(self.path))
            _check_shape(state)
            return state
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"progress file {self.path} is unreadable ({exc}); delete it, or start over without --resume"
            ) from None

    def _write(self) -> None:
        outputs.write_json(self.path, self._state, replace=True)


def _check_shape(state: object) -> None:
    """Raise ValueError unless `state` is what `_write` writes: every field the report reads, of its type (a
    file edited by hand or written by another program must be refused with a reason, not crash the report)."""
    if not isinstance(state, dict):
        raise ValueError("not a JSON object")
    if state.get("version") != FORMAT_VERSION:
        raise ValueError(f"unknown format version {state.get('version')!r}")
    for key in ("tests", "results", "consecutive_failures", "started_at"):
        if key not in state:
            raise ValueError(f"no {key!r}")
    tests, results = state["tests"], state["results"]
    if not isinstance(tests, list) or not all(isinstance(name, str) for name in tests):
        raise ValueError("'tests' must be a list of test names")
    if not isinstance(results, dict):
        raise ValueError("'results' must be an object")
    failures = state["consecutive_failures"]
    if isinstance(failures, bool) or not isinstance(failures, int) or not 0 <= failures <= len(results):
        raise ValueError(f"'consecutive_failures' must be a whole number from 0 to the results' count, "
                         f"got {failures!r}")
    if not _is_number(state["started_at"]):
        raise ValueError("'started_at' must be a time in seconds")
    for name, result in results.items():
        if name not in tests:
            raise ValueError(f"result for {name!r}, which is not one of its tests")
        if not isinstance(result, dict):
            raise ValueError(f"result of {name!r} must be an object")
        if not isinstance(result.get("success"), bool):
            raise ValueError(f"result of {name!r}: 'success' must be true or false")
        if not _is_number(result.get("duration")):
            raise ValueError(f"result of {name!r}: 'duration' must be a number of seconds")
        if not isinstance(result.get("details"), dict):
            raise ValueError(f"result of {name!r}: 'details' must be an object")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
