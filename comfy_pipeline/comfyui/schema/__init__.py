"""The bundled ComfyUI 0.33.0 `/object_info`, trimmed to the node classes this project uses.

It is the real server's answer (same shapes, both combo notations: legacy `[[...], {...}]` and V3
`["COMBO", {"options": [...]}]`) with one change: the model combo lists name the model files our two
workflows need, so it describes "a ComfyUI with the official models installed". Offline pre-flight
validates against it, and the simulator serves it (with its own list of installed models).
"""

import copy
import functools
import json
from importlib import resources
from typing import Any

# (class_type, input name) -> models folder whose files fill that combo.
MODEL_INPUTS: dict[tuple[str, str], str] = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("LTXAVTextEncoderLoader", "text_encoder"): "text_encoders",
    ("LTXAVTextEncoderLoader", "ckpt_name"): "checkpoints",
    ("LTXVAudioVAELoader", "ckpt_name"): "checkpoints",
    ("LatentUpscaleModelLoader", "model_name"): "latent_upscale_models",
}

# The files the official Z-Image-Turbo and LTX-2 i2v templates load (docs/PROTOCOL.md section 11).
OFFICIAL_MODELS: dict[str, list[str]] = {
    "checkpoints": ["ltx-2-19b-dev-fp8.safetensors"],
    "diffusion_models": ["z_image_turbo_bf16.safetensors"],
    "text_encoders": ["gemma_3_12B_it_fp4_mixed.safetensors", "qwen_3_4b.safetensors"],
    "vae": ["ae.safetensors"],
    "loras": ["ltx-2-19b-distilled-lora-384.safetensors"],
    "latent_upscale_models": ["ltx-2-spatial-upscaler-x2-1.0.safetensors"],
}


@functools.cache
def _bundled() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("object_info.json").read_text(encoding="utf-8")
    return json.loads(text)


def load_bundled_object_info() -> dict[str, Any]:
    """The bundled object_info; a fresh deep copy each call, so callers may change it freely."""
    return copy.deepcopy(_bundled())


def object_info_with_models(models: dict[str, list[str]], object_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of `object_info` (default: the bundled one) whose model combos list exactly `models`.

    Like ComfyUI, VAELoader always offers "pixel_space" after the installed VAE files.
    """
    info = copy.deepcopy(object_info if object_info is not None else _bundled())
    for (class_type, input_name), folder in MODEL_INPUTS.items():
        spec = info.get(class_type, {}).get("input", {}).get("required", {}).get(input_name)
        if spec is None:
            continue
        files = sorted(models.get(folder, []))
        if class_type == "VAELoader":
            files.append("pixel_space")
        if spec[0] == "COMBO":
            spec[1]["options"] = files
        else:
            spec[0] = files
    return info
