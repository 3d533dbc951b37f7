"""comfy_pipeline: a Dagster pipeline that drives a ComfyUI GPU server.

Three layers: the core (``comfyui``, ``simulator``, ``media``, ``workflows``, ``batch``) imports no Dagster; the
Dagster layer is ``defs`` (gathered in ``definitions``); the command line is ``cli``. The Definitions are loaded
lazily as ``code_location`` so that ``dagster job execute -m comfy_pipeline`` finds them while
``import comfy_pipeline.comfyui`` stays free of Dagster. (Not as ``defs``: that name is the ``defs/`` package.)
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "code_location":
        from comfy_pipeline.definitions import defs

        return defs
    raise AttributeError(f"module 'comfy_pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return ["__version__", "code_location"]
