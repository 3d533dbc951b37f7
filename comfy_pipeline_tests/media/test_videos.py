"""Video probing, the video quality checks and the contact-sheet preview, on real files made with ffmpeg."""

import hashlib
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from comfy_pipeline.media import (
    MediaError,
    VideoThresholds,
    check_video,
    probe_video,
    video_preview_markdown,
)
from comfy_pipeline.media import probe as probe_module
from comfy_pipeline.media.binaries import ffmpeg_path
from comfy_pipeline_tests.support.helpers import decode_data_uri

CHECK_NAMES = ["format", "file_size", "decodes", "duration", "frame_count", "fps", "dimensions"]
NOISY = "testsrc2=s=320x240:r=24,noise=alls=40:allf=t"  # noise so that 2 s of video clears 100 KB


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_path(), "-nostdin", "-v", "error", "-y", *args], check=True, timeout=60)


def make_video(path: Path, source: str, frames: int, *codec: str) -> Path:
    ffmpeg("-f", "lavfi", "-i", source, "-frames:v", str(frames), *codec, "-pix_fmt", "yuv420p", str(path))
    return path


H264 = ("-c:v", "libx264", "-preset", "ultrafast", "-crf", "20")


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    v = {
        "mp4": make_video(d / "good.mp4", NOISY, 48, *H264, "-movflags", "+faststart"),
        "mp4_moov_at_end": make_video(d / "moov_at_end.mp4", NOISY, 48, *H264),
        "webm": make_video(
            d / "good.webm", NOISY, 48, "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "2M"
        ),
        "av1": make_video(
            d / "clip.webm", "testsrc2=s=160x120:r=24", 6,
            "-c:v", "libaom-av1", "-cpu-used", "8", "-crf", "40", "-b:v", "0",
        ),
        "mkv": make_video(d / "clip.mkv", "testsrc2=s=160x120:r=24", 6, *H264),
        "mov": make_video(d / "clip.mov", "testsrc2=s=160x120:r=24", 6, *H264),
        "ntsc": make_video(d / "ntsc.mp4", "testsrc2=s=160x120:r=30000/1001", 30, *H264),
    }
    with_audio = d / "audio.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=s=160x120:r=24", "-f", "lavfi", "-i", "sine=d=1",
        "-frames:v", "24", *H264, "-c:a", "aac", "-pix_fmt", "yuv420p", str(with_audio),
    )
    v["audio"] = with_audio
    return v


def by_name(checks) -> dict:
    assert [c.name for c in checks] == CHECK_NAMES
    return {c.name: c for c in checks}


def truncated(source: Path, dest: Path, fraction: float) -> Path:
    data = source.read_bytes()
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest


def test_probe_mp4(videos: dict[str, Path]) -> None:
    path = videos["mp4"]
    info = probe_video(path)
    assert (info.container, info.codec, info.width, info.height) == ("mp4", "h264", 320, 240)
    assert (info.fps, info.frame_count, info.pix_fmt, info.has_audio) == (24.0, 48, "yuv420p", False)
    assert info.duration == pytest.approx(2.0, abs=0.01)
    assert info.size_bytes == path.stat().st_size > 100 * 1024
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_probe_webm_counts_frames_the_container_does_not_store(videos: dict[str, Path]) -> None:
    vp9 = probe_video(videos["webm"])
    assert (vp9.container, vp9.codec, vp9.frame_count, vp9.fps) == ("webm", "vp9", 48, 24.0)
    av1 = probe_video(videos["av1"])
    assert (av1.container, av1.codec, av1.frame_count, av1.width, av1.height) == ("webm", "av1", 6, 160, 120)


def test_container_names(videos: dict[str, Path]) -> None:
    assert probe_video(videos["mkv"]).container == "matroska"  # Matroska is not WebM, whatever ffprobe lumps together
    assert probe_video(videos["mov"]).container == "mov"
    assert probe_video(videos["audio"]).has_audio
    fmt = by_name(check_video(videos["mkv"], thresholds=VideoThresholds(min_bytes=0)))["format"]
    assert not fmt.passed and fmt.message == "clip.mkv is matroska, expected mp4 or webm"


@pytest.mark.parametrize("kind", ["mp4", "webm", "mp4_moov_at_end"])
def test_good_videos_pass_every_check(kind: str, videos: dict[str, Path]) -> None:
    checks = check_video(videos[kind], width=320, height=240, frames=48, fps=24)
    assert all(c.passed for c in checks), [c.message for c in checks if not c.passed]
    values = {c.name: c.value for c in by_name(checks).values()}
    assert values["frame_count"] == 48 and values["fps"] == 24.0 and values["dimensions"] == "320x240"


def test_small_videos_pass_with_custom_thresholds(videos: dict[str, Path]) -> None:
    checks = check_video(videos["av1"], width=160, height=120, frames=6, fps=24)
    assert [c.name for c in checks if not c.passed] == ["file_size"]
    relaxed = check_video(videos["av1"], frames=6, thresholds=VideoThresholds(min_bytes=1024))
    assert all(c.passed for c in relaxed)


def test_wrong_dimensions_frames_and_fps_fail_with_the_values(videos: dict[str, Path]) -> None:
    checks = by_name(check_video(videos["mp4"], width=1280, height=720, frames=121, fps=25))
    assert {n for n, c in checks.items() if not c.passed} == {"frame_count", "fps", "dimensions"}
    assert (checks["frame_count"].value, checks["frame_count"].expected) == (48, 121)
    assert (checks["fps"].value, checks["fps"].expected) == (24.0, 25)
    assert (checks["dimensions"].value, checks["dimensions"].expected) == ("320x240", "1280x720")
    assert checks["fps"].message == "good.mp4 plays at 24.0 fps, expected 25"


def test_fps_tolerance(videos: dict[str, Path]) -> None:
    limits = VideoThresholds(min_bytes=0)
    assert by_name(check_video(videos["ntsc"], fps=29.97, thresholds=limits))["fps"].passed  # 30000/1001
    assert by_name(check_video(videos["ntsc"], fps=29.97, thresholds=limits))["fps"].value == 29.97
    assert not by_name(check_video(videos["ntsc"], fps=30, thresholds=limits))["fps"].passed


def test_truncated_faststart_mp4_fails_decodes(videos: dict[str, Path], tmp_path: Path) -> None:
    cut = truncated(videos["mp4"], tmp_path / "cut.mp4", 0.9)
    checks = by_name(check_video(cut, width=320, height=240, frames=48, fps=24))
    assert checks["format"].passed  # the index at the front is intact ...
    decodes = checks["decodes"]  # ... but the last frames are gone
    assert not decodes.passed
    assert "cut.mp4: the last frame does not decode; the file is truncated or corrupt" in decodes.message
    assert " @ 0x" not in decodes.message  # ffmpeg's log prefixes are cleaned away


def test_truncated_mp4_without_index_fails_without_raising(videos: dict[str, Path], tmp_path: Path) -> None:
    cut = truncated(videos["mp4_moov_at_end"], tmp_path / "cut.mp4", 0.5)
    checks = by_name(check_video(cut, width=320, height=240, frames=48, fps=24))
    assert [c.passed for c in checks.values()] == [False, True, False, False, False, False, False]
    assert "cut.mp4: not a readable video" in checks["decodes"].message
    assert "moov atom not found" in checks["decodes"].message
    assert checks["frame_count"].message.startswith("not checked: ")
    with pytest.raises(MediaError, match="cut.mp4: not a readable video"):
        probe_video(cut)


def test_text_file_named_mp4_fails_format(tmp_path: Path) -> None:
    text = tmp_path / "clip.mp4"
    text.write_text("not a video\n" * 20_000)
    checks = by_name(check_video(text))
    assert not checks["format"].passed and checks["format"].value is None
    assert checks["format"].message.startswith(f"{text}: not a readable video")
    assert checks["file_size"].passed
    assert not any(c.passed for n, c in checks.items() if n != "file_size")


def test_zero_byte_and_missing_files_fail_everything(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.touch()
    assert not any(c.passed for c in check_video(empty))
    missing = check_video(tmp_path / "gone.mp4", frames=1)
    assert not any(c.passed for c in missing)
    assert all("gone.mp4: file not found" in c.message for c in missing)
    with pytest.raises(MediaError, match="gone.mp4: file not found"):
        probe_video(tmp_path / "gone.mp4")


def test_size_thresholds(videos: dict[str, Path]) -> None:
    size = videos["mp4"].stat().st_size
    too_big = by_name(check_video(videos["mp4"], thresholds=VideoThresholds(max_bytes=size - 1)))["file_size"]
    assert not too_big.passed and too_big.value == size and "larger than" in too_big.message
    too_small = by_name(check_video(videos["mp4"], thresholds=VideoThresholds(min_bytes=size + 1)))["file_size"]
    assert not too_small.passed and "smaller than" in too_small.message


def ffmpeg_children() -> list[psutil.Process]:
    """Live ffmpeg/ffprobe children of this test process (other tests' servers may be running too)."""
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.name().startswith(("ffmpeg", "ffprobe")) and child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_a_decode_that_times_out_fails_the_check_and_is_killed(
    videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probe_module, "DECODE_TIMEOUT_S", 0.001)
    decodes = by_name(check_video(videos["mp4"]))["decodes"]
    assert not decodes.passed and "ffmpeg did not finish within 0.001 s" in decodes.message
    assert ffmpeg_children() == []


def test_an_interrupt_leaves_no_ffmpeg_running(tmp_path: Path) -> None:
    endless = [ffmpeg_path(), "-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc2", "-f", "null", "-"]

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with pytest.raises(KeyboardInterrupt):
            probe_module.run_tools([endless, endless], path=tmp_path, timeout=30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert ffmpeg_children() == []


def test_video_preview_is_a_small_contact_sheet(videos: dict[str, Path]) -> None:
    img, chars = decode_data_uri(video_preview_markdown(videos["mov"]))
    # 6 frames only, so 6 of the 8 tiles: 4 per row, 240x180 each
    assert img.format == "JPEG" and img.size == (4 * 240, 2 * 180)
    assert chars < 40_000
    img, _ = decode_data_uri(video_preview_markdown(videos["webm"], frames=3, columns=3, tile_width=100))
    assert img.size == (300, 76)


def test_video_preview_stays_small_even_for_pure_noise(videos: dict[str, Path]) -> None:
    img, chars = decode_data_uri(video_preview_markdown(videos["mp4"]))
    assert chars <= 40_000
    assert img.width <= 960 and img.width * 360 == img.height * 960  # shrunk, never distorted


def test_video_preview_frames_are_evenly_spaced_first_to_last(tmp_path: Path) -> None:
    # frame n is a flat grey of luma 16 * n, so each tile's brightness tells which frame it shows
    ramp = make_video(
        tmp_path / "ramp.mp4", "color=c=black:s=64x48:r=24,format=gray,geq=lum='16*N'", 16,
        "-c:v", "libx264", "-qp", "0",
    )
    img, _ = decode_data_uri(video_preview_markdown(ramp, frames=4, columns=2, tile_width=64))
    assert img.size == (128, 96)
    tiles = [img.crop((x, y, x + 64, y + 48)).convert("L") for y in (0, 48) for x in (0, 64)]
    means = [sum(t.getdata()) / (64 * 48) for t in tiles]
    assert means == pytest.approx([0, 80, 160, 240], abs=6)  # frames 0, 5, 10 and 15


def test_video_preview_of_a_broken_file_raises_a_clear_error(tmp_path: Path) -> None:
    text = tmp_path / "text.mp4"
    text.write_text("hello")
    with pytest.raises(MediaError, match="text.mp4: not a readable video"):
        video_preview_markdown(text)
