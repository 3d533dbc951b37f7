"""The IO manager of the pipeline's assets: each materialization's value is a small JSON manifest of its own.

Dagster's default IO manager keeps one pickle per asset, shared by every run, so concurrent runs and
re-executions read each other's values. Here each value (the prompt specs; for images and videos a manifest of
files, hashes, specs and prompt ids) is written once per run, `<storage>/<asset>/<run id>.json`, and read back
the way Dagster resolves the input:
- produced in this run, or in the parent run of a re-execution: that run's manifest;
- not produced in this run (an asset materialized on its own): the latest materialization's manifest;
- never materialized: None, and the asset says what to do.
The files themselves stay in the output folder; manifests only point at them. When the outputs go to an object
store (COMFY_PIPELINE_OUTPUT_DIR=s3://bucket/prefix), so do the manifests (`s3://bucket/prefix/manifests/`): a run
pod then needs no shared disk to re-execute a run or to materialize one asset from the latest upstream.
"""

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from comfy_pipeline import settings
from comfy_pipeline.batch import outputs
from comfy_pipeline.storage import LocalStore, Store, StoreError, is_store_url, join_key, open_store, open_uri

# How a downstream asset got its input; the assets record it as lineage metadata.
THIS_RUN, EARLIER_RUN, LATEST = "this run", "parent run (re-execution)", "latest materialization"


class ManifestIOManager(dg.ConfigurableIOManager):
    """JSON manifests per asset and run, on a local disk or an object store."""

    base_dir: str | None = Field(
        default=None, description="Where manifests go: a folder or s3://bucket/prefix. Default: "
        "<output location>/manifests when COMFY_PIPELINE_OUTPUT_DIR is an object store, else "
        "<DAGSTER_HOME>/storage/comfy_pipeline_manifests."
    )

    def _store(self, instance: dg.DagsterInstance) -> Store:
        if self.base_dir:
            return open_store(self.base_dir)
        location = settings.output_location()
        if is_store_url(location):
            return open_store(f"{location}/manifests")
        return LocalStore(Path(instance.storage_directory()) / "comfy_pipeline_manifests")

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None or not context.has_asset_key:
            return  # an op's return value (the connection check's) is its metadata; nothing reads it back
        asset = context.asset_key.to_user_string()
        store = self._store(context.step_context.instance)
        data = outputs.json_bytes({"asset": asset, "run_id": context.run_id, "value": obj})
        try:  # a retried step rewrites its manifest whole
            key = store.put_bytes(join_key(_safe(asset), f"{context.run_id}.json"), data, replace=True)
        except StoreError as exc:
            raise dg.Failure(description=f"The {asset} manifest cannot be written: {exc}",
                             allow_retries=False) from None
        context.add_output_metadata({"manifest": dg.MetadataValue.path(store.uri(key))})

    def load_input(self, context: dg.InputContext) -> dict | None:
        instance = context.step_context.instance
        key = context.asset_key
        upstream_run = context.upstream_output.run_id if context.upstream_output else None
        if upstream_run and _is_real_run_id(upstream_run):
            how = THIS_RUN if upstream_run == context.step_context.run_id else EARLIER_RUN
            store = self._store(instance)
            where = store.uri(join_key(_safe(key.to_user_string()), f"{upstream_run}.json"))
        else:
            event = instance.get_latest_materialization_event(key)
            if event is None:
                return None
            meta = event.asset_materialization.metadata if event.asset_materialization else {}
            manifest = meta.get("manifest")
            if manifest is None:
                return None  # made before manifests existed
            upstream_run, how, where = event.run_id, LATEST, str(manifest.value)
        try:
            store, name = open_uri(where)
            stored = json.loads(store.get_bytes(name).decode("utf-8"))
        except (OSError, ValueError, StoreError) as exc:
            raise dg.Failure(
                description=f"The {key.to_user_string()} manifest of run {upstream_run} cannot be read ({exc}). "
                f"Materialize {key.to_user_string()} again.",
                allow_retries=False,
            ) from None
        return {**stored["value"], "source": {"run_id": upstream_run, "how": how}}


def _is_real_run_id(run_id: str) -> bool:
    # Dagster passes a placeholder ("__EPHEMERAL_RUN_ID") when the upstream is not part of the run.
    return not run_id.startswith("__")


def _safe(asset: str) -> str:
    return asset.replace("/", "__").replace(os.sep, "__")
