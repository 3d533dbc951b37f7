"""The validation report: one row per output and check, as a pandas DataFrame written to JSON and CSV.
No Dagster here: it is built from the manifests (batch.records) of the run's assets."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfy_pipeline.batch import outputs
from comfy_pipeline.batch.records import FailedPrompt, GenerationManifest

COLUMNS = ["prompt", "asset", "check", "passed", "value", "expected", "path", "server", "message"]


@dataclass
class Report:
    frame: Any  # pandas.DataFrame
    backend: str
    timings: dict[str, float]
    json_path: Path
    csv_path: Path

    @property
    def failed(self):
        return self.frame[~self.frame["passed"]]

    def failure(self, failed_prompts: Sequence[FailedPrompt], max_lines: int = 50) -> str:
        """Why the run fails: each failed prompt (type, message, node) and each failed output check."""
        bad_outputs = self.failed[self.failed["check"] != "produced"]
        lines = [f.line() for f in failed_prompts]
        lines += [f"{row.path}: check {row.check} failed: {row.message}" for row in bad_outputs.itertuples()]
        return (f"{len(failed_prompts)} prompt(s) failed and {len(bad_outputs)} output check(s) failed; everything "
                f"good was made and reported in {self.json_path}:\n" + "\n".join(lines[:max_lines]))


def write_report(folder: Path, run_id: str, produced: Mapping[str, GenerationManifest]) -> Report:
    """`produced`: asset name -> its manifest. Each output gives one row per check; each failed prompt one row
    whose `produced` check failed, naming the error and its node (never the server's traceback)."""
    import pandas as pd  # here, not at module level: loading the Dagster definitions stays fast

    rows, timings, backends = [], {}, set()
    for asset_name, manifest in produced.items():
        backends.add(manifest.backend)
        for phase, seconds in manifest.timings_s.items():
            timings[phase] = round(timings.get(phase, 0.0) + seconds, 4)
        for item in manifest.items:
            rows += [
                {"prompt": item.prompt, "asset": asset_name, "check": check.name, "passed": check.passed,
                 "value": check.value, "expected": check.expected, "path": item.path, "server": item.comfyui_url,
                 "message": check.message}
                for check in item.checks
            ]
        for failure in manifest.failed:
            rows.append({"prompt": failure.prompt, "asset": asset_name, "check": "produced", "passed": False,
                         "value": "no output", "expected": "an output", "path": "",
                         "server": failure.comfyui_url or "", "message": f"{failure.job}: {failure.error}"})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    backend = ", ".join(sorted(backends))
    summary = {
        "run_id": run_id, "backend": backend, "passed": int(frame["passed"].sum()),
        "failed": int((~frame["passed"]).sum()), "timings_s": timings, "rows": frame.to_dict("records"),
    }
    json_path = outputs.write_json(outputs.confined(folder, "validation_report.json"), summary)
    csv = frame.to_csv(index=False).encode("utf-8")
    csv_path = outputs.write_atomic(outputs.confined(folder, "validation_report.csv"), csv)
    return Report(frame, backend, timings, json_path, csv_path)
