"""The Python assets of the pipeline prompt -> generated_image -> ltx2_video -> validation_report: the prompt
specs and the report. The two GPU assets between them are ComfyWorkflowComponent instances
(defs/generated_image/defs.yaml, defs/ltx2_video/defs.yaml), built by defs/workflow_asset.py.

Data travels with the asset graph: each asset's value is a small manifest (batch.records: the prompt specs; for
images and videos the files, hashes, specs and prompt ids) stored per materialization by the ManifestIOManager,
and each downstream asset takes it as an input. So a run reads its own prompts even when others run at once, a
re-execution reads its parent run's, and an asset materialized on its own reads the latest one. The images and
videos themselves are files in the output folder.

One bad prompt costs only itself: every good image goes on to its video and into the report, and the run fails
at its last step, naming each failed prompt and its ComfyUI node.
"""

from collections.abc import Iterator

import dagster as dg

from comfy_pipeline.batch import step
from comfy_pipeline.batch.records import GenerationManifest, PromptManifest, ReportManifest
from comfy_pipeline.batch.report import batch_figures, verdict, write_report
from comfy_pipeline.defs.config import PromptConfig
from comfy_pipeline.defs.io_manager import LATEST
from comfy_pipeline.defs.metadata import MAX_TABLE_ROWS, lineage_metadata, numbers, rows_table
from comfy_pipeline.defs.resources import ComfyUIResource
from comfy_pipeline.defs.step_results import permanent_failure, run_folder_of, store_failure
from comfy_pipeline.defs.workflow_asset import HOLDS_TAG
from comfy_pipeline.workflows.prompts import check_specs, library_specs

GROUP = "comfy"


@dg.asset(
    group_name=GROUP, kinds={"python"}, tags={HOLDS_TAG: "prompts"},
    description="The prompt specs of this run (run config, else the prompt library).",
)
def prompt(context: dg.AssetExecutionContext, config: PromptConfig) -> dg.Output[dict]:
    with permanent_failure("Bad prompt in run config: "):
        if config.prompts:
            specs = check_specs([p.to_spec() for p in config.prompts])
        else:
            library = library_specs()
            specs = library if config.use_library else library[:1]
    rows = [[i, s.text, s.motion_prompt or s.text, s.seed, f"{s.width}x{s.height}", f"{s.frames} @ {s.fps}"]
            for i, s in enumerate(specs[:MAX_TABLE_ROWS])]
    table = step.md_table(["#", "prompt", "motion", "seed", "size", "frames @ fps"], rows)
    context.log.info(f"{len(specs)} prompt(s) in this run")
    return dg.Output(
        PromptManifest(tuple(specs)).to_json(),
        metadata={"count": len(specs), "prompts": dg.MetadataValue.md(table), "first_prompt": specs[0].text},
    )


@dg.asset(
    group_name=GROUP,
    kinds={"pandas", "json", "csv"},
    description="One row per output (its verdict, the reason, its content measures), per regenerated attempt and "
    "per failed prompt, written as JSON (with every check) and CSV: this run's outputs, or the latest ones when "
    "materialized on its own.",
    check_specs=[
        dg.AssetCheckSpec(
            "all_outputs_valid", asset="validation_report",
            description="Every prompt produced its outputs and every output passed every check.",
        )
    ],
)
def validation_report(
    context: dg.AssetExecutionContext, generated_image: dict | None, ltx2_video: dict | None, comfy: ComfyUIResource
) -> Iterator[dg.MaterializeResult]:
    produced = _report_inputs({"generated_image": generated_image, "ltx2_video": ltx2_video})
    if not produced:
        raise dg.Failure(description="Nothing to report: neither generated_image nor ltx2_video has been "
                         "materialized. Run image_to_video_job first.", allow_retries=False)
    with store_failure():
        report = write_report(run_folder_of(context, comfy), context.run_id, produced)
    said = verdict(report.rows)
    context.log.info(f"validation report: {said[:500]} -> {report.json_path}")
    counts = numbers({
        "outputs": report.outputs, "passed_outputs": report.passed, "failed_outputs": report.failed_outputs,
        "failed_prompts": report.failed_prompts, "regenerated": report.regenerated,
        "validation_s": round(sum(batch_figures(m)["validation_s"] for m in produced.values()), 4),
    })
    yield dg.MaterializeResult(
        value=ReportManifest(report.json_path, report.csv_path, report.passed,
                             len(report.failed)).to_json(),
        metadata={
            "backend": report.backend, **counts,
            "report_json": dg.MetadataValue.path(report.json_path),
            "report_csv": dg.MetadataValue.path(report.csv_path),
            "timings_s": dg.MetadataValue.json(report.timings),
            **rows_table("report", report.rows, with_asset=True),
            "dagster/row_count": len(report.rows),
            **lineage_metadata({name: m.source for name, m in produced.items()}),
        },
        check_results=[dg.AssetCheckResult(
            check_name="all_outputs_valid", passed=not report.failed,
            metadata={**counts, "report_json": dg.MetadataValue.path(report.json_path),
                      **(rows_table("failed_rows", report.failed, with_asset=True) if report.failed else {})},
            description=said[:2000],
        )],
    )
    if report.failed:
        raise dg.Failure(description=report.failure(), allow_retries=False,
                         metadata={"failed_outputs": report.failed_outputs, "failed_prompts": report.failed_prompts})


def _report_inputs(manifests: dict[str, dict | None]) -> dict[str, GenerationManifest]:
    """What the report covers: the inputs made in this run (or its parent run, when re-executed); when none were,
    as when the report is materialized on its own, the latest materialization of each."""
    present = {name: GenerationManifest.from_json(m) for name, m in manifests.items() if m is not None}
    this_run = {name: m for name, m in present.items() if m.source is None or m.source.how != LATEST}
    return this_run or present
