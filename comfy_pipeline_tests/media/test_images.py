"""Image probing, the image quality checks and the image preview, on real files made with Pillow."""

import hashlib
import random
from pathlib import Path

import pytest
from PIL import Image

from comfy_pipeline.media import (
    ImageThresholds,
    MediaError,
    check_image,
    image_preview_markdown,
    probe_image,
)
from comfy_pipeline_tests.support.helpers import decode_data_uri

CHECK_NAMES = ["format", "file_size", "decodes", "dimensions"]


def noise_image(width: int, height: int, mode: str = "RGB", seed: int = 1) -> Image.Image:
    """Random pixels: they do not compress, so even a small image clears the 10 KB minimum."""
    channels = len(mode)
    return Image.frombytes(mode, (width, height), random.Random(seed).randbytes(width * height * channels))


def save(img: Image.Image, path: Path, fmt: str, **options) -> Path:
    img.save(path, fmt, **options)
    return path


def by_name(checks) -> dict:
    assert [c.name for c in checks] == CHECK_NAMES
    return {c.name: c for c in checks}


@pytest.fixture
def png(tmp_path: Path) -> Path:
    return save(noise_image(256, 192), tmp_path / "noise.png", "PNG")


@pytest.fixture
def jpeg(tmp_path: Path) -> Path:
    return save(noise_image(256, 192), tmp_path / "noise.jpg", "JPEG", quality=90)


def test_probe_image_reports_what_the_file_is(png: Path) -> None:
    info = probe_image(png)
    assert (info.path, info.format, info.width, info.height, info.mode) == (png, "PNG", 256, 192, "RGB")
    assert info.size_bytes == png.stat().st_size > 10 * 1024
    assert info.sha256 == hashlib.sha256(png.read_bytes()).hexdigest()


def test_format_is_judged_by_content_not_by_extension(tmp_path: Path) -> None:
    fake_png = save(noise_image(128, 128), tmp_path / "really_jpeg.png", "JPEG", quality=95)
    assert probe_image(fake_png).format == "JPEG"
    checks = by_name(check_image(fake_png, width=128, height=128))
    assert checks["format"].passed and checks["format"].value == "JPEG"
    png_only = by_name(check_image(fake_png, thresholds=ImageThresholds(formats=("PNG",))))
    assert not png_only["format"].passed
    assert png_only["format"].value == "JPEG" and "expected PNG" in png_only["format"].message


@pytest.mark.parametrize("fixture", ["png", "jpeg"])
def test_good_images_pass_every_check(fixture: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(fixture)
    checks = check_image(path, width=256, height=192)
    assert [c.name for c in checks] == CHECK_NAMES
    assert all(c.passed for c in checks), [c.message for c in checks if not c.passed]
    assert by_name(checks)["dimensions"].value == "256x192"


def test_wrong_dimensions_fail_with_found_and_expected(png: Path) -> None:
    dims = by_name(check_image(png, width=512, height=192))["dimensions"]
    assert not dims.passed
    assert (dims.value, dims.expected) == ("256x192", "512x192")
    assert "256x192" in dims.message and "512x192" in dims.message
    assert by_name(check_image(png, width=256))["dimensions"].passed  # only the width was requested


def test_truncated_png_fails_decodes_without_raising(png: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.png"
    cut.write_bytes(png.read_bytes()[: png.stat().st_size * 6 // 10])
    checks = by_name(check_image(cut, width=256, height=192))
    assert checks["format"].passed and checks["format"].value == "PNG"  # the header is intact
    assert checks["file_size"].passed
    assert not checks["decodes"].passed and "cut.png" in checks["decodes"].message
    assert not checks["dimensions"].passed and "not checked" in checks["dimensions"].message
    with pytest.raises(MediaError, match="cut.png"):
        probe_image(cut)


def test_corrupted_png_data_fails_decodes(png: Path, tmp_path: Path) -> None:
    data = bytearray(png.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(16)  # same length, broken IDAT (its CRC no longer matches)
    broken = tmp_path / "broken.png"
    broken.write_bytes(bytes(data))
    assert not by_name(check_image(broken))["decodes"].passed


def test_text_file_named_png_fails_format(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image at all\n" * 1000)  # big enough to pass the size check
    checks = by_name(check_image(text, width=10, height=10))
    assert not checks["format"].passed and checks["format"].value is None
    assert "notes.png is not a readable image" in checks["format"].message
    assert checks["file_size"].passed
    assert not checks["decodes"].passed and not checks["dimensions"].passed


def test_zero_byte_file_fails_everything(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.touch()
    checks = check_image(empty)
    assert [c.passed for c in checks] == [False, False, False, False]
    assert by_name(checks)["file_size"].value == 0


def test_missing_file_fails_everything_and_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.png"
    checks = check_image(missing, width=1, height=1)
    assert [c.passed for c in checks] == [False, False, False, False]
    assert all("file not found" in c.message for c in checks)
    with pytest.raises(MediaError, match="nowhere.png: file not found"):
        probe_image(missing)


def test_size_thresholds(tmp_path: Path, png: Path) -> None:
    tiny = save(Image.new("RGB", (16, 16), "red"), tmp_path / "tiny.png", "PNG")
    size = by_name(check_image(tiny))["file_size"]
    assert not size.passed and size.value == tiny.stat().st_size < 10 * 1024
    assert "smaller than 10.0 KB to 50.0 MB" in size.message
    assert by_name(check_image(tiny, thresholds=ImageThresholds(min_bytes=0)))["file_size"].passed

    capped = by_name(check_image(png, thresholds=ImageThresholds(max_bytes=20 * 1024)))["file_size"]
    assert not capped.passed and "larger than" in capped.message
    assert capped.expected == f"{10 * 1024}..{20 * 1024} bytes"


def test_image_preview_is_a_small_jpeg_thumbnail(tmp_path: Path) -> None:
    big = save(noise_image(1024, 512), tmp_path / "big.png", "PNG")
    img, chars = decode_data_uri(image_preview_markdown(big))
    assert img.format == "JPEG" and img.size == (320, 160)
    assert chars < 40_000

    smaller, _ = decode_data_uri(image_preview_markdown(big, max_side=100))
    assert smaller.size == (100, 50)


def test_image_preview_puts_transparency_on_white(tmp_path: Path) -> None:
    clear = save(Image.new("RGBA", (200, 100), (0, 0, 0, 0)), tmp_path / "clear.png", "PNG")
    img, _ = decode_data_uri(image_preview_markdown(clear))
    assert img.size == (200, 100)  # never enlarged
    assert min(img.convert("L").getextrema()) > 240


def test_image_preview_of_a_broken_file_raises_a_clear_error(tmp_path: Path) -> None:
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    with pytest.raises(MediaError, match="text.jpg: not an image"):
        image_preview_markdown(text)
