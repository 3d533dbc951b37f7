"""The code location: everything under `defs/`, found by Dagster's loader, plus what cannot live there.

`defs/` is loaded the way `dg` loads a project's defs folder: every module's assets, checks, jobs, schedules and
sensors, and every `defs.yaml` component, so a file that `dg scaffold defs` writes there is part of the code
location without an edit here. Hand-built here: the resources, loggers and executor the whole location shares
(a `Definitions` at module scope inside `defs/` would shadow the rest of its module, so there is none).

The tree is built from the imported `comfy_pipeline.defs` package rather than by `dg.load_from_defs_folder`, which
looks for pyproject.toml above this file: an installed wheel has none, and a venv inside some other project would
find that project's. Loaded by workspace.yaml, [tool.dagster], [tool.dg] and `-m comfy_pipeline`.
"""

import warnings
from pathlib import Path

import dagster as dg

import comfy_pipeline.defs
from comfy_pipeline.defs.io_manager import ManifestIOManager
from comfy_pipeline.defs.loggers import progress_logger
from comfy_pipeline.defs.resources import ComfyUIResource, QualityThresholds
from comfy_pipeline.defs.workflow_asset import check_inputs

CODE_LOCATION_NAME = "comfy_pipeline"


def shared_definitions() -> dg.Definitions:
    """What every asset and job of the location shares."""
    # Server and credentials come from the environment when a run uses them (comfy_pipeline/settings.py), so the
    # definitions hold none of them: nothing secret can reach a stored run config from here.
    comfy = ComfyUIResource()
    return dg.Definitions(
        # Asset values are per-run JSON manifests (defs/io_manager.py), never one shared pickle per asset.
        resources={"comfy": comfy, "quality": QualityThresholds(), "io_manager": ManifestIOManager()},
        # `console` stays the default; `comfy-pipeline check` selects `progress` for a readable terminal.
        loggers={"console": dg.default_loggers()["console"], "progress": progress_logger},
        # Steps are HTTP calls to the GPU server: one process is enough, and it saves seconds per step.
        executor=dg.in_process_executor,
    )


def defs_folder_definitions() -> dg.Definitions:
    """Everything Dagster's loader finds in `defs/` (Python modules and defs.yaml components)."""
    # The project root is only where components resolve relative paths from: the folder holding the package.
    project_root = Path(comfy_pipeline.defs.__file__).resolve().parents[2]
    tree = dg.ComponentTree(
        defs_module=comfy_pipeline.defs, project_root=project_root, code_location_name=CODE_LOCATION_NAME
    )
    with warnings.catch_warnings():
        # The loader calls its own preview-stage helpers; dg.load_from_defs_folder silences the same warnings.
        warnings.simplefilter("ignore", dg.PreviewWarning)
        warnings.simplefilter("ignore", dg.BetaWarning)  # the code references it attaches to defs.yaml assets
        return tree.build_defs()


def location_definitions() -> dg.Definitions:
    found = dg.Definitions.merge(defs_folder_definitions(), shared_definitions())
    # One instance cannot see the others: each ComfyUI asset's input is checked here, against them all.
    check_inputs(declared_specs(found))
    return found


def declared_specs(definitions: dg.Definitions) -> list[dg.AssetSpec]:
    """The specs of every asset, read without resolving the asset graph: resolving fails first on an input that
    no asset makes, with Dagster's message that names neither the instance nor the fix."""
    specs: list[dg.AssetSpec] = []
    for item in definitions.assets or []:
        if isinstance(item, dg.AssetsDefinition):
            specs.extend(item.specs)
        elif isinstance(item, dg.AssetSpec):
            specs.append(item)
    return specs


defs = location_definitions()
