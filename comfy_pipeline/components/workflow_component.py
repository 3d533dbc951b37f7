"""ComfyWorkflowComponent: a ComfyUI workflow (API JSON + .params.json) becomes a Dagster asset with a defs.yaml.

Everything an instance says is checked when the definitions load (`dg check defs`): the workflow and its kind,
each fixed parameter against the workflow's .params.json, the quality settings; the input is checked against the
whole code location by definitions.py (workflow_asset.check_inputs), since one instance cannot see the others.
"""

import contextlib
import os
from pathlib import Path
from typing import Annotated, Any

import dagster as dg
import pydantic
from pydantic import Field

from comfy_pipeline.defs.resources import QualityThresholds, gpu_pool
from comfy_pipeline.defs.workflow_asset import WorkflowAsset, build_workflow_asset
from comfy_pipeline.workflows.workflow import MAP_SUFFIX, WORKFLOW_KINDS, Workflow, WorkflowError, load_workflow


class ComponentError(ValueError):
    """An instance's defs.yaml says something that cannot work; the message names the file and the fix."""


class RetrySettings(dg.Resolvable, dg.Model):
    """How a step that met a transient server fault (unreachable, restarted, 5xx) is tried again."""

    max_retries: int | None = Field(default=None, description="Tries after the first, 0 or more (default: env "
                                    "COMFY_PIPELINE_STEP_RETRIES, else 3).")
    delay: float | None = Field(default=None, description="Seconds before the first retry, doubled each time, 0 or "
                                "more (default: env COMFY_PIPELINE_RETRY_DELAY_S, else 10).")


def _scaffold_params() -> type[pydantic.BaseModel]:
    return pydantic.create_model("ComfyWorkflowScaffoldParams", workflow=(str, Field(
        description="The workflow: a name in workflows/, or the path of a workflow .json with its .params.json")))


class ComfyWorkflowScaffolder(dg.Scaffolder):
    """`dg scaffold defs comfy_pipeline.components.ComfyWorkflowComponent NAME --workflow WORKFLOW`: a defs.yaml
    that loads as written: key NAME, the input its kind takes, the parameters no prompt feeds at their defaults."""

    @classmethod
    def get_scaffold_params(cls) -> type[pydantic.BaseModel]:
        return _scaffold_params()

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        import click  # dg's command line: a ClickException is printed as one line, not a traceback

        from comfy_pipeline.components.scaffold import defs_yaml  # the text, in its own module

        try:
            text = defs_yaml(request.type_name, request.target_path.name, request.params.workflow)
        except WorkflowError as exc:
            with contextlib.suppress(OSError):
                request.target_path.rmdir()  # dg made it; leave nothing half-made behind
            raise click.ClickException(str(exc)) from None
        (request.target_path / "defs.yaml").write_text(text, encoding="utf-8")


@dg.scaffold_with(ComfyWorkflowScaffolder)
class ComfyWorkflowComponent(dg.Component, dg.Resolvable, dg.Model):
    """A ComfyUI workflow as a software-defined asset: one ComfyUI prompt per prompt spec of its input (text-to-image)
    or per good image of its input (image-to-image, image-to-video); every output checked; the outputs, checks,
    lineage and metadata recorded like the shipped generated_image and ltx2_video (which are instances too)."""

    workflow: str = Field(description="The workflow: a name in workflows/ (e.g. z_image_turbo_generation), or a "
                          "path (absolute, or relative to this defs.yaml's folder) to a workflow .json with its "
                          ".params.json beside it.")
    asset: dg.ResolvedAssetSpec = Field(description="The asset: key, group_name, description, kinds, tags, owners, "
                                        "automation_condition, metadata, deps, as Dagster's asset attributes.")
    input: str = Field(description="The upstream asset whose value feeds the workflow: prompt specs (`prompt`) for a "
                       "text-to-image workflow, images (e.g. `generated_image`) for image-to-image and image-to-video.")
    params: Annotated[dict[str, Any], dg.Resolver.passthrough()] = Field(
        default_factory=dict, description="Fixed values of the workflow's parameters, for every prompt (over what "
        "each prompt gives). Kept verbatim: no templating.")
    quality: Annotated[dict[str, Any], dg.Resolver.passthrough()] = Field(
        default_factory=dict, description="This asset's output check settings over the `quality` resource's: any of "
        "its fields (image_min_bytes, min_motion, content_retries, skip_checks...).")
    pool: str | None = Field(default=None, description="The Dagster pool of the step. Default: the server set's, "
                             "shared with the shipped assets.")
    retry: RetrySettings | None = Field(default=None, description="Retries after a transient server fault.")
    check_name: str | None = Field(default=None, description="The asset check's name. Default: image_quality or "
                                   "video_quality, after what the workflow makes.")

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        where = _relative(context.path / "defs.yaml", context.project_root)
        try:
            asset = self.workflow_asset(context.path, where)
        except (WorkflowError, ComponentError) as exc:
            raise ComponentError(f"{where}: {exc}") from None
        return dg.Definitions(assets=[build_workflow_asset(asset)])

    def workflow_asset(self, folder: Path, where: str = "") -> WorkflowAsset:
        """The checked record of this instance; `folder` is its defs.yaml's (relative workflow paths start there)."""
        workflow, ref = self._load_workflow(folder)
        if workflow.kind not in WORKFLOW_KINDS:
            raise ComponentError(f"workflow {workflow.name!r} does not say what it does: add \"kind\": one of "
                                 f"{', '.join(WORKFLOW_KINDS)} to {workflow.name}{MAP_SUFFIX}")
        if self.asset.partitions_def is not None:
            raise ComponentError("asset.partitions_def: partitioned ComfyUI assets are not supported (each "
                                 "materialization is one batch of prompts); remove it")
        retry = self.retry or RetrySettings()
        if any(value is not None and value < 0 for value in (retry.max_retries, retry.delay)):
            raise ComponentError(f"retry: max_retries and delay must be 0 or more, got {retry.max_retries}, "
                                 f"{retry.delay}")
        return WorkflowAsset(
            spec=self.asset, input=dg.AssetKey.from_user_string(self.input), workflow=workflow, workflow_ref=ref,
            fixed=self._fixed(workflow), quality=self._quality(), pool=self.pool or gpu_pool(),
            check_name=self.check_name or f"{workflow.makes}_quality", max_retries=retry.max_retries,
            retry_delay=retry.delay, defined_in=where,
        )

    def _load_workflow(self, folder: Path) -> tuple[Workflow, str]:
        """The workflow, and what run config's `workflow` names it by: its name, or its file's absolute path."""
        if os.sep in self.workflow or "/" in self.workflow or self.workflow.endswith(".json"):
            path = (folder / self.workflow).resolve()
            if not path.is_file():
                raise ComponentError(f"workflow file {self.workflow} ({path}) does not exist")
            return load_workflow(path.name, directory=path.parent), str(path)
        return load_workflow(self.workflow), self.workflow

    def _fixed(self, workflow: Workflow) -> dict[str, Any]:
        unknown = sorted(set(self.params) - set(workflow.params))
        if unknown:
            known = ", ".join(sorted(workflow.params))
            raise ComponentError(f"params: workflow {workflow.name!r} has no parameter(s) "
                                 f"{', '.join(map(repr, unknown))}; known parameters: {known}")
        if workflow.kind.startswith("image-to-") and workflow.image_input in self.params:
            raise ComponentError(f"params: {workflow.image_input!r} is the input picture, uploaded from `input` "
                                 f"({self.input}) for each prompt; remove it from params")
        try:
            return {name: workflow.params[name].check(value, workflow.name) for name, value in self.params.items()}
        except WorkflowError as exc:
            raise ComponentError(f"params: {exc}") from None

    def _quality(self) -> dict[str, Any]:
        known = sorted(QualityThresholds.model_fields)
        unknown = sorted(set(self.quality) - set(known))
        if unknown:
            raise ComponentError(f"quality: no setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        try:
            QualityThresholds(**self.quality)
        except pydantic.ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ComponentError(f"quality: {problems}") from None
        return dict(self.quality)


def _relative(path: Path, root: Path | None) -> str:
    try:
        return str(path.relative_to(root)) if root else str(path)
    except ValueError:
        return str(path)
