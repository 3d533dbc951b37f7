"""The circuit breaker both `comfy-pipeline check` and the schedule/sensors use: after THRESHOLD consecutive failed
attempts at work, stop feeding a setup that is probably broken, until something succeeds (or a person resets it).

An attempt has a key: the retries and re-executions of one piece of work share one (Dagster's root run id), so
they count once. Two ways to ask, one rule: going forward outcome by outcome (`Breaker.after`, as check's tests
end), or looking back over a history, newest first (`Breaker.from_history`, as the sensors read Dagster's runs).
"""

from collections.abc import Iterable
from dataclasses import dataclass

THRESHOLD = 3


@dataclass(frozen=True)
class Breaker:
    failures: tuple[str, ...] = ()  # keys of the consecutive failed attempts, oldest first
    threshold: int = THRESHOLD

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError("the circuit breaker's threshold must be at least 1")

    @property
    def open(self) -> bool:
        return len(self.failures) >= self.threshold

    def after(self, key: str, *, success: bool) -> "Breaker":
        """The breaker once attempt `key` has ended: a success closes it, a failure counts (once per key)."""
        if success:
            return Breaker((), self.threshold)
        if key in self.failures:
            return self
        return Breaker((*self.failures, key), self.threshold)

    @classmethod
    def from_history(cls, outcomes_newest_first: Iterable[tuple[str, bool]], threshold: int = THRESHOLD) -> "Breaker":
        """The breaker after a history of (key, success), read newest first: the failures since the last success,
        read no further than the threshold."""
        failures: list[str] = []
        for key, success in outcomes_newest_first:
            if success or len(failures) >= threshold:
                break
            if key not in failures:
                failures.append(key)
        return cls(tuple(reversed(failures)), threshold)
