"""The content faults (faults.CONTENT) applied where a save node takes its pixels and sound.

They change the recipe, not the file: the output is still a well-formed PNG or MP4, bad in the ways real models
fail without an error (black after a NaN, one flat colour, a frozen clip, a clip that animates the wrong picture,
a silent sound track).
"""

import dataclasses

from comfy_pipeline.simulator.values import Audio, Images

FLAT_RGB = 0x7A8290  # one mid grey-blue: not black, no detail
OFF_START_SALT = 0x5EED  # the off-start clip's picture: another seed's generated image


def faulted_images(images: Images, faults: frozenset[str]) -> Images:
    if "black-output" in faults:
        return dataclasses.replace(images, source=("solid", 0x000000))
    if "flat-output" in faults:
        return dataclasses.replace(images, source=("solid", FLAT_RGB))
    if "off-start-output" in faults:
        images = _off_start(images)
    if "frozen-output" in faults and images.count > 1:
        images = dataclasses.replace(images, source=("repeat", dataclasses.replace(images, count=1)))
    return images


def faulted_audio(audio: Audio | None, faults: frozenset[str]) -> Audio | None:
    """A silent fault gives every saved video a track of zeros, with or without the workflow's own sound."""
    if "silent-output" in faults:
        return Audio(seed=audio.seed if audio else 0, silent=True)
    return audio


def _off_start(images: Images) -> Images:
    """The clip moves like a good one, over another picture than its start image (inverted, for non-clips)."""
    if images.source[0] != "motion":
        return dataclasses.replace(images, source=("invert", images))
    _, _, seed = images.source
    other = Images(images.width, images.height, 1, ("generated", seed ^ OFF_START_SALT, "off-start"))
    return dataclasses.replace(images, source=("motion", other, seed))
