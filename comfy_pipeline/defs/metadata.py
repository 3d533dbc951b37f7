"""Metadata the UI shows for the pipeline's assets and checks: typed numbers it can plot, tables of report rows,
and where each input came from."""

from pathlib import Path
from typing import Any

import dagster as dg

from comfy_pipeline.batch.records import Lineage
from comfy_pipeline.batch.report import FAILED, MEASURES, REGENERATED

MAX_TABLE_ROWS = 200  # a table in the UI; the full report is the JSON/CSV file it points to


def lineage_metadata(lineage: dict[str, Lineage | None]) -> dict[str, Any]:
    """Which run's materialization each input came from: this run, the parent of a re-execution, or the latest."""
    meta: dict[str, Any] = {}
    for name, source in lineage.items():
        if source is not None:
            meta[f"input_{name}_run"] = dg.MetadataValue.dagster_run(source.run_id)
            meta[f"input_{name}_from"] = source.how
    return meta


def numbers(values: dict[str, Any]) -> dict[str, Any]:
    """Numbers as typed metadata (the UI plots an asset's or a check's numeric metadata across runs); text and
    other values as they are."""
    def typed(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value
        return dg.MetadataValue.int(value) if isinstance(value, int) else dg.MetadataValue.float(value)

    return {key: typed(value) for key, value in values.items()}


# Columns of the UI's tables after verdict and reason, and their types; measures nobody measured are left out.
# The UI shows the output's file name (a full path would take the width the reason needs); the report files and
# items_json give the full path.
_TABLE_TAIL = {"attempt": "int", "seed": "int", "prompt": "string", "asset": "string", "file": "string",
               "server": "string"}


def rows_table(name: str, rows: list[dict[str, Any]], *, with_asset: bool) -> dict[str, dg.MetadataValue]:
    """A UI table of report rows (batch.report): one row per output, regenerated attempt or failed prompt, its
    verdict and reason first, then its measures. At most MAX_TABLE_ROWS rows, the failed ones first; when rows
    are left out an entry `<name>_shown` says how many and where the rest are."""
    measures = [m for m in MEASURES if any(row[m] is not None for row in rows)]
    tail = {k: v for k, v in _TABLE_TAIL.items() if with_asset or k != "asset"}
    columns = {"verdict": "string", "reason": "string", **dict.fromkeys(measures, "float"), **tail}
    order = {FAILED: 0, REGENERATED: 1}
    shown = sorted(rows, key=lambda row: order.get(row["verdict"], 2))[:MAX_TABLE_ROWS]  # stable: prompt order
    cells = [{**row, "file": Path(row["path"]).name if row["path"] else ""} for row in shown]
    records = [dg.TableRecord({c: row[c] if t != "string" else "" if row[c] is None else str(row[c])
                               for c, t in columns.items()}) for row in cells]
    schema = dg.TableSchema(columns=[dg.TableColumn(c, t) for c, t in columns.items()])
    table = {name: dg.MetadataValue.table(records=records, schema=schema)}
    if len(shown) < len(rows):
        table[f"{name}_shown"] = dg.MetadataValue.text(
            f"the first {len(shown)} of {len(rows)} rows, failed ones first; every row is in the JSON report")
    return table
