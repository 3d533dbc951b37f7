"""`dg check defs`, `dg scaffold defs` and `dg list defs` on instances added to a copy of the project, as a user
runs them: a wrong input stops the code location loading with a message that says what to fix, and a scaffolded
instance loads as written."""

import json
import shutil

import pytest
import yaml

from comfy_pipeline_tests.support.helpers import REPO_WORKFLOWS, in_project, output_of, project_copy

COMPONENT = "comfy_pipeline.components.ComfyWorkflowComponent"


def add_instance(project, name: str, **attributes) -> None:
    folder = project / "comfy_pipeline" / "defs" / name
    folder.mkdir()
    document = {"type": COMPONENT, "attributes": attributes}
    (folder / "defs.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


WRONG_INPUTS = {
    # instance name: (workflow, input, words the message must hold besides the instance and the input)
    "prompt_pictures": ("smoke_image", "generated_image", ["images", "prompt"]),
    "clip_from_text": ("smoke_video", "prompt", ["prompts", "image"]),
    "orphan_upscale": ("image_upscale", "no_such_asset", []),
}


@pytest.mark.slow  # slow tier: dg in a copy of the project
@pytest.mark.parametrize("name", WRONG_INPUTS)
def test_dg_check_defs_refuses_an_input_the_workflow_cannot_take(tmp_path, name):
    workflow, wrong_input, words = WRONG_INPUTS[name]
    project = project_copy(tmp_path)
    add_instance(project, name, workflow=workflow, asset={"key": name}, input=wrong_input)
    proc = in_project(project, "dg", "check", "defs")
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0, output_of(proc)
    assert name in said and wrong_input in said, output_of(proc)
    for word in words:
        assert word in said, f"{word!r} not in the message:\n{output_of(proc)}"
    assert "All definitions loaded successfully" not in said


@pytest.mark.slow  # slow tier: dg in a copy of the project
def test_a_scaffolded_instance_loads_as_written_and_is_listed_with_its_input_and_check(tmp_path):
    project = project_copy(tmp_path)
    scaffolded = in_project(project, "dg", "scaffold", "defs", COMPONENT, "thumb", "--workflow", "image_upscale")
    assert scaffolded.returncode == 0, output_of(scaffolded)
    written = project / "comfy_pipeline" / "defs" / "thumb" / "defs.yaml"
    document = yaml.safe_load(written.read_text(encoding="utf-8"))
    assert document["type"] == COMPONENT
    attributes = document["attributes"]
    assert attributes["workflow"] == "image_upscale"
    assert attributes["asset"]["key"] == "thumb" and attributes["input"] == "generated_image"
    # The parameters no upstream image feeds, at their defaults; the image itself is fed, so not fixed here.
    assert attributes["params"] == {"scale_by": 2.0, "upscale_method": "lanczos"}

    # A text-to-image one reads prompts; what each prompt sets is left out of params, shown as comments.
    scaffolded = in_project(project, "dg", "scaffold", "defs", COMPONENT, "pics", "--workflow",
                            "z_image_turbo_generation")
    assert scaffolded.returncode == 0, output_of(scaffolded)
    text = (project / "comfy_pipeline" / "defs" / "pics" / "defs.yaml").read_text(encoding="utf-8")
    attributes = yaml.safe_load(text)["attributes"]
    assert attributes["input"] == "prompt" and attributes["asset"]["key"] == "pics"
    assert attributes["params"] == {"steps": 8}
    (fed,) = [line for line in text.splitlines() if line.strip().startswith("#") and "set by each prompt" in line]
    assert all(name in fed for name in ("prompt", "seed", "width", "height")), text

    # Beside them, a user's own workflow file kept next to its defs.yaml (a path relative to that folder).
    add_instance(project, "flat_pictures", workflow="flat.json", asset={"key": "flat_pictures"}, input="prompt",
                 params={"width": 256, "height": 256}, quality={"image_min_bytes": 100, "skip_checks": ["detail"]})
    for suffix in (".json", ".params.json"):
        shutil.copy(REPO_WORKFLOWS / f"smoke_image{suffix}", project / "comfy_pipeline" / "defs" / "flat_pictures"
                    / f"flat{suffix}")

    checked = in_project(project, "dg", "check", "defs")
    assert checked.returncode == 0, output_of(checked)

    listed = in_project(project, "dg", "list", "defs", "--json")
    assert listed.returncode == 0, output_of(listed)
    found = json.loads(listed.stdout)
    assets = {a["asset_key"]: a for a in found["assets"]}
    checks = {c["key"] for c in found["asset_checks"]}
    assert assets["thumb"]["dependency_keys"] == ["generated_image"]
    assert "thumb:image_quality" in checks
    assert assets["pics"]["dependency_keys"] == ["prompt"] and "pics:image_quality" in checks
    assert assets["flat_pictures"]["dependency_keys"] == ["prompt"] and "flat_pictures:image_quality" in checks
    # The shipped assets are listed as before, made by instances of the same component.
    assert assets["generated_image"]["dependency_keys"] == ["prompt"]
    assert assets["ltx2_video"]["dependency_keys"] == ["generated_image"]
    assert {"generated_image:image_quality", "ltx2_video:video_quality", "upscaled_image:image_quality"} <= checks
    assert set(assets) >= {"prompt", "generated_image", "ltx2_video", "validation_report", "upscaled_image"}

    components = in_project(project, "dg", "list", "components", "--json")
    assert COMPONENT in {item["key"] for item in json.loads(components.stdout)["items"]}, output_of(components)
