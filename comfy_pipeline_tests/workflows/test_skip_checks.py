"""A workflow's `skip_checks` (content checks that do not apply to its outputs) and whether it makes sound."""

import json
import shutil
from pathlib import Path

import pytest

from comfy_pipeline.media import CONTENT_CHECKS
from comfy_pipeline.workflows.workflow import WorkflowError, load_user_workflow, load_workflow
from comfy_pipeline_tests.support.helpers import REPO_WORKFLOWS


def set_skip(folder: Path, name: str, value) -> None:
    path = folder / f"{name}.params.json"
    data = json.loads(path.read_text())
    if value is None:
        data.pop("skip_checks", None)
    else:
        data["skip_checks"] = value
    path.write_text(json.dumps(data))


def test_the_shipped_workflows_skip_only_what_their_pictures_are_on_purpose():
    assert load_workflow("smoke_image").skip_checks == {"detail"}  # a flat colour
    assert load_workflow("smoke_video").skip_checks == {"motion", "blank_frames"}  # one (flat) picture repeated
    assert load_workflow("z_image_turbo_generation").skip_checks == frozenset()
    assert load_workflow("ltx2_image_to_video").skip_checks == frozenset()
    assert load_workflow("image_upscale").skip_checks == frozenset()  # it keeps its input's detail


def test_a_workflow_makes_audio_when_its_create_video_takes_a_linked_audio_input():
    assert load_workflow("ltx2_image_to_video").makes_audio  # CreateVideo takes LTXVAudioVAEDecode's audio
    assert not load_workflow("smoke_video").makes_audio
    assert not load_workflow("z_image_turbo_generation").makes_audio


def test_a_format_1_map_without_skip_checks_loads_unchanged_with_every_check(tmp_path):
    # A user's own files outside workflows/, written before skip_checks existed.
    mine = tmp_path / "elsewhere"
    mine.mkdir()
    for name in ("smoke_image.json", "smoke_image.params.json"):
        shutil.copy(REPO_WORKFLOWS / name, mine / f"old_{name}")
    set_skip(mine, "old_smoke_image", None)
    old = load_user_workflow(mine / "old_smoke_image.json")
    assert old.skip_checks == frozenset() and old.name == "old_smoke_image"
    assert set(old.params) == set(load_workflow("smoke_image").params)


def test_skip_checks_named_in_a_map_are_honoured(folder):
    set_skip(folder, "z_image_turbo_generation", ["brightness", "detail"])
    assert load_workflow("z_image_turbo_generation", directory=folder).skip_checks == {"brightness", "detail"}
    set_skip(folder, "ltx2_image_to_video", [])
    assert load_workflow("ltx2_image_to_video", directory=folder).skip_checks == frozenset()


@pytest.mark.parametrize("value, fragment", [
    (["motion", "sharpness"], "unknown content check(s) 'sharpness'"),
    (["Motion"], "unknown content check(s) 'Motion'"),
    ("motion", "must be a list of content check names"),
    ([1], "must be a list of content check names"),
])
def test_a_bad_skip_checks_is_a_clear_error_naming_the_known_checks(folder, value, fragment):
    set_skip(folder, "smoke_video", value)
    with pytest.raises(WorkflowError) as info:
        load_workflow("smoke_video", directory=folder)
    message = str(info.value)
    assert "smoke_video.params.json" in message and fragment in message
    assert all(name in message for name in CONTENT_CHECKS)
