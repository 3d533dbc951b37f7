"""A ComfyUI workflow as a software-defined asset: what every ComfyWorkflowComponent instance builds, the shipped
generated_image and ltx2_video included.

The asset takes its input's value (the prompt specs, or an earlier asset's images) through the IO manager, sends
one ComfyUI prompt per prompt spec or good input image, and records the outputs (batch.step via step_results).
What the input must hold follows the workflow's kind; every asset says what it holds (tag HOLDS_TAG), so a wrong
input is refused when the definitions load (check_inputs).
"""

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pydantic

from comfy_pipeline.batch import step
from comfy_pipeline.batch.records import GenerationManifest, Lineage, PromptManifest
from comfy_pipeline.defs.config import EditConfig, ImageConfig, VideoConfig
from comfy_pipeline.defs.io_manager import LATEST
from comfy_pipeline.defs.resources import ComfyUIResource, QualityThresholds
from comfy_pipeline.defs.step_results import StepPlan, permanent_failure, run_step
from comfy_pipeline.workflows.prompts import PromptSpec, check_specs, check_text
from comfy_pipeline.workflows.workflow import Workflow

HOLDS_TAG = "comfy_pipeline/holds"  # prompts | images | videos: what an asset's value holds
NEEDS = {"text-to-image": "prompts", "image-to-image": "images", "image-to-video": "images"}  # what each kind takes
INPUT_META, DEFINED_IN_META = "comfy_pipeline/input", "comfy_pipeline/defined_in"

# What each output kind's check covers (the shipped assets' texts).
CHECK_TEXT = {
    "image": "Every prompt produced an image, and every image is PNG or JPEG, within the size limits, decodes, has "
    "the requested dimensions, and is neither black nor flat (the content checks the workflow does not skip). "
    "Failed prompts and broken images are named here and are not used downstream; the good images go on.",
    "video": "Every image produced a video, and every video is MP4 or WebM, within the size limits, decodes, lasts "
    "more than 0 s, has the requested frame count, fps and dimensions, moves, is not blank, starts from its image "
    "and, when it has or should have sound, is not silent (the content checks the workflow does not skip).",
}


class InputError(ValueError):
    """An instance's `input` does not fit its workflow; the message names the instance and the fix."""


@dataclass(frozen=True)
class WorkflowAsset:
    """One ComfyUI asset, checked: what a ComfyWorkflowComponent instance says."""

    spec: dg.AssetSpec  # key, group, description, kinds, tags, owners, automation condition... as given
    input: dg.AssetKey
    workflow: Workflow  # loaded and checked when the definitions load
    workflow_ref: str  # what run config's `workflow` defaults to: a name, or the workflow file's path
    fixed: Mapping[str, Any]  # parameter values for every prompt, checked against the workflow
    quality: Mapping[str, Any]  # QualityThresholds fields this asset sets (skip_checks: content checks it skips)
    pool: str
    check_name: str
    max_retries: int | None = None
    retry_delay: float | None = None
    defined_in: str = ""  # the defs.yaml, for messages
    output_subfolder: str = ""  # under the run folder's images/ or videos/; "": straight in them


def build_workflow_asset(asset: WorkflowAsset) -> dg.AssetsDefinition:
    spec, workflow = asset.spec, asset.workflow
    config_class = _config_class(asset)
    # A workflow named by name is looked up again when the step runs (the workflows folders may change, e.g.
    # $COMFY_PIPELINE_WORKFLOWS_DIR); one named by its path is read from there.
    by_path = Path(asset.workflow_ref).is_absolute()
    plan = StepPlan(step.IMAGES if workflow.makes == "image" else step.VIDEOS, asset.check_name,
                    workflow.path.name if by_path else asset.workflow_ref, workflow.path.parent if by_path else None,
                    asset.fixed, asset.max_retries, asset.retry_delay, asset.output_subfolder, workflow.kind)
    extra_deps = [dep for dep in spec.deps if dep.asset_key != asset.input]

    @dg.asset(
        key=spec.key,
        ins={"upstream": dg.AssetIn(key=asset.input)},
        deps=extra_deps or None,
        group_name=spec.group_name,
        description=spec.description or workflow.description,
        kinds=set(spec.kinds) or {"comfyui", workflow.makes},
        tags={**spec.tags, HOLDS_TAG: f"{workflow.makes}s"},
        owners=list(spec.owners) or None,
        metadata={**spec.metadata, "comfyui_workflow": asset.workflow_ref, "comfyui_workflow_kind": workflow.kind,
                  INPUT_META: asset.input.to_user_string(), DEFINED_IN_META: asset.defined_in},
        automation_condition=spec.automation_condition,
        pool=asset.pool,
        check_specs=[dg.AssetCheckSpec(asset.check_name, asset=spec.key, description=CHECK_TEXT[workflow.makes])],
    )
    def _comfy_asset(context: dg.AssetExecutionContext, config: config_class, upstream: dict | None,
                     comfy: ComfyUIResource, quality: QualityThresholds) -> Iterator[dg.MaterializeResult]:
        sources, lineage, carried = _sources(asset, context, config, upstream)
        own = config.workflow == asset.workflow_ref  # run config may name another workflow of the folders
        chosen = plan if own else dataclasses.replace(plan, workflow=config.workflow, workflow_folder=None, fixed=None)
        yield from run_step(context, comfy, with_overrides(quality, asset.quality), chosen, sources, lineage,
                            config.prompt_ids, carried)

    return _comfy_asset


def with_overrides(quality: QualityThresholds, overrides: Mapping[str, Any]) -> QualityThresholds:
    """The `quality` resource with an asset's own thresholds over it; its skip_checks add to the resource's."""
    if not overrides:
        return quality
    values = {name: getattr(quality, name) for name in QualityThresholds.model_fields}
    given = dict(overrides)
    if "skip_checks" in given:
        given["skip_checks"] = sorted({*values.get("skip_checks", []), *given["skip_checks"]})
    return QualityThresholds(**{**values, **given})


def _config_class(asset: WorkflowAsset) -> type[dg.Config]:
    """The run config of the asset's kind, its `workflow` defaulting to the asset's own."""
    base = {"text-to-image": ImageConfig, "image-to-image": EditConfig, "image-to-video": VideoConfig}[
        asset.workflow.kind]
    field = base.model_fields["workflow"]
    if field.default == asset.workflow_ref:
        return base  # the shipped assets keep their config types
    name = f"{base.__name__}_{asset.spec.key.to_python_identifier()}"
    return pydantic.create_model(name, __base__=base, workflow=(
        str, pydantic.Field(default=asset.workflow_ref, description=field.description)))


def _sources(asset: WorkflowAsset, context: dg.AssetExecutionContext, config: Any, upstream: dict | None
             ) -> tuple[list[step.Source], dict[str, Lineage | None], Sequence[str]]:
    """The prompts of this step, where they came from, and what the input lost in this run (named, skipped)."""
    name, kind = asset.input.to_user_string(), asset.workflow.kind
    if kind == "text-to-image":
        if upstream is None:
            raise dg.Failure(description=f"No prompt to render: `{name}` was never materialized. Materialize {name} "
                             "first, or run a job that includes it (image_to_video_job).", allow_retries=False)
        prompts = PromptManifest.from_json(upstream)
        return [step.Source(i, spec) for i, spec in enumerate(prompts.prompts)], {name: prompts.source}, ()
    if config.input_images:
        return _file_sources(config, kind), {}, ()
    if upstream is None:
        raise dg.Failure(
            description=f"No input image: {name} has never been materialized. Materialize it (or run a job that "
            f"includes it, e.g. image_to_video_job), or give ops.{context.op_def.name}.config.input_images in the "
            "run config.", allow_retries=False,
        )
    images = GenerationManifest.from_json(upstream)
    with permanent_failure():
        sources = step.sources_from_images(images, asset=name)
    this_run = images.source is None or images.source.how != LATEST  # a latest one's losses failed their own run
    lost = [f.line() for f in images.failed] + [step.broken_line(i) for i in images.items if not i.passed]
    for line in lost:
        context.log.warning(f"skipped, {name} lost it: {line}")
    return sources, {name: images.source}, lost if this_run else ()


def _file_sources(config: Any, kind: str) -> list[step.Source]:
    """Sources from local image files the run config names: every value and file checked before any is queued."""
    if kind == "image-to-video":
        text = config.motion_prompt or "Slow camera push-in"
        spec = PromptSpec(text=text, motion_prompt=text, negative_prompt=config.negative_prompt, seed=config.seed,
                          frames=config.frames, fps=config.fps)
        with permanent_failure("Bad video config: "):
            check_specs([spec])
            return step.sources_from_files(spec, config.input_images)
    with permanent_failure("Bad config: "):
        text = check_text(config.prompt) if config.prompt is not None else "image to image"
        return step.sources_from_files(PromptSpec(text=text, seed=config.seed), config.input_images)


def check_inputs(specs: Sequence[dg.AssetSpec]) -> None:
    """Every ComfyUI asset's input exists and holds what its workflow's kind takes; else InputError naming each
    instance, its input, what that holds, and the assets that would fit."""
    by_key = {spec.key: spec for spec in specs}
    problems = []
    for spec in specs:
        if INPUT_META not in spec.metadata:
            continue
        kind = spec.metadata["comfyui_workflow_kind"]
        needs, name = NEEDS[kind], spec.metadata[INPUT_META]
        fitting = sorted(s.key.to_user_string() for s in specs if s.tags.get(HOLDS_TAG) == needs and s is not spec)
        where = f"{spec.metadata.get(DEFINED_IN_META) or spec.key.to_user_string()}: input {name!r}"
        fix = f"set `input` to an asset that holds {needs} ({', '.join(fitting) or 'none in this code location'})"
        upstream = by_key.get(dg.AssetKey.from_user_string(name))
        if upstream is None:
            problems.append(f"{where} is not an asset of this code location; {fix}")
        elif upstream.tags.get(HOLDS_TAG) != needs:
            holds = upstream.tags.get(HOLDS_TAG)
            said = f"holds {holds}" if holds else f"does not say what it holds (tag {HOLDS_TAG})"
            problems.append(f"{where} {said}, but {kind} workflows take {needs}: {fix}")
    if problems:
        raise InputError("\n".join(problems))
