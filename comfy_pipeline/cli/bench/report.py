"""One benchmark figure (ours, the baseline's, the target) and how the figures are shown: a table or JSON."""

import math
import os
import platform
import sys
from dataclasses import dataclass, field
from typing import Any

# How a target is read: ours <= target, ours >= target, ours / baseline <= target, or ours / baseline >= target.
AT_MOST, AT_LEAST, RATIO_AT_MOST, RATIO_AT_LEAST = "at_most", "at_least", "ratio_at_most", "ratio_at_least"
SYMBOLS = {AT_MOST: "<=", AT_LEAST: ">=", RATIO_AT_MOST: "ratio <=", RATIO_AT_LEAST: "ratio >="}


@dataclass
class Figure:
    key: str
    label: str
    unit: str
    baseline_is: str  # what the baseline column is for this figure
    target: float | None = None  # None: shown for information, no pass/fail
    goal: str = AT_MOST
    ours: float | None = None
    baseline: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # the measurement itself failed
    load: tuple[float, float] | None = None  # 1-minute load average before and after its measurement

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.baseline:
            return None
        return self.ours / self.baseline

    @property
    def passed(self) -> bool | None:
        if self.error is not None:
            return False
        if self.target is None:
            return None
        value = self.ratio if self.goal in (RATIO_AT_MOST, RATIO_AT_LEAST) else self.ours
        if value is None or not math.isfinite(value):
            return False
        return value >= self.target if self.goal in (AT_LEAST, RATIO_AT_LEAST) else value <= self.target

    @property
    def target_text(self) -> str:
        return "-" if self.target is None else f"{SYMBOLS[self.goal]} {self.target:g}"

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key, "label": self.label, "unit": self.unit, "ours": self.ours, "baseline": self.baseline,
            "baseline_is": self.baseline_is, "ratio": self.ratio, "target": self.target, "goal": self.goal,
            "passed": self.passed, "details": self.details, "error": self.error,
            "load_average_1m": None if self.load is None else {"before": self.load[0], "after": self.load[1]},
        }


def machine() -> dict[str, Any]:
    model = None
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), None)
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
        "platform": platform.platform(), "load_average_at_start": _load_average(),
        "executable": sys.executable,
    }


def load_1m() -> float | None:
    """The 1-minute load average now (None where the system has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def as_json(figures: list[Figure], *, quick: bool, seconds: float, host: dict[str, Any]) -> dict[str, Any]:
    return {
        "quick": quick,
        "seconds": round(seconds, 1),
        "machine": host,
        "passed": all(f.passed is not False for f in figures),
        "missed": [f.key for f in figures if f.passed is False],
        "figures": [f.as_json() for f in figures],
    }


def table(figures: list[Figure]) -> str:
    rows = [("figure", "ours", "baseline", "ratio", "target", "result", "load 1m")]
    for f in figures:
        result = "ERROR" if f.error else {True: "pass", False: "MISSED", None: "-"}[f.passed]
        load = "-" if f.load is None or None in f.load else f"{f.load[0]:.2f}-{f.load[1]:.2f}"
        rows.append((f"{f.label} ({f.unit})", _num(f.ours), _num(f.baseline), _num(f.ratio), f.target_text, result,
                     load))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    baselines = sorted({f.baseline_is for f in figures})
    lines += ["", "baseline: " + "; ".join(baselines),
              "load 1m: the 1-minute load average before and after the figure was measured"]
    lines += [f"{f.key}: {f.error}" for f in figures if f.error]
    return "\n".join(lines)


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"
