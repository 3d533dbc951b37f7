"""ComfyUI protocol client. No Dagster here: this is usable on its own."""
