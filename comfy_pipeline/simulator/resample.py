"""ComfyUI's image resize (`comfy.utils.common_upscale`, used by ImageScale, ImageScaleBy and friends), in numpy.

The real server crops (crop "center") and then resizes with the node's `upscale_method`: "lanczos" through Pillow,
the others through `torch.nn.functional.interpolate` (no antialiasing, align_corners False). Each torch mode is a
linear map per axis, so it is written here as a weight matrix; measured against 0.33.0 and 0.8.0 the pixels agree
exactly (lanczos, nearest-exact) or within one level of 255 from float rounding (docs/PROTOCOL.md section 8b).
"""

import math

import numpy as np
from PIL import Image

METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
CUBIC_A = -0.75  # torch's bicubic coefficient (Pillow's BICUBIC uses -0.5)


def _cubic(t: np.ndarray) -> np.ndarray:
    t, a = np.abs(t), CUBIC_A
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _weights(n_out: int, n_in: int, method: str) -> np.ndarray:
    """(n_out, n_in): output sample i is weights[i] @ the input samples, as torch's interpolate computes it."""
    scale = n_in / n_out
    weights = np.zeros((n_out, n_in))
    i = np.arange(n_out)
    if method == "nearest-exact":
        weights[i, np.minimum(np.floor((i + 0.5) * scale).astype(int), n_in - 1)] = 1
    elif method == "area":  # adaptive average pooling: window [floor(i*in/out), ceil((i+1)*in/out))
        for row in range(n_out):
            start, end = math.floor(row * n_in / n_out), math.ceil((row + 1) * n_in / n_out)
            weights[row, start:end] = 1 / (end - start)
    elif method == "bilinear":
        x = np.maximum((i + 0.5) * scale - 0.5, 0)
        x0 = np.minimum(np.floor(x).astype(int), n_in - 1)
        np.add.at(weights, (i, x0), 1 - (x - x0))
        np.add.at(weights, (i, np.minimum(x0 + 1, n_in - 1)), x - x0)
    elif method == "bicubic":  # four taps, edge samples repeated
        x = (i + 0.5) * scale - 0.5
        x0 = np.floor(x).astype(int)
        for k in range(-1, 3):
            np.add.at(weights, (i, np.clip(x0 + k, 0, n_in - 1)), _cubic(x - x0 - k))
    else:
        raise ValueError(f"unknown upscale_method {method!r}; ComfyUI's are {', '.join(METHODS)}")
    return weights


def _center_crop(picture: Image.Image, width: int, height: int) -> Image.Image:
    """Cut the picture to the target's aspect ratio first, as common_upscale does with crop "center"."""
    old_width, old_height = picture.size
    old_aspect, new_aspect = old_width / old_height, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_width - old_width * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_height - old_height * (old_aspect / new_aspect)) / 2)
    return picture.crop((x, y, old_width - x, old_height - y))


def common_upscale(picture: Image.Image, size: tuple[int, int], method: str = "lanczos",
                   crop: str = "disabled") -> Image.Image:
    """`picture` (RGB) resized to `size` (width, height) as the real server would, 8 bits a channel."""
    width, height = size
    if crop == "center":
        picture = _center_crop(picture, width, height)
    if method == "lanczos":
        return picture.resize(size, Image.Resampling.LANCZOS)
    pixels = np.asarray(picture.convert("RGB"), dtype=np.float64) / 255.0
    rows, cols = _weights(height, pixels.shape[0], method), _weights(width, pixels.shape[1], method)
    out = np.einsum("yh,hwc,xw->yxc", rows, pixels, cols)
    # SaveImage's conversion: clip, then truncate to uint8.
    return Image.fromarray(np.clip(out * 255.0, 0, 255).astype(np.uint8))
