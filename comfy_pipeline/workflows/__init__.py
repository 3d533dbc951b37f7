"""ComfyUI API-format workflows (no Dagster): loading and injection, prompt specs, pre-flight against /object_info."""
