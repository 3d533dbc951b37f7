"""Contract: POST /upload/image and GET /view behave like the captured ComfyUI 0.33.0 (names, dedupe,
traversal answers, headers), checked against the bytes on disk."""

import hashlib
import io

import pytest
import requests
from PIL import Image

from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import load_capture, wait_for_history


def png(color: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(simulator: Simulator, name: str, data: bytes, field: str = "image", **fields: str) -> requests.Response:
    files = {field: (name, data, "image/png")}
    return requests.post(simulator.url + "/upload/image", files=files, data=fields, timeout=10)


def captured_body(name: str) -> dict:
    return load_capture(name)["response"]["body"]


def view(simulator: Simulator, path: str = "/view", **params: str) -> requests.Response:
    return requests.get(simulator.url + path, params=params, timeout=5)


LOADED = {"filename": "loaded_00001_.png", "subfolder": "ref"}  # the output the view tests read


def test_upload_names_dedupe_and_overwrite(simulator: Simulator) -> None:
    red, blue = png((255, 0, 0)), png((0, 0, 255))
    assert upload(simulator, "ref_upload.png", red).json() == captured_body("post_upload_image_basic")
    # Same name, same bytes: found by hash, not written again.
    before = (simulator.input_dir / "ref_upload.png").stat().st_mtime_ns
    assert upload(simulator, "ref_upload.png", red).json() == captured_body("post_upload_image_same_name_same_bytes")
    assert (simulator.input_dir / "ref_upload.png").stat().st_mtime_ns == before
    # Same name, other bytes: renamed, the first file untouched.
    renamed = captured_body("post_upload_image_same_name_different_bytes")
    assert upload(simulator, "ref_upload.png", blue).json() == renamed
    assert (simulator.input_dir / "ref_upload.png").read_bytes() == red
    assert (simulator.input_dir / "ref_upload (1).png").read_bytes() == blue
    assert upload(simulator, "ref_upload.png", png((0, 255, 0))).json()["name"] == "ref_upload (2).png"
    # overwrite=true replaces in place and keeps the name.
    replaced = captured_body("post_upload_image_overwrite_true")
    assert upload(simulator, "ref_upload.png", blue, overwrite="true").json() == replaced
    assert (simulator.input_dir / "ref_upload.png").read_bytes() == blue
    assert not list(simulator.input_dir.glob(".*partial"))  # written atomically, nothing left behind


@pytest.mark.parametrize("case", [
    "post_upload_image_subfolder_type_input", "post_upload_image_type_temp", "post_upload_image_type_output",
    "post_upload_image_txt_extension", "post_upload_image_not_an_image",
])
def test_upload_folders_and_content_are_not_checked(case: str, simulator: Simulator) -> None:
    capture = load_capture(case)
    name, _, _ = capture["request"]["multipart_files"]["image"]
    fields = capture["request"].get("multipart_fields", {})
    data = b"hello" if name.endswith(".txt") else png((1, 2, 3))
    reply = upload(simulator, name, data, **fields)
    assert (reply.status_code, reply.json()) == (200, capture["response"]["body"])
    folders = {"input": simulator.input_dir, "temp": simulator.temp_dir, "output": simulator.output_dir}
    folder = folders[reply.json()["type"]]
    assert (folder / reply.json()["subfolder"] / name).read_bytes() == data


@pytest.mark.parametrize("case", [
    "post_upload_image_subfolder_traversal", "post_upload_image_filename_traversal",
    "post_upload_image_wrong_field", "post_upload_image_type_bogus",
])
def test_bad_uploads_are_refused_like_the_real_server(case: str, simulator: Simulator) -> None:
    capture = load_capture(case)
    field, (name, _, _) = next(iter(capture["request"]["multipart_files"].items()))
    reply = upload(simulator, name, png((9, 9, 9)), field=field, **capture["request"].get("multipart_fields", {}))
    assert reply.status_code == capture["response"]["status"]
    assert reply.text == capture["response"]["body"]
    written = [p for p in simulator.data_dir.parent.rglob("*.png")]
    assert written == []  # nothing written anywhere, inside or outside the data folder


def test_view_serves_the_file_with_the_captured_headers(simulator: Simulator) -> None:
    data = png((10, 20, 30))
    (simulator.output_dir / "ref").mkdir()
    (simulator.output_dir / "ref" / "loaded_00001_.png").write_bytes(data)
    reply = view(simulator, **LOADED, type="output")
    captured = load_capture("get_view_output_png")["response"]["headers"]
    assert reply.status_code == 200 and reply.content == data
    assert set(captured) <= set(reply.headers)
    for header in ("Content-Type", "Content-Disposition", "X-Content-Type-Options", "Accept-Ranges"):
        assert reply.headers[header] == captured[header]
    assert reply.headers["Content-Length"] == str(len(data))
    # type defaults to output; /api works too
    assert view(simulator, "/api/view", **LOADED).content == data
    preview = view(simulator, **LOADED, preview="webp;50")
    assert preview.headers["Content-Type"] == "image/webp" and preview.content[:4] == b"RIFF"
    rgb = view(simulator, **LOADED, channel="rgb")
    assert Image.open(io.BytesIO(rgb.content)).mode == "RGB"


def test_view_refuses_traversal_and_applies_the_basename_rule(simulator: Simulator) -> None:
    (simulator.output_dir / "ref").mkdir()
    (simulator.output_dir / "ref" / "loaded_00001_.png").write_bytes(png((1, 1, 1)))
    for name, case in load_capture("summary_view_traversal").items():
        if "params" in case:
            reply = requests.get(simulator.url + "/view", params=case["params"], timeout=5)
        else:
            reply = requests.get(simulator.url + case["url"], timeout=5)
        assert (reply.status_code, len(reply.content)) == (case["status"], case["bytes"]), name
    for params, status in (({}, 404), ({"filename": "missing.png"}, 404), ({**LOADED, "type": "bogus"}, 400)):
        assert requests.get(simulator.url + "/view", params=params, timeout=5).status_code == status


def test_view_streams_a_large_file(simulator: Simulator) -> None:
    big = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32)  # ~3 MB
    (simulator.output_dir / "big.mp4").write_bytes(big)
    with requests.get(simulator.url + "/view", params={"filename": "big.mp4"}, stream=True, timeout=10) as reply:
        assert reply.headers["Content-Type"] == "video/mp4"
        assert int(reply.headers["Content-Length"]) == len(big)
        digest = hashlib.sha256()
        for chunk in reply.iter_content(64 * 1024):
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(big).hexdigest()
    first_100 = {"Range": "bytes=0-99"}
    partial = requests.get(simulator.url + "/view", params={"filename": "big.mp4"}, headers=first_100, timeout=10)
    assert partial.status_code == 206 and partial.content == big[:100]


def test_loadimage_reads_uploads_in_subfolders_and_annotated_outputs(simulator: Simulator) -> None:
    upload(simulator, "ref_sub.png", png((200, 100, 50), (10, 10)), subfolder="pipeline/run1")
    (simulator.output_dir / "ref").mkdir()
    (simulator.output_dir / "ref" / "loaded_00001_.png").write_bytes(png((5, 5, 5), (12, 12)))
    prompt = load_capture("post_prompt_loadimage_annotated_output")["request"]["json"]["prompt"] | {
        "5": {"class_type": "LoadImage", "inputs": {"image": "pipeline/run1/ref_sub.png"}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "ref/loaded_sub"}},
    }
    reply = requests.post(simulator.url + "/prompt", json={"prompt": prompt}, timeout=5).json()
    assert reply["node_errors"] == {}
    info = requests.get(simulator.url + "/object_info/LoadImage", timeout=5).json()
    assert info["LoadImage"]["input"]["required"]["image"][0] == []  # subfolders are not listed, yet load fine
    outputs = wait_for_history(simulator, reply["prompt_id"])["outputs"]
    saved = simulator.output_dir / "ref" / outputs["6"]["images"][0]["filename"]
    assert Image.open(saved).getpixel((0, 0)) == (200, 100, 50)
    assert Image.open(simulator.output_dir / "ref" / outputs["2"]["images"][0]["filename"]).size == (12, 12)
