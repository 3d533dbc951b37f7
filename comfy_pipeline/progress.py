"""Turn ComfyUI progress events into a readable, rate-limited log: which prompt, which node, step x/y."""

import time
from typing import Any


class ProgressLogger:
    """Callable for `run_batch(on_progress=...)`; logs node starts and sampler steps, at most every `interval` s
    per prompt (first and last step always), so a 20-step sampler does not flood the Dagster event log."""

    def __init__(self, log: Any, interval: float = 1.0):
        self.log = log
        self.interval = interval
        self._last: dict[str, float] = {}

    def __call__(self, job: Any, event: Any) -> None:
        key = getattr(job, "key", str(job))
        if event.kind == "progress" and event.max:
            now = time.monotonic()
            edge = event.value in (1, event.max)
            if not edge and now - self._last.get(key, 0.0) < self.interval:
                return
            self._last[key] = now
            self.log.info(f"{key}: node {event.node} ({event.class_type or '?'}) step {event.value}/{event.max}")
        elif event.kind == "executing" and event.node:
            self.log.debug(f"{key}: running node {event.node} ({event.class_type or '?'})")
        elif event.kind == "cached" and event.node:
            self.log.debug(f"{key}: node {event.node} served from the server's cache")
