"""An offline stand-in for a ComfyUI 0.33.0 server: the real protocol, simulated GPU work, real output files."""

from comfy_pipeline.simulator.faults import KINDS as FAULT_KINDS

__all__ = ["Simulator", "FAULT_KINDS"]


def __getattr__(name: str):
    # Lazy: the server pulls in aiohttp and numpy, which `comfy-pipeline --help` and friends do not need.
    if name == "Simulator":
        from comfy_pipeline.simulator.embedded import Simulator

        return Simulator
    raise AttributeError(f"module 'comfy_pipeline.simulator' has no attribute {name!r}")
