"""`comfy-pipeline bench`: proves, side by side with a seed-style baseline, that the pipeline keeps the GPU busy
and costs next to nothing around it. Everything runs against in-process simulators on loopback."""
