"""The Dagster layer: assets, resources, jobs, schedules, sensors and their config; gathered in comfy_pipeline.definitions."""
