"""The Dagster layer: assets, resources, jobs, schedules, sensors and their config.

Dagster's loader reads this folder (comfy_pipeline/definitions.py): every module's assets, checks, jobs, schedules
and sensors, and any defs.yaml, join the code location, so a new module here (`dg scaffold defs dagster.asset
x.py`) needs no registration. No module here may hold a `dg.Definitions` at module scope: the loader would take it
instead of the rest of that module. The shared resources, loggers and executor are built in definitions.py.
"""
