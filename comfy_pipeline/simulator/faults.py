"""Fault injection: the ways a real ComfyUI (or the proxy in front of it) lets a client down.

Per-request kinds (`http-500`, `slow`) are drawn for every HTTP request; per-prompt kinds are drawn once
for each prompt that starts running. The content kinds make the prompt's saved outputs look like what real models
hand back with no error at all: black (NaN-style all-zero pixels), flat (one mid colour), frozen (every frame
frame 0), off-start (the clip animates another picture than its start image), silent (an all-zero audio track,
added even when the workflow makes no sound). `rate` is the chance of each draw, `count` caps how many draws may
hit (None = unlimited). Thread-safe: tests set faults from their own thread while the server runs.
"""

import random
import threading
from dataclasses import dataclass

PER_REQUEST = ("http-500", "slow")
CONTENT = ("black-output", "flat-output", "frozen-output", "off-start-output", "silent-output")
PER_PROMPT = ("execution-error", "drop-ws", "restart", "corrupt-output", "hostile-filename") + CONTENT
KINDS = PER_REQUEST + PER_PROMPT


@dataclass
class Fault:
    rate: float
    count: int | None
    delay: float


def parse_fault_spec(spec: str) -> tuple[str, float]:
    """`KIND` or `KIND:RATE` (the CLI form) -> (kind, rate)."""
    kind, _, rate_text = spec.partition(":")
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; choose one of: {', '.join(KINDS)}")
    try:
        rate = float(rate_text) if rate_text else 1.0
    except ValueError:
        raise ValueError(f"fault rate in {spec!r} must be a number between 0 and 1") from None
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"fault rate in {spec!r} must be between 0 and 1")
    return kind, rate


class Faults:
    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, Fault] = {}
        # One stream per kind: how many requests a run makes (timing) does not shift the per-prompt draws.
        self._randoms = {kind: random.Random(f"{seed}:{kind}") for kind in KINDS}
        self._hits: dict[str, int] = {}

    def set(self, kind: str, *, rate: float = 1.0, count: int | None = None, delay: float = 0.5) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; choose one of: {', '.join(KINDS)}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate must be between 0 and 1, got {rate}")
        with self._lock:
            self._active[kind] = Fault(rate=rate, count=count, delay=delay)

    def clear(self) -> None:
        with self._lock:
            self._active.clear()

    def take(self, kind: str) -> Fault | None:
        """Draw once: the fault if it hits this time (and use up one of its count), else None."""
        with self._lock:
            fault = self._active.get(kind)
            if fault is None or (fault.count is not None and fault.count <= 0):
                return None
            if self._randoms[kind].random() >= fault.rate:
                return None
            if fault.count is not None:
                fault.count -= 1
            self._hits[kind] = self._hits.get(kind, 0) + 1
            return fault

    def hits(self) -> dict[str, int]:
        """How many times each kind has hit so far (a restart does not reset this: it is the test's record)."""
        with self._lock:
            return dict(self._hits)
