"""Content checks: is the picture black or flat, is the clip frozen or blank, does it start from its start image,
is its sound there and audible. The file checks of checks.py say whether a file is a good file; these say whether
it is a usable picture.

Everything is measured on small copies: an image is reduced with Pillow, a video is decoded once by one ffmpeg
process (beside ffprobe) that hands over a few frames (sampled across the whole clip, already scaled down) on a
pipe and measures the sound track in the same pass. That pass decodes every frame, so it also answers the
"decodes" file check.

Measures (MEASURE_KEYS, None when not measured): an image's mean_luma, luma_spread and one_colour_share; a clip's
are the means over its sampled frames, beside motion, frozen_share, blank_frame_share, start_similarity and
audio_level_db.
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
from comfy_pipeline.media.sampling import SAMPLE_WIDTH, VideoSample, sample_interval, sample_video

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

SMALL_WIDTH = SAMPLE_WIDTH  # pictures are measured at the size of a clip's sampled frames: the same limits hold
START_WIDTH = 64  # pixels across the gray copies the start frame is compared on
COLOUR_TOLERANCE = 8  # /255 per channel: pixels this close to the most common colour count as that colour


@dataclass(frozen=True)
class ContentThresholds:
    """Limits of the content checks. Each default passes good output and fails the bad case it is for, with room
    on both sides; the figures quoted were measured with this code (pictures 160 pixels across, luma 0-255).

    min_mean_luma = 8.0: "brightness" fails a picture whose mean luma is under 8. Black output measures 0
        (NaN-style all-zero pixels; limited-range video black, Y=16, also comes out as 0); a photo darkened to a
        quarter of its brightness still measures 16, ordinary photos 60-130.
    min_luma_spread = 2.0: "detail" fails a picture whose luma standard deviation is under 2. A flat colour of
        any shade, white included, measures under 1.0, even with per-pixel noise (3/255) or through JPEG or
        H.264; photos and photo-like pictures measure 14-41, the same darkened to a quarter 3.7-10.
    max_one_colour_share = 0.95: "detail" also fails a picture of which more than 95 % is one colour (within
        8/255 on each channel): a blank page with a small picture on it measures 0.98 though its spread passes;
        photos measure 0.005-0.14, the same darkened to a quarter at most 0.75.
    min_motion = 0.5: "motion" fails a clip whose mean absolute luma difference between frames sampled 0.5 s
        apart is under 0.5, and a pair of samples closer than that is a frozen stretch. A still picture encoded
        with H.264 (crf 23-35) or AV1 measures 0.00, with VP9 0.2 (its keyframe pulses reach 0.4 between two
        samples), a still photo with strong per-frame grain (4/255) 0.1; a slow push-in (3 % closer over 5 s)
        over photos and photo-like pictures through H.264 at crf 23-35 measures 1.2-3.9, a faster one more.
        (Clips under 2 s are sampled 4 times over their length, so slow motion reads lower in them.)
    max_frozen_share = 0.5: "motion" also fails a clip that is frozen between more than half of its pairs of
        samples, even if it moves a lot elsewhere (3 s still then 1 s of fast zoom: motion 4.0, frozen 0.71).
        A slow push-in through crf 35 has at most one frozen pair in ten.
    max_blank_frame_share = 0.25: "blank_frames" fails a clip of which more than a quarter of the sampled
        frames are black or flat by the three picture limits above; a fade in or out of a second or so in a
        5 s clip stays under.
    min_start_similarity = 0.5 (SSIM, -1..1): "start_frame" fails a clip whose first frame is less like its
        start image (scaled to cover the frame, centre-cropped, as the workflow fits it) than this, both in gray
        64 pixels across. The start image itself as frame 0 through yuv420p H.264 at crf 23-40 measures
        0.90-0.99; another picture of the same kind measures under 0.1.
    min_audio_level_db = -60.0 (dBFS, mean volume of the first audio stream): "audio" fails a sound track
        quieter than this; digital silence measures -91, a tone at an eighth of full scale -21, speech, music
        and ambience typically -15 to -45. A missing stream fails when sound is expected.
    skip: names of content checks to leave out (they are then absent from the result; the measures are still
        taken).
    """

    min_mean_luma: float = 8.0
    min_luma_spread: float = 2.0
    max_one_colour_share: float = 0.95
    min_motion: float = 0.5
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
    try:
        with pixels:
            m = measure_picture(small_rgb(pixels))
    except Exception as exc:  # an odd mode Pillow cannot convert: say so, never raise
        why = f"{path}: cannot measure the {info.format if info else ''} picture ({exc})"
        return Validation(tuple(checks) + _not_checked(wanted, why), measures)
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
    """RGB, with any transparency laid on black (what a viewer shows of a fully transparent output is nothing);
    16-bit and float grays scaled to 8 bits (Pillow's own conversion clips them to white)."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        values = np.asarray(img, dtype=np.float64)
        scale = 257.0 if values.size and values.max() > 255 else 1.0
        return Image.fromarray(np.clip(values / scale, 0, 255).astype(np.uint8)).convert("RGB")
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

    ffprobe and one ffmpeg pass run side by side; the pass decodes the clip (so it also answers "decodes":
    check_video's separate first/last-frame decoding is not needed); the start image is read meanwhile."""
    path = Path(path)
    size = file_size(path)
    info: VideoInfo | None = None
    probe_error = missing_message(path) if size is None else None
    sample: VideoSample | None = None
    decode_error: str | None = None
    start: Future[Image.Image] | None = None
    if size is not None:
        with ThreadPoolExecutor(2) as pool:
            probing = pool.submit(probe_video, path)
            if start_image is not None:  # read even when start_frame is skipped: every measure is taken
                start = pool.submit(_read_start_image, Path(start_image))
            try:
                sample = sample_video(path)
            except MediaError as exc:
                decode_error = str(exc)
            try:
                info = probing.result()
            except MediaError as exc:
                probe_error = str(exc)
            if info is not None and sample is not None and sample_interval(info.duration) < sample.interval:
                try:  # a clip under 2 s: sample it again, more densely (it is short, so that is cheap)
                    sample = sample_video(path, interval=sample_interval(info.duration))
                except MediaError as exc:
                    sample, decode_error = None, str(exc)
            if start is not None:
                start.exception()  # wait for it inside the pool (its error, if any, is read below)
    if info is None:  # not a readable video: nothing was judged on what the pass may have found
        sample, decode_error = None, probe_error

    wanted = ["motion", "blank_frames"]
    if start_image is not None:
        wanted.append("start_frame")
    if expect_audio or (info is not None and info.has_audio):
        wanted.append("audio")
    wanted = [name for name in wanted if name not in content.skip]

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
    # A clip of one sampled frame (a single frame, or no duration to spread samples over) has no motion.
    motion = float(np.mean(diffs)) if diffs else None
    frozen = float(np.mean([d < content.min_motion for d in diffs])) if diffs else None
    pictures = [measure_picture(f) for f in frames_rgb]
    blank = [is_blank(m, content) for m in pictures]
    measures.update(  # a clip's picture measures: the mean over its sampled frames
        mean_luma=float(np.mean([m.mean_luma for m in pictures])),
        luma_spread=float(np.mean([m.luma_spread for m in pictures])),
        one_colour_share=float(np.mean([m.one_colour_share for m in pictures])),
        motion=motion,
        frozen_share=frozen,
        blank_frame_share=float(np.mean(blank)),
    )
    if start is not None and start.exception() is None:
        fitted = fitted_gray(start.result(), frames_rgb[0].shape[1], frames_rgb[0].shape[0])
        measures["start_similarity"] = ssim(small_gray(frames_rgb[0], fitted.shape), fitted)
    if info is not None and info.has_audio:
        measures["audio_level_db"] = sample.audio_level_db

    content_checks: list[Check] = []
    if "motion" in wanted:
        content_checks.append(motion_check(motion, frozen, len(frames_rgb), sample.interval, content))
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


def _read_start_image(path: Path) -> Image.Image:
    """The start image in RGB, reduced to at most 4x START_WIDTH across (JPEGs are decoded at that size)."""
    with Image.open(path) as img:
        img.draft("RGB", (START_WIDTH * 4, START_WIDTH * 4))
        img.load()
        rgb = _flatten(img)
    if rgb.width >= START_WIDTH * 8:
        rgb = rgb.reduce(rgb.width // (START_WIDTH * 4))
    return rgb


def fitted_gray(start: Image.Image, frame_width: int, frame_height: int) -> np.ndarray:
    """The start image as the workflow fits it to the frame (scale to cover, centre crop), in gray START_WIDTH
    pixels across: small enough that codec loss and a VAE round trip do not count, large enough that another
    picture does."""
    w = min(START_WIDTH, frame_width)
    h = max(1, round(frame_height * w / frame_width))
    fitted = ImageOps.fit(start, (w, h), Image.Resampling.BOX, centering=(0.5, 0.5))
    return np.asarray(fitted.convert("L"), dtype=np.float64)


def small_gray(frame: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    gray = Image.fromarray(frame).convert("L").resize((shape[1], shape[0]), Image.Resampling.BOX)
    return np.asarray(gray, dtype=np.float64)


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


def motion_check(
    motion: float | None, frozen: float | None, samples: int, interval: float, content: ContentThresholds
) -> Check:
    expected = f"motion >= {content.min_motion:g}, frozen <= {content.max_frozen_share:.0%}"
    if motion is None or frozen is None:
        message = (f"video is too short to judge its motion: {samples} sampled frame (one every "
                   f"{interval:.2g} s), expected {expected}")
        return Check("motion", False, None, expected, message)
    numbers = f"motion {motion:.2f}/255, frozen {frozen:.0%} of the clip ({samples} frames {interval:.2g} s apart)"
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
