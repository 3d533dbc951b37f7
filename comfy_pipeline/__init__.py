"""comfy_pipeline: a Dagster pipeline that drives a ComfyUI GPU server.

The core (``comfy_pipeline.comfyui``, ``.simulator``, ``.workflows``, ``.media``, ``.generation``) does not
import Dagster. ``defs`` is loaded lazily so that ``dagster job execute -m comfy_pipeline`` finds it while
``import comfy_pipeline.comfyui`` stays free of Dagster.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "defs":
        from comfy_pipeline.definitions import defs

        return defs
    raise AttributeError(f"module 'comfy_pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return ["__version__", "defs"]
