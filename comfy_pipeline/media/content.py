"""Content checks: is the picture black or flat, is the clip frozen or blank, does it start from its start image,
is its sound there and audible. The file checks of checks.py say whether a file is a good file; these say whether
it is a usable picture.

Everything is measured on small copies: an image is reduced with Pillow, a video is decoded once by one ffmpeg
process that hands over a few frames (sampled across the whole clip, already scaled down) on a pipe and measures
the sound track in the same pass. That pass decodes every frame, so it also answers the "decodes" file check.
"""

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from comfy_pipeline.media.checks import (
    Check,
    ImageThresholds,
    VideoThresholds,
    file_size,
    image_file_checks,
    missing_message,
    video_file_checks,
)
from comfy_pipeline.media.probe import MediaError, VideoInfo, decode_image, probe_video
from comfy_pipeline.media.sampling import VideoSample, sample_video

CONTENT_CHECKS = ("brightness", "detail", "motion", "blank_frames", "start_frame", "audio")
MEASURE_KEYS = (
    "mean_luma",
    "luma_spread",
    "one_colour_share",
    "motion",
    "frozen_share",
    "blank_frame_share",
    "start_similarity",
    "audio_level_db",
)

SMALL_WIDTH = 160  # pixels across the copies everything is measured on
START_WIDTH = 64  # pixels across the gray copies the start frame is compared on
COLOUR_TOLERANCE = 16  # /255 per channel: pixels this close to the most common colour count as that colour


@dataclass(frozen=True)
class ContentThresholds:
    """Limits of the content checks. Every default passes real model output and fails the bad cases.

    min_mean_luma = 8.0 (0-255): "brightness" fails a picture darker than this on average. Black output
        (NaN-style all-zero, or limited-range video black) measures 0-1; a dark night scene still measures 15+.
    min_luma_spread = 4.0 (0-255, standard deviation of luma): "detail" fails a picture flatter than this.
        A flat colour, even through JPEG/H.264 noise, measures under 2; a photo measures 30-70.
    max_one_colour_share = 0.95: "detail" also fails a picture of which more than 95% is one colour (within
        16/255 per channel), e.g. a blank white page with a speck on it; a product shot on white stays under.
    min_motion = 0.6 (0-255): mean absolute luma difference between frames sampled 0.2 s apart, on a
        160-pixel-wide copy. "motion" fails a clip moving less than this; a pair of samples moving less is a
        frozen stretch. A still picture through H.264/AV1 measures under 0.3; a slow camera push-in over a
        textured picture measures 1.5+.
    max_frozen_share = 0.5: "motion" also fails a clip frozen for more than half of its length, even if it
        moves somewhere else.
    max_blank_frame_share = 0.25: "blank_frames" fails a clip of which more than a quarter of the sampled
        frames are black or flat (by the image limits above); a fade in or out stays under.
    min_start_similarity = 0.5 (SSIM, -1..1): "start_frame" fails a clip whose first frame is less like its
        start image (scaled to cover the frame, centre-cropped, as the workflow fits it) than this, both in gray
        64 pixels across. The start image itself as frame 0 through yuv420p H.264 at crf 23-40 measures 0.9+;
        another picture measures under 0.1.
    min_audio_level_db = -60.0 (dBFS, mean volume): "audio" fails a sound track quieter than this (digital
        silence measures -91); speech, music or ambience measure -45 to -15.
    skip: names of content checks to leave out (they are then absent from the result).
    """

    min_mean_luma: float = 8.0
    min_luma_spread: float = 4.0
    max_one_colour_share: float = 0.95
    min_motion: float = 0.6
    max_frozen_share: float = 0.5
    max_blank_frame_share: float = 0.25
    min_start_similarity: float = 0.5
    min_audio_level_db: float = -60.0
    skip: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.skip) - set(CONTENT_CHECKS))
        if unknown:
            raise ValueError(
                f"unknown content check(s) to skip: {', '.join(unknown)}; known: {', '.join(CONTENT_CHECKS)}"
            )
        object.__setattr__(self, "skip", frozenset(self.skip))


@dataclass(frozen=True)
class Validation:
    """The checks of one output (file checks first, then content checks) and the numbers measured on it."""

    checks: tuple[Check, ...]
    measures: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(MEASURE_KEYS))

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)


@dataclass(frozen=True)
class PictureMeasures:
    mean_luma: float
    luma_spread: float
    one_colour_share: float


def measure_picture(rgb: np.ndarray) -> PictureMeasures:
    """Mean and standard deviation of luma (BT.601, 0-255) and the share of the most common colour, of an
    HxWx3 uint8 array (a small copy)."""
    pixels = rgb.reshape(-1, 3).astype(np.float32)
    luma = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    # Most common colour after coarse quantisation (8 levels a channel); then every pixel within the tolerance
    # of that bin's mean colour, so a flat colour lying on a bin boundary still counts as one colour.
    q = rgb.reshape(-1, 3) >> 5
    bins = (q[:, 0].astype(np.int32) << 6) | (q[:, 1].astype(np.int32) << 3) | q[:, 2].astype(np.int32)
    counts = np.bincount(bins, minlength=512)
    mode = int(counts.argmax())
    centre = pixels[bins == mode].mean(axis=0)
    close = np.abs(pixels - centre).max(axis=1) <= COLOUR_TOLERANCE
    return PictureMeasures(
        mean_luma=float(luma.mean()),
        luma_spread=float(luma.std()),
        one_colour_share=float(close.mean()),
    )


def is_blank(m: PictureMeasures, content: ContentThresholds) -> bool:
    return (
        m.mean_luma < content.min_mean_luma
        or m.luma_spread < content.min_luma_spread
        or m.one_colour_share > content.max_one_colour_share
    )


# ---------------------------------------------------------------------------------------------------- images


def validate_image(
    path: str | Path,
    *,
    width: int | None = None,
    height: int | None = None,
    thresholds: ImageThresholds = ImageThresholds(),
    content: ContentThresholds = ContentThresholds(),
) -> Validation:
    """The four file checks of check_image, then "brightness" and "detail" (those not skipped). The picture is
    decoded once, for both."""
    path = Path(path)
    size = file_size(path)
    info, pixels, decode_error = None, None, missing_message(path) if size is None else None
    if size is not None:
        try:
            info, pixels = decode_image(path)
        except MediaError as exc:
            decode_error = str(exc)
    checks = image_file_checks(
        path, size=size, info=info, decode_error=decode_error, width=width, height=height, thresholds=thresholds
    )
    measures: dict[str, float | None] = dict.fromkeys(MEASURE_KEYS)
    wanted = [name for name in ("brightness", "detail") if name not in content.skip]
    if pixels is None:
        return Validation(tuple(checks) + _not_checked(wanted, decode_error or "the picture did not decode"), measures)
    with pixels:
        m = measure_picture(small_rgb(pixels))
    measures.update(mean_luma=m.mean_luma, luma_spread=m.luma_spread, one_colour_share=m.one_colour_share)
    content_checks = []
    if "brightness" in wanted:
        content_checks.append(brightness_check(m, content, what="image"))
    if "detail" in wanted:
        content_checks.append(detail_check(m, content, what="image"))
    return Validation(tuple(checks) + tuple(content_checks), _rounded(measures))


def small_rgb(img: Image.Image, width: int = SMALL_WIDTH) -> np.ndarray:
    """An RGB copy of a decoded picture, at most `width` pixels across."""
    img = _flatten(img)
    if img.width > width:
        if img.width >= 4 * width:  # reduce() averages whole blocks: much cheaper than resampling the lot
            img = img.reduce(img.width // (2 * width))
        img = img.resize((width, max(1, round(img.height * width / img.width))), Image.Resampling.BOX)
    return np.asarray(img)


def _flatten(img: Image.Image) -> Image.Image:
    """RGB, with any transparency laid on black (what a viewer shows of a fully transparent output is nothing)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def brightness_check(m: PictureMeasures, content: ContentThresholds, *, what: str) -> Check:
    value = round(m.mean_luma, 1)
    expected = f">= {content.min_mean_luma:g}"
    numbers = f"mean luma {m.mean_luma:.1f}/255, spread {m.luma_spread:.1f}"
    if m.mean_luma < content.min_mean_luma:
        message = f"{what} is black: {numbers} (min mean luma {content.min_mean_luma:g})"
        return Check("brightness", False, value, expected, message)
    return Check("brightness", True, value, expected, numbers)


def detail_check(m: PictureMeasures, content: ContentThresholds, *, what: str) -> Check:
    value = round(m.luma_spread, 1)
    expected = f"spread >= {content.min_luma_spread:g}, one colour <= {content.max_one_colour_share:.0%}"
    numbers = (
        f"luma spread {m.luma_spread:.1f}, one colour {m.one_colour_share:.1%} of the picture, "
        f"mean luma {m.mean_luma:.1f}/255"
    )
    if m.luma_spread < content.min_luma_spread or m.one_colour_share > content.max_one_colour_share:
        return Check("detail", False, value, expected, f"{what} is flat: {numbers} (expected {expected})")
    return Check("detail", True, value, expected, numbers)


# ---------------------------------------------------------------------------------------------------- videos


def validate_video(
    path: str | Path,
    *,
    width: int | None = None,
    height: int | None = None,
    frames: int | None = None,
    fps: float | None = None,
    thresholds: VideoThresholds = VideoThresholds(),
    content: ContentThresholds = ContentThresholds(),
    start_image: Path | None = None,
    expect_audio: bool = False,
) -> Validation:
    """The seven file checks of check_video, then "motion", "blank_frames", "start_frame" (with a start image)
    and "audio" (when expected or present), those not skipped.

    One ffprobe, then one ffmpeg pass that decodes the clip (it also answers "decodes": check_video's separate
    first/last-frame decoding is not needed); the start image is read meanwhile, on a thread."""
    path = Path(path)
    size = file_size(path)
    info: VideoInfo | None = None
    probe_error = missing_message(path) if size is None else None
    if size is not None:
        try:
            info = probe_video(path)
        except MediaError as exc:
            probe_error = str(exc)

    wanted = ["motion", "blank_frames"]
    if start_image is not None:
        wanted.append("start_frame")
    if expect_audio or (info is not None and info.has_audio):
        wanted.append("audio")
    wanted = [name for name in wanted if name not in content.skip]

    sample: VideoSample | None = None
    start: Future[np.ndarray] | None = None
    decode_error = probe_error
    if info is not None:
        with ThreadPoolExecutor(1) as pool:
            if "start_frame" in wanted and start_image is not None:
                start = pool.submit(fitted_start_image, Path(start_image), info.width, info.height)
            try:
                sample = sample_video(path, audio=info.has_audio)
            except MediaError as exc:
                decode_error = str(exc)
            if start is not None:
                start.exception()  # wait for it inside the pool (errors are read below)
    checks = video_file_checks(
        path,
        size=size,
        info=info,
        probe_error=probe_error,
        decode_error=decode_error,
        width=width,
        height=height,
        frames=frames,
        fps=fps,
        thresholds=thresholds,
    )
    measures: dict[str, float | None] = dict.fromkeys(MEASURE_KEYS)
    if sample is None:
        return Validation(tuple(checks) + _not_checked(wanted, decode_error or "no frames"), measures)

    frames_rgb = sample.frames
    diffs = frame_differences(frames_rgb)
    motion = float(np.mean(diffs)) if diffs else 0.0
    frozen = float(np.mean([d < content.min_motion for d in diffs])) if diffs else 1.0
    pictures = [measure_picture(f) for f in frames_rgb]
    blank = [is_blank(m, content) for m in pictures]
    first = pictures[0]
    measures.update(
        mean_luma=first.mean_luma,
        luma_spread=first.luma_spread,
        one_colour_share=first.one_colour_share,
        motion=motion,
        frozen_share=frozen,
        blank_frame_share=float(np.mean(blank)),
    )
    if start_image is not None and start is not None and start.exception() is None:
        measures["start_similarity"] = ssim(small_gray(frames_rgb[0], start.result().shape), start.result())
    if info is not None and info.has_audio:
        measures["audio_level_db"] = sample.audio_level_db

    content_checks: list[Check] = []
    if "motion" in wanted:
        content_checks.append(motion_check(motion, frozen, len(frames_rgb), content))
    if "blank_frames" in wanted:
        content_checks.append(blank_frames_check(float(np.mean(blank)), sum(blank), len(blank), content))
    if "start_frame" in wanted and start_image is not None and start is not None:
        if start.exception() is not None:
            why = f"not checked: cannot read the start image {start_image} ({start.exception()})"
            content_checks.append(Check("start_frame", False, None, f">= {content.min_start_similarity:g}", why))
        else:
            similarity = measures["start_similarity"]
            assert similarity is not None
            content_checks.append(start_frame_check(similarity, Path(start_image), content))
    if "audio" in wanted:
        content_checks.append(audio_check(sample.audio_level_db, info is not None and info.has_audio, content))
    return Validation(tuple(checks) + tuple(content_checks), _rounded(measures))


def frame_differences(frames: list[np.ndarray]) -> list[float]:
    """Mean absolute luma difference (0-255) between each pair of consecutive sampled frames."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    lumas = [f.astype(np.float32) @ weights for f in frames]
    return [float(np.abs(b - a).mean()) for a, b in zip(lumas, lumas[1:])]


def fitted_start_image(start_image: Path, video_width: int, video_height: int) -> np.ndarray:
    """The start image as the workflow fits it to the frame (scale to cover, centre crop), in gray START_WIDTH
    pixels across: small enough that codec loss and a VAE round trip do not count, large enough that another
    picture does."""
    w = min(START_WIDTH, video_width)
    h = max(1, round(video_height * w / video_width))
    with Image.open(start_image) as img:
        img.draft("RGB", (w * 4, h * 4))  # JPEG: decode at reduced size
        img.load()
        fitted = ImageOps.fit(_flatten(img), (w, h), Image.Resampling.BOX, centering=(0.5, 0.5))
    return np.asarray(fitted.convert("L"), dtype=np.float64)


def small_gray(frame: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    gray = Image.fromarray(frame).convert("L").resize((shape[1], shape[0]), Image.Resampling.BOX)
    return np.asarray(gray, dtype=np.float64)


def start_similarity(first_frame: np.ndarray, start_image: Path) -> float:
    """SSIM between a first frame (HxWx3) and the start image fitted to it."""
    fitted = fitted_start_image(start_image, first_frame.shape[1], first_frame.shape[0])
    return ssim(small_gray(first_frame, fitted.shape), fitted)


def ssim(a: np.ndarray, b: np.ndarray, window: int = 7) -> float:
    """Mean structural similarity of two grayscale arrays (0-255), uniform window like scikit-image's default."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def box(x: np.ndarray) -> np.ndarray:
        s = np.cumsum(np.cumsum(np.pad(x, ((1, 0), (1, 0))), axis=0), axis=1)
        k = window
        return (s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]) / (k * k)

    mu_a, mu_b = box(a), box(b)
    var_a = box(a * a) - mu_a**2
    var_b = box(b * b) - mu_b**2
    cov = box(a * b) - mu_a * mu_b
    n = window * window
    var_a, var_b, cov = (x * n / (n - 1) for x in (var_a, var_b, cov))  # sample covariance, as scikit-image
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def motion_check(motion: float, frozen: float, samples: int, content: ContentThresholds) -> Check:
    expected = f"motion >= {content.min_motion:g}, frozen <= {content.max_frozen_share:.0%}"
    numbers = f"motion {motion:.2f}/255, frozen {frozen:.0%} of the clip ({samples} sampled frames)"
    if motion < content.min_motion:
        message = f"video is frozen: {numbers} (min motion {content.min_motion:g})"
        return Check("motion", False, round(motion, 2), expected, message)
    if frozen > content.max_frozen_share:
        message = f"video is frozen for most of its length: {numbers} (max frozen {content.max_frozen_share:.0%})"
        return Check("motion", False, round(motion, 2), expected, message)
    return Check("motion", True, round(motion, 2), expected, numbers)


def blank_frames_check(share: float, blank: int, total: int, content: ContentThresholds) -> Check:
    expected = f"<= {content.max_blank_frame_share:.0%}"
    numbers = f"{blank} of {total} sampled frames black or flat ({share:.0%})"
    if share > content.max_blank_frame_share:
        message = f"video is mostly blank: {numbers}, max {content.max_blank_frame_share:.0%}"
        return Check("blank_frames", False, round(share, 3), expected, message)
    return Check("blank_frames", True, round(share, 3), expected, numbers)


def start_frame_check(similarity: float, start_image: Path, content: ContentThresholds) -> Check:
    expected = f">= {content.min_start_similarity:g}"
    numbers = f"first frame vs start image {start_image.name}: SSIM {similarity:.2f}"
    if similarity < content.min_start_similarity:
        message = f"video does not start from its start image: {numbers} (min {content.min_start_similarity:g})"
        return Check("start_frame", False, round(similarity, 3), expected, message)
    return Check("start_frame", True, round(similarity, 3), expected, numbers)


def audio_check(level: float | None, present: bool, content: ContentThresholds) -> Check:
    expected = f">= {content.min_audio_level_db:g} dBFS"
    if not present:
        return Check("audio", False, None, expected, "video has no audio stream, expected a sound track")
    if level is None:
        return Check("audio", False, None, expected, "audio stream has no samples: nothing to measure")
    value = round(level, 1)
    if level < content.min_audio_level_db:
        message = f"audio is silent: mean volume {level:.1f} dBFS (min {content.min_audio_level_db:g} dBFS)"
        return Check("audio", False, value, expected, message)
    return Check("audio", True, value, expected, f"mean volume {level:.1f} dBFS")


def _not_checked(names: list[str], why: str) -> tuple[Check, ...]:
    return tuple(Check(name, False, None, None, f"not checked: {why}") for name in names)


def _rounded(measures: dict[str, float | None]) -> dict[str, float | None]:
    return {k: (None if v is None else round(float(v), 4)) for k, v in measures.items()}
