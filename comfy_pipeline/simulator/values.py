"""The lightweight values that flow along the simulated graph's links.

No tensors: an IMAGE batch is a recipe (`Images.source`) that `render.py` paints only when a save node
needs pixels, so a 121-frame 720p video costs nothing until SaveVideo writes it.
"""

from dataclasses import dataclass

# Image recipes (Images.source), each a tuple whose first item names the kind:
#   ("solid", rgb)                 EmptyImage
#   ("generated", seed, text)      a decoded text-to-image latent: seeded pattern + label
#   ("file", path, sha256)         LoadImage
#   ("resize", inner, crop, method) any resize node: paint `inner`, then resize it to this size as ComfyUI's
#                                  common_upscale does (crop "center"/"disabled", upscale_method: resample.py)
#   ("invert", inner) / ("blur", inner, radius)
#   ("repeat", inner)              RepeatImageBatch: frame i is inner frame i % inner.count
#   ("motion", inner, seed)        a decoded video latent: frame 0 is inner frame 0, then a slow push-in and drift


@dataclass(frozen=True)
class Images:
    width: int
    height: int
    count: int
    source: tuple


@dataclass(frozen=True)
class Latent:
    width: int  # in pixels, as the decoded image will be
    height: int
    frames: int  # 1 for an image latent
    batch: int
    seed: int | None = None  # set once sampled
    text: str = ""  # the positive prompt it was sampled with
    image: Images | None = None  # image conditioning (LTX-2 image-to-video)
    audio: bool = False  # an LTX-2 audio latent


@dataclass(frozen=True)
class Audio:
    """AUDIO from a decoded audio latent (LTXVAudioVAEDecode): a seeded tone; `silent` = all-zero samples."""

    seed: int
    silent: bool = False


@dataclass(frozen=True)
class Video:
    images: Images
    fps: float
    audio: Audio | None = None  # CreateVideo's optional `audio` input


@dataclass(frozen=True)
class Token:
    """Everything without a picture: MODEL, CLIP, VAE, CONDITIONING, NOISE, SAMPLER, SIGMAS, GUIDER, AUDIO..."""

    kind: str
    text: str = ""  # CONDITIONING / GUIDER: the prompt text
    seed: int | None = None  # NOISE
    steps: int = 0  # SIGMAS
