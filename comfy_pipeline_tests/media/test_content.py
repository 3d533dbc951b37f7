"""The content checks on real files: pictures made with Pillow, clips encoded by the real ffmpeg.

Every bad case (black, flat, frozen, blank, off-start, silent, missing sound) fails its check with the numbers in
the message; good pictures and clips, including the encoding noise of real codecs, pass.
"""

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from comfy_pipeline.cli.bench.validation import photo_like  # the bench's good picture: one maker for both
from comfy_pipeline.media import (
    CONTENT_CHECKS,
    MEASURE_KEYS,
    ContentThresholds,
    ImageThresholds,
    Validation,
    VideoThresholds,
    check_image,
    check_video,
    validate_image,
    validate_video,
)
from comfy_pipeline.media.binaries import ffmpeg_path

IMAGE_FILE_CHECKS = ["format", "file_size", "decodes", "dimensions"]
VIDEO_FILE_CHECKS = ["format", "file_size", "decodes", "duration", "frame_count", "fps", "dimensions"]
ANY_IMAGE = ImageThresholds(min_bytes=0)  # small test files: only the content is judged
ANY_VIDEO = VideoThresholds(min_bytes=0)
FPS = 12  # 4 s clips in 48 frames: long enough for 8 samples 0.5 s apart, quick to encode
SIZE = (256, 192)
H264 = ("-c:v", "libx264", "-preset", "veryfast", "-crf", "30")
VP9 = ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "400k")
AV1 = ("-c:v", "libaom-av1", "-cpu-used", "8", "-crf", "45", "-b:v", "0")


def push_in(picture: Image.Image, frames: int, zoom: float, size: tuple[int, int] = SIZE) -> list[Image.Image]:
    """A slow camera push-in: the frame crops the picture ever tighter around its centre (zoom at the end)."""
    w, h = picture.size
    out = []
    for i in range(frames):
        z = 1 + (zoom - 1) * i / max(frames - 1, 1)
        box = (w / 2 - w / z / 2, h / 2 - h / z / 2, w / 2 + w / z / 2, h / 2 + h / z / 2)
        out.append(picture.resize(size, Image.Resampling.BILINEAR, box=box))
    return out


def encode(path: Path, frames: list[Image.Image], *codec: str, audio: str | None = None) -> Path:
    """Frames piped to the real ffmpeg as raw RGB, yuv420p like ComfyUI's SaveVideo; `audio` is a lavfi source."""
    w, h = frames[0].size
    command = [ffmpeg_path(), "-nostdin", "-v", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(FPS), "-i", "-"]
    if audio:
        command += ["-f", "lavfi", "-i", audio, "-c:a", "aac", "-shortest"]
    command += [*codec, "-pix_fmt", "yuv420p", str(path)]
    data = b"".join(frame.convert("RGB").tobytes() for frame in frames)
    subprocess.run(command, input=data, check=True, timeout=120)
    return path


def by_name(validation: Validation) -> dict:
    return {c.name: c for c in validation.checks}


def names(validation: Validation) -> list[str]:
    return [c.name for c in validation.checks]


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pictures")
    made = {
        "black": Image.new("RGB", (320, 240)),
        "flat": Image.new("RGB", (320, 240), (40, 120, 200)),
        "white": Image.new("RGB", (320, 240), (255, 255, 255)),
        "photo": photo_like(320, 240, seed=1),
        "other": photo_like(320, 240, seed=2),
        "wide": photo_like(480, 200, seed=3),  # another aspect ratio than the clips' 4:3
    }
    photo = np.asarray(made["photo"], dtype=np.float64)
    made["dark"] = Image.fromarray((photo / 4).astype(np.uint8))  # a low-key picture: dark, little contrast
    noise = np.random.default_rng(5).normal(0, 3, photo.shape)
    made["noisy_flat"] = Image.fromarray(np.clip(noise + (200, 60, 60), 0, 255).astype(np.uint8))
    speck = Image.new("RGB", (320, 240), (250, 250, 250))
    speck.paste(photo_like(40, 40, seed=4), (140, 100))  # a blank page with a small picture on it
    made["speck"] = speck
    paths = {name: d / f"{name}.png" for name in made}
    for name, img in made.items():
        img.save(paths[name])
    paths["photo_jpeg"] = d / "photo.jpg"
    made["photo"].save(paths["photo_jpeg"], quality=85)
    rgba = Image.new("RGBA", (320, 240), (255, 255, 255, 0))  # fully transparent: nothing to see
    rgba.save(paths.setdefault("transparent", d / "transparent.png"))
    return paths


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, pictures: dict[str, Path]) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    photo = Image.open(pictures["photo"]).convert("RGB")
    other = Image.open(pictures["other"]).convert("RGB")
    moving = push_in(photo, 48, 1.03)  # 4 s, 3 % closer at the end: a slow push-in
    still = [photo.resize(SIZE)] * 48
    black = Image.new("RGB", SIZE)
    wide = Image.open(pictures["wide"]).convert("RGB")
    return {
        "moving": encode(d / "moving.mp4", moving, *H264, "-movflags", "+faststart"),
        "moving_crf35": encode(d / "moving_crf35.mp4", moving, "-c:v", "libx264", "-preset", "veryfast", "-crf", "35"),
        "still": encode(d / "still.mp4", still, *H264),
        "still_vp9": encode(d / "still_vp9.webm", still, *VP9),
        "still_av1": encode(d / "still_av1.webm", [photo.resize((160, 120))] * 12, *AV1),
        # still for 3 s, then a quick move: frozen for most of its length though it moves at the end
        "mostly_frozen": encode(d / "mostly_frozen.mp4", still[:36] + push_in(photo, 12, 1.5), *H264),
        "mostly_black": encode(d / "mostly_black.mp4", [black] * 36 + moving[36:], *H264),
        "off_start": encode(d / "off_start.mp4", push_in(other, 48, 1.03), *H264),
        # the start image is 2.4:1, the clip 4:3: the workflow scales it to cover the frame and crops the middle
        "cover_crop": encode(d / "cover_crop.mp4", push_in(ImageOps.fit(wide, SIZE), 48, 1.03), *H264),
        "tone": encode(d / "tone.mp4", moving, *H264, audio="sine=frequency=440:duration=3"),
        "silence": encode(d / "silence.mp4", moving, *H264, audio="anullsrc=r=44100:cl=mono"),
    }


# ---------------------------------------------------------------------------------------------------- images


def test_a_photo_like_picture_passes_with_its_measures(pictures: dict[str, Path]) -> None:
    for name in ("photo", "photo_jpeg"):
        result = validate_image(pictures[name], width=320, height=240, thresholds=ANY_IMAGE)
        assert names(result) == [*IMAGE_FILE_CHECKS, "brightness", "detail"]
        assert result.passed, result.failed
        assert set(result.measures) == set(MEASURE_KEYS)
        assert 100 < result.measures["mean_luma"] < 140
        assert result.measures["luma_spread"] > 15
        assert result.measures["one_colour_share"] < 0.5
        assert result.measures["motion"] is None


def test_a_16_bit_picture_is_measured_on_its_8_bit_scale(tmp_path: Path, pictures: dict[str, Path]) -> None:
    gray = np.asarray(Image.open(pictures["photo"]).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(gray).save(tmp_path / "deep.png")  # a 16-bit grayscale PNG
    result = validate_image(tmp_path / "deep.png", thresholds=ANY_IMAGE)
    assert result.passed, result.failed
    assert 100 < result.measures["mean_luma"] < 140


def test_a_dark_low_key_picture_passes(pictures: dict[str, Path]) -> None:
    result = validate_image(pictures["dark"], thresholds=ANY_IMAGE)
    assert result.passed, result.failed
    assert 20 < result.measures["mean_luma"] < 40


def test_a_black_picture_fails_brightness_and_detail_with_the_numbers(pictures: dict[str, Path]) -> None:
    result = by_name(validate_image(pictures["black"], thresholds=ANY_IMAGE))
    assert not result["brightness"].passed
    assert result["brightness"].message.startswith("image is black: mean luma 0.0/255, spread 0.0")
    assert not result["detail"].passed
    assert "luma spread 0.0, one colour 100.0% of the picture" in result["detail"].message


def test_a_transparent_picture_is_black(pictures: dict[str, Path]) -> None:
    result = by_name(validate_image(pictures["transparent"], thresholds=ANY_IMAGE))
    assert result["brightness"].message.startswith("image is black: mean luma 0.0/255")


@pytest.mark.parametrize("name", ["flat", "white"])
def test_a_flat_picture_of_any_colour_fails_detail(pictures: dict[str, Path], name: str) -> None:
    result = validate_image(pictures[name], thresholds=ANY_IMAGE)
    checks = by_name(result)
    assert checks["brightness"].passed
    assert not checks["detail"].passed
    assert checks["detail"].message.startswith("image is flat: luma spread 0.0, one colour 100.0% of the picture")
    assert result.measures["luma_spread"] == 0.0 and result.measures["one_colour_share"] == 1.0


def test_a_flat_picture_with_pixel_noise_fails_detail(pictures: dict[str, Path]) -> None:
    result = validate_image(pictures["noisy_flat"], thresholds=ANY_IMAGE)
    detail = by_name(result)["detail"]
    assert not detail.passed
    assert result.measures["luma_spread"] < 2 and result.measures["one_colour_share"] > 0.95
    assert detail.message.startswith(f"image is flat: luma spread {result.measures['luma_spread']:.1f}, one colour ")


def test_a_blank_page_with_a_speck_on_it_fails_detail_by_its_one_colour_share(pictures: dict[str, Path]) -> None:
    result = validate_image(pictures["speck"], thresholds=ANY_IMAGE)
    detail = by_name(result)["detail"]
    assert not detail.passed
    assert result.measures["luma_spread"] > 4  # the picture on it gives it spread: only the share catches it
    assert f"one colour {result.measures['one_colour_share']:.1%}" in detail.message
    assert result.measures["one_colour_share"] > 0.95


def test_thresholds_and_skip(pictures: dict[str, Path]) -> None:
    lenient = validate_image(pictures["flat"], thresholds=ANY_IMAGE, content=ContentThresholds(min_luma_spread=0,
                                                                                               max_one_colour_share=1))
    assert lenient.passed
    skipped = validate_image(pictures["black"], thresholds=ANY_IMAGE, content=ContentThresholds(skip=frozenset({
        "brightness", "detail"})))
    assert names(skipped) == IMAGE_FILE_CHECKS and skipped.passed
    assert skipped.measures["mean_luma"] == 0.0  # still measured
    with pytest.raises(ValueError, match="unknown content check.*colour.*known: brightness, detail, motion"):
        ContentThresholds(skip=frozenset({"colour"}))


def test_an_unreadable_picture_gives_not_checked(tmp_path: Path) -> None:
    fake = tmp_path / "fake.png"
    fake.write_text("not a picture")
    result = validate_image(fake)
    assert [c.name for c in result.checks] == [c.name for c in check_image(fake)] + ["brightness", "detail"]
    for name in ("brightness", "detail"):
        check = by_name(result)[name]
        assert not check.passed and check.message.startswith(f"not checked: {fake}: not an image")
    assert set(result.measures.values()) == {None}


def test_check_image_still_returns_the_file_checks_only(pictures: dict[str, Path]) -> None:
    assert [c.name for c in check_image(pictures["black"])] == IMAGE_FILE_CHECKS


# ---------------------------------------------------------------------------------------------------- videos


def test_a_moving_clip_passes_with_its_measures(clips: dict[str, Path], pictures: dict[str, Path]) -> None:
    for name in ("moving", "moving_crf35"):
        result = validate_video(clips[name], width=256, height=192, frames=48, fps=FPS, thresholds=ANY_VIDEO,
                                start_image=pictures["photo"])
        assert names(result) == [*VIDEO_FILE_CHECKS, "motion", "blank_frames", "start_frame"]
        assert result.passed, result.failed
        m = result.measures
        assert m["motion"] > 1.0 and m["frozen_share"] == 0.0 and m["blank_frame_share"] == 0.0
        assert m["start_similarity"] > 0.8
        assert m["audio_level_db"] is None and m["mean_luma"] > 100  # the mean over the sampled frames


@pytest.mark.parametrize("name", ["still", "still_vp9", "still_av1"])
def test_a_still_picture_is_frozen_whatever_the_codec(clips: dict[str, Path], name: str) -> None:
    result = validate_video(clips[name], thresholds=ANY_VIDEO)
    motion = by_name(result)["motion"]
    assert not motion.passed
    assert motion.message.startswith(f"video is frozen: motion {result.measures['motion']:.2f}/255, frozen ")
    assert result.measures["motion"] < 0.5
    assert by_name(result)["blank_frames"].passed


def test_a_clip_frozen_for_most_of_its_length_fails_though_it_moves(clips: dict[str, Path]) -> None:
    result = validate_video(clips["mostly_frozen"], thresholds=ANY_VIDEO)
    m = result.measures
    assert m["motion"] > ContentThresholds().min_motion  # it does move, a lot, once
    assert m["frozen_share"] > 0.5
    motion = by_name(result)["motion"]
    assert not motion.passed
    assert f"video is frozen for most of its length: motion {m['motion']:.2f}/255, frozen {m['frozen_share']:.0%}" \
        in motion.message


def test_a_clip_too_short_to_judge_its_motion_fails_motion(tmp_path: Path, pictures: dict[str, Path]) -> None:
    photo = Image.open(pictures["photo"]).convert("RGB")
    result = validate_video(encode(tmp_path / "short.mp4", push_in(photo, 1, 1.5), *H264), thresholds=ANY_VIDEO)
    motion = by_name(result)["motion"]
    assert not motion.passed and result.measures["motion"] is None
    assert motion.message.startswith("video is too short to judge its motion: 1 sampled frame")


def test_a_clip_of_mostly_black_frames_fails_blank_frames(clips: dict[str, Path]) -> None:
    result = validate_video(clips["mostly_black"], thresholds=ANY_VIDEO)
    blank = by_name(result)["blank_frames"]
    assert not blank.passed
    assert result.measures["blank_frame_share"] == 0.75
    assert 20 < result.measures["mean_luma"] < 40  # a quarter of the photo's
    assert blank.message == "video is mostly blank: 6 of 8 sampled frames black or flat (75%), max 25%"


def test_a_clip_that_animates_another_picture_fails_start_frame(
    clips: dict[str, Path], pictures: dict[str, Path]
) -> None:
    result = validate_video(clips["off_start"], thresholds=ANY_VIDEO, start_image=pictures["photo"])
    start = by_name(result)["start_frame"]
    assert not start.passed
    assert result.measures["start_similarity"] < 0.3
    assert start.message.startswith(
        f"video does not start from its start image: first frame vs start image photo.png: "
        f"SSIM {result.measures['start_similarity']:.2f}"
    )
    assert by_name(result)["motion"].passed  # it is a good clip otherwise


def test_a_start_image_of_another_aspect_ratio_is_fitted_by_cover_crop(
    clips: dict[str, Path], pictures: dict[str, Path]
) -> None:
    result = validate_video(clips["cover_crop"], thresholds=ANY_VIDEO, start_image=pictures["wide"])
    assert by_name(result)["start_frame"].passed
    assert result.measures["start_similarity"] > 0.8


def test_a_start_image_that_cannot_be_read_fails_start_frame_as_not_checked(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "gone.png"
    result = validate_video(clips["moving"], thresholds=ANY_VIDEO, start_image=missing)
    start = by_name(result)["start_frame"]
    assert not start.passed and start.message.startswith(f"not checked: cannot read the start image {missing}")
    assert by_name(result)["motion"].passed and result.measures["start_similarity"] is None


def test_sound_a_tone_passes_silence_and_a_missing_stream_fail(clips: dict[str, Path]) -> None:
    tone = validate_video(clips["tone"], thresholds=ANY_VIDEO)  # audio present: checked even if not expected
    assert names(tone)[-1] == "audio" and tone.passed, tone.failed
    assert -30 < tone.measures["audio_level_db"] < -10
    assert by_name(tone)["audio"].message == f"mean volume {tone.measures['audio_level_db']:.1f} dBFS"

    silence = validate_video(clips["silence"], thresholds=ANY_VIDEO, expect_audio=True)
    audio = by_name(silence)["audio"]
    assert not audio.passed
    assert audio.message == "audio is silent: mean volume -91.0 dBFS (min -60 dBFS)"

    missing = validate_video(clips["moving"], thresholds=ANY_VIDEO, expect_audio=True)
    audio = by_name(missing)["audio"]
    assert not audio.passed and audio.message == "video has no audio stream, expected a sound track"
    assert "audio" not in names(validate_video(clips["moving"], thresholds=ANY_VIDEO))


def test_skip_removes_checks(clips: dict[str, Path], pictures: dict[str, Path]) -> None:
    content = ContentThresholds(skip=frozenset({"motion", "start_frame", "audio"}))
    result = validate_video(clips["still"], thresholds=ANY_VIDEO, content=content, start_image=pictures["other"],
                            expect_audio=True)
    assert names(result) == [*VIDEO_FILE_CHECKS, "blank_frames"]
    assert result.passed
    assert result.measures["motion"] is not None and result.measures["start_similarity"] < 0.3  # measured all the same


def test_an_unreadable_video_gives_not_checked_content_checks(tmp_path: Path, pictures: dict[str, Path]) -> None:
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    result = validate_video(fake, start_image=pictures["photo"], expect_audio=True)
    assert names(result) == [*VIDEO_FILE_CHECKS, "motion", "blank_frames", "start_frame", "audio"]
    for name in ("motion", "blank_frames", "start_frame", "audio"):
        check = by_name(result)[name]
        assert not check.passed and check.message.startswith(f"not checked: {fake}: not a readable video")
    assert set(result.measures.values()) == {None}


def test_a_truncated_clip_fails_decodes_and_is_not_checked(clips: dict[str, Path], tmp_path: Path) -> None:
    data = clips["moving"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.8)])
    old = {c.name: c for c in check_video(cut)}
    result = by_name(validate_video(cut, thresholds=ANY_VIDEO))
    assert not old["decodes"].passed and not result["decodes"].passed
    assert "the file is truncated or corrupt" in result["decodes"].message
    assert result["motion"].message.startswith("not checked: ")


def test_check_video_still_returns_the_file_checks_only(clips: dict[str, Path]) -> None:
    assert [c.name for c in check_video(clips["still"])] == VIDEO_FILE_CHECKS


def test_content_check_names_are_the_contract() -> None:
    assert CONTENT_CHECKS == ("brightness", "detail", "motion", "blank_frames", "start_frame", "audio")
