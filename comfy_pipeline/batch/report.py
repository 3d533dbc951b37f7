"""The validation report: one row per output and check, as a pandas DataFrame written to JSON and CSV.
No Dagster here: it is built from the items (see inspection.describe) of the run's assets."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfy_pipeline.batch import outputs
from comfy_pipeline.batch.inspection import cell

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


def write_report(folder: Path, run_id: str, produced: dict[str, dict]) -> Report:
    """`produced`: asset name -> its manifest (with `items`, `backend`, `timings_s`, and `failed`: the prompts
    that produced no output, each one row whose `produced` check failed, naming the error and its node)."""
    import pandas as pd  # here, not at module level: loading the Dagster definitions stays fast

    rows, timings, backends = [], {}, set()
    for asset_name, meta in produced.items():
        backends.add(meta.get("backend", "?"))
        for phase, seconds in (meta.get("timings_s") or {}).items():
            timings[phase] = round(timings.get(phase, 0.0) + seconds, 4)
        for item in meta["items"]:
            rows += [
                {"prompt": item["prompt"], "asset": asset_name, "check": check["name"], "passed": bool(check["passed"]),
                 "value": cell(check["value"]), "expected": cell(check["expected"]), "path": item["path"],
                 "server": item.get("comfyui_url", ""), "message": check["message"]}
                for check in item["checks"]
            ]
        for failure in meta.get("failed") or []:
            rows.append({"prompt": failure["prompt"], "asset": asset_name, "check": "produced", "passed": False,
                         "value": "no output", "expected": "an output", "path": "",
                         "server": failure.get("comfyui_url") or "", "message": f"{failure['job']}: {failure['error']}"})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    backend = ", ".join(sorted(backends))
    summary = {
        "run_id": run_id, "backend": backend, "passed": int(frame["passed"].sum()),
        "failed": int((~frame["passed"]).sum()), "timings_s": timings, "rows": frame.to_dict("records"),
    }
    json_path = outputs.write_json(outputs.confined(folder, "validation_report.json"), summary)
    csv_path = outputs.write_atomic(outputs.confined(folder, "validation_report.csv"), frame.to_csv(index=False).encode("utf-8"))
    return Report(frame, backend, timings, json_path, csv_path)
