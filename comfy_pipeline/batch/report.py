"""The validation report: one row per output (verdict and reason first, then the content measures), as a pandas
DataFrame written to JSON and CSV, and the batch figures (counts, means, worst values) the UI plots across runs.
No Dagster here: it is built from the manifests (batch.records) of the run's assets.

A row is an output the asset kept ("passed" or "failed"), an earlier attempt that failed a content check and was
made again under content_retries ("regenerated"), or a prompt that made no output ("failed", its error line as
the reason, never the server's traceback). The JSON keeps each row's full check list; the CSV is flat.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from comfy_pipeline.batch import outputs
from comfy_pipeline.batch.records import FailedPrompt, GenerationManifest, OutputItem
from comfy_pipeline.media.content import CONTENT_CHECKS

PASSED, FAILED, REGENERATED = "passed", "failed", "regenerated"
# The content measures shown as columns, and for each the direction that is worse (for the batch's worst value).
MEASURES = ("mean_luma", "luma_spread", "motion", "frozen_share", "blank_frame_share", "start_similarity",
            "audio_level_db")
WORSE_IS_HIGHER = frozenset({"frozen_share", "blank_frame_share"})
COLUMNS = ["verdict", "reason", *MEASURES, "attempt", "seed", "prompt", "asset", "path", "server"]
PROMPT_CHARS = 60


def short(text: str, limit: int = PROMPT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def job_index(job: str) -> int:
    """3 for "prompt 3" and "video 3": the prompt's place in the run."""
    tail = job.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def reason_of(item: OutputItem) -> str:
    """Why an output failed (each failed check's message, the content checks' first: a black picture's tiny
    file size is a symptom, its blackness the cause), or how many checks it passed."""
    failed = sorted((c for c in item.checks if not c.passed), key=lambda c: c.name not in CONTENT_CHECKS)
    return "; ".join(c.message for c in failed) if failed else f"{len(item.checks)} checks passed"


def output_rows(asset: str, manifest: GenerationManifest) -> list[dict[str, Any]]:
    """One row per output, earlier attempt and failed prompt of `manifest`, in prompt order (a prompt's earlier
    attempts before the one it kept). Each row has COLUMNS, then `job`, `measures` (all of them) and `checks`."""
    rows = [(item, REGENERATED) for item in manifest.rejected]
    rows += [(item, PASSED if item.passed else FAILED) for item in manifest.items]
    made = [_item_row(asset, item, verdict) for item, verdict in rows]
    attempts = {}
    for item in manifest.rejected:
        attempts[item.job] = max(attempts.get(item.job, 1), item.attempt + 1)
    missing = [_failed_row(asset, failure, attempts.get(failure.job, 1)) for failure in manifest.failed]
    return sorted(made + missing, key=lambda row: (job_index(row["job"]), row["attempt"]))


def _item_row(asset: str, item: OutputItem, verdict: str) -> dict[str, Any]:
    measures = dict(item.measures)
    return {
        "verdict": verdict, "reason": reason_of(item),
        **{name: _number(measures.get(name)) for name in MEASURES},
        "attempt": item.attempt, "seed": item.seed, "prompt": short(item.prompt), "asset": asset,
        "path": item.path, "server": item.comfyui_url,
        "job": item.job, "measures": {k: _number(v) for k, v in measures.items()},
        "checks": [c.to_json() for c in item.checks],
    }


def _failed_row(asset: str, failure: FailedPrompt, attempt: int) -> dict[str, Any]:
    return {
        "verdict": FAILED, "reason": " ".join(failure.error.split()) or failure.error_type,
        **dict.fromkeys(MEASURES), "attempt": attempt, "seed": failure.spec.seed, "prompt": short(failure.prompt),
        "asset": asset, "path": "", "server": failure.comfyui_url or "", "job": failure.job, "measures": {},
        "checks": [],
    }


def _number(value: Any) -> float | None:
    """A measure as a cell: rounded; None when not measured (or not a finite number, which JSON cannot hold)."""
    return round(float(value), 4) if value is not None and math.isfinite(float(value)) else None


def batch_figures(manifest: GenerationManifest) -> dict[str, int | float]:
    """Numbers of one asset's batch that are worth plotting run after run: counts named for what they count, and
    for each content measure its mean and its worst value over the outputs kept (`motion_min`,
    `blank_frame_share_max`, ...), then validation seconds in all and per output."""
    items = manifest.items
    broken = sum(not item.passed for item in items)
    figures: dict[str, int | float] = {
        "prompts": len(items) + len(manifest.failed), "outputs": len(items), "passed_outputs": len(items) - broken,
        "failed_outputs": broken, "failed_prompts": len(manifest.failed), "regenerated": len(manifest.rejected),
    }
    for name in MEASURES:
        values = [v for v in (_number(item.measures.get(name)) for item in items) if v is not None]
        if values:
            figures[f"{name}_mean"] = round(sum(values) / len(values), 4)
            worst = "max" if name in WORSE_IS_HIGHER else "min"
            figures[f"{name}_{worst}"] = round(max(values) if worst == "max" else min(values), 4)
    seconds = [item.timings_s.get("validation", 0.0) for item in items]
    figures["validation_s"] = round(sum(seconds), 4)
    if seconds:
        figures["validation_s_mean"] = round(sum(seconds) / len(seconds), 4)
    return figures


def failure_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per failed row: `prompt 0 ('a red fox'): <error>` for a prompt without output,
    `prompt 0 ('a red fox'): <path>: <reason>` for an output that failed its checks."""
    return [f"{row['job']} ({row['prompt']!r}): " + (f"{row['path']}: " if row["path"] else "") + row["reason"]
            for row in rows if row["verdict"] == FAILED]


def verdict(rows: Sequence[Mapping[str, Any]]) -> str:
    """One sentence on rows: `2 of 4 outputs failed: <path>: <reason>; ...`, failed prompts counted apart
    (`1 of 5 prompts made no output`), or `4 of 4 outputs passed every check`."""
    kept = [row for row in rows if row["verdict"] != REGENERATED]  # one per prompt
    made = [row for row in kept if row["path"]]
    failed_outputs = sum(1 for row in made if row["verdict"] == FAILED)
    failed_prompts = len(kept) - len(made)
    regenerated = len(rows) - len(kept)
    parts = [f"{failed_prompts} of {len(kept)} prompts made no output"] if failed_prompts else []
    parts += [f"{failed_outputs} of {len(made)} outputs failed"] if failed_outputs else []
    again = f" ({regenerated} earlier attempts failed and were regenerated)" if regenerated else ""
    if not parts:
        return f"{len(made)} of {len(made)} outputs passed every check{again}"
    return "; ".join(parts) + again + ": " + "; ".join(failure_lines(rows))


@dataclass
class Report:
    rows: list[dict[str, Any]]  # as in the JSON: COLUMNS, job, measures, checks
    frame: Any  # pandas.DataFrame of COLUMNS (the CSV)
    backend: str
    timings: dict[str, float]
    json_path: str  # a path, or an s3:// URI
    csv_path: str

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["verdict"] == FAILED]

    @property
    def failed_prompts(self) -> int:
        return sum(1 for row in self.failed if not row["path"])

    @property
    def failed_outputs(self) -> int:
        return sum(1 for row in self.failed if row["path"])

    @property
    def outputs(self) -> int:
        return sum(1 for row in self.rows if row["verdict"] != REGENERATED and row["path"])

    @property
    def regenerated(self) -> int:
        return sum(1 for row in self.rows if row["verdict"] == REGENERATED)

    @property
    def passed(self) -> int:
        return sum(1 for row in self.rows if row["verdict"] == PASSED)

    def failure(self, max_lines: int = 50) -> str:
        """Why the run fails: each failed prompt (its error, naming the node) and each failed output (its
        reason)."""
        lines = failure_lines(self.rows)
        more = [f"... and {len(lines) - max_lines} more"] if len(lines) > max_lines else []
        counts = [f"{self.failed_prompts} prompt(s) failed"] if self.failed_prompts else []
        if self.failed_outputs:
            counts.append(f"{self.failed_outputs} of {self.outputs} output(s) failed their checks")
        return (" and ".join(counts) + f"; everything good was made and reported in {self.json_path}:\n"
                + "\n".join(lines[:max_lines] + more))


def write_report(run_folder: outputs.RunFolder, run_id: str, produced: Mapping[str, GenerationManifest]) -> Report:
    """`produced`: asset name -> its manifest. Writes the run folder's reports/validation_report.json (the counts,
    each asset's batch figures, every row with its checks) and reports/validation_report.csv (the rows, flat)."""
    import pandas as pd  # here, not at module level: loading the Dagster definitions stays fast

    rows, timings, backends = [], {}, set()
    for asset_name, manifest in produced.items():
        backends.add(manifest.backend)
        for phase, seconds in manifest.timings_s.items():
            timings[phase] = round(timings.get(phase, 0.0) + seconds, 4)
        rows += output_rows(asset_name, manifest)
    frame = pd.DataFrame([{c: row[c] for c in COLUMNS} for row in rows], columns=COLUMNS)
    backend = ", ".join(sorted(backends))
    report = Report(rows, frame, backend, timings, "", "")
    summary = {
        "run_id": run_id, "backend": backend, "outputs": report.outputs, "passed": report.passed,
        "failed": len(report.failed), "failed_outputs": report.failed_outputs,
        "failed_prompts": report.failed_prompts,
        "regenerated": report.regenerated,
        "batches": {name: batch_figures(manifest) for name, manifest in produced.items()},
        "timings_s": timings, "columns": COLUMNS, "rows": rows,
    }
    report.json_path = run_folder.write_json("reports", "validation_report.json", summary)
    csv = frame.to_csv(index=False).encode("utf-8")
    report.csv_path = run_folder.write_bytes("reports", "validation_report.csv", csv)
    return report
