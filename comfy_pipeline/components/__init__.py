"""Dagster Components of comfy_pipeline (the `registry_modules` of pyproject.toml's [tool.dg.project]).

`ComfyWorkflowComponent`: a ComfyUI workflow becomes an asset with a `defs.yaml`; see README "Add your own workflow".
"""

from comfy_pipeline.components.workflow_component import ComfyWorkflowComponent

__all__ = ["ComfyWorkflowComponent"]
