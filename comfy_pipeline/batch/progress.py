"""Turn ComfyUI progress events into a readable, rate-limited log: which prompt, which node, step x/y."""

import time
from typing import Any


class ProgressLogger:
    """Callable for `run_batch(on_progress=...)`.

    Every line is a Dagster event (a database write), so lines are rate-limited to one per `interval` seconds
    per prompt; the first and last sampler step are always logged. A graph of 50 nodes thus costs a few events,
    not 50.
    """

    def __init__(self, log: Any, interval: float = 1.0):
        self.log = log
        self.interval = interval
        self._last: dict[str, float] = {}

    def __call__(self, job: Any, event: Any) -> None:
        key = getattr(job, "key", str(job))
        if event.kind == "progress" and event.max:
            edge = event.value in (1, event.max)
            if edge or self._due(key):
                self.log.info(f"{key}: node {event.node} ({event.class_type or '?'}) step {event.value}/{event.max}")
        elif event.kind == "executing" and event.node and self._due(key):
            self.log.debug(f"{key}: running node {event.node} ({event.class_type or '?'})")
        elif event.kind == "cached" and event.node and self._due(key):
            self.log.debug(f"{key}: node {event.node} served from the server's cache")

    def _due(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, float("-inf")) < self.interval:
            return False
        self._last[key] = now
        return True
