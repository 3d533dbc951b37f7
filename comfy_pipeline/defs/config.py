"""Run config of the assets, as the Dagster launchpad shows it.

Dagster checks the types; the ranges below are checked by the assets against the workflows' parameter maps
(`prompts.check_specs`) before anything reaches the server.
"""

from pathlib import Path

import dagster as dg
from pydantic import Field

from comfy_pipeline.workflows.prompts import IMAGE_WORKFLOW, VIDEO_WORKFLOW, PromptSpec
from comfy_pipeline.workflows.workflow import ENV_DIR

# Run config is stored and may come from anyone who can launch a run: it names workflows, never arbitrary files.
WORKFLOWS_FOLDERS = (
    f"The workflows folders are the project's workflows/, or those ${ENV_DIR} lists (separated by ':'). A file "
    "elsewhere is refused: copy it into one of them. Only the command line (`comfy-pipeline check --workflows`, "
    "`validate-workflow`) takes a workflow file from anywhere."
)


def _prompt_ids_field(what: str):
    return Field(
        default_factory=list,
        description=f"Advanced: ComfyUI prompt ids chosen ahead, one per {what}, in order (lowercase UUIDs). A "
        "prompt already queued under its id is adopted instead of queued again (`comfy-pipeline check` queues its "
        "tests' prompts before their runs start). Empty: new ids.",
    )


class PromptSpecConfig(dg.Config):
    text: str = Field(description="What the image shows (the Z-Image-Turbo prompt).")
    motion_prompt: str | None = Field(
        default=None, description="What happens in the video (LTX-2 prompt). Default: the image prompt."
    )
    negative_prompt: str | None = Field(
        default=None, description="What the video should avoid. Default: the workflow's own."
    )
    seed: int = Field(default=0, description="Seed of both workflows (0 or more); the same seed gives the same output.")
    width: int = Field(default=1024, description="Image width: 256 to 2048, a multiple of 16.")
    height: int = Field(default=784, description="Image height: 256 to 2048, a multiple of 16.")
    frames: int = Field(default=121, description="Video length in frames: 8n+1 from 9 to 257 (9, 17, ..., 121, ...).")
    fps: int = Field(default=25, description="Video frame rate: 1 to 60.")

    def to_spec(self) -> PromptSpec:
        return PromptSpec(**self.model_dump())

    @classmethod
    def from_spec(cls, spec: PromptSpec) -> "PromptSpecConfig":
        """The run config of one prompt: every field of the spec (its `extra` provenance stays out of run config)."""
        return cls(**{k: v for k, v in spec.to_dict().items() if k != "extra" and v is not None})


class PromptConfig(dg.Config):
    prompts: list[PromptSpecConfig] = Field(
        default_factory=list,
        description="The prompts of this run. Empty: the first prompt of the library (all of it with use_library).",
    )
    use_library: bool = Field(default=False, description="Run every prompt of the shipped prompt library.")

    @classmethod
    def from_specs(cls, specs: list[PromptSpec]) -> "PromptConfig":
        return cls(prompts=[PromptSpecConfig.from_spec(spec) for spec in specs])


class ImageConfig(dg.Config):
    workflow: str = Field(
        default=IMAGE_WORKFLOW,
        description="The workflow that makes the images: its name in the workflows folder(s), or a path inside "
        f"one. The model-free smoke_image tests a deployment before the models are there. {WORKFLOWS_FOLDERS}",
    )
    prompt_ids: list[str] = _prompt_ids_field("prompt")


class EditConfig(dg.Config):
    """An image-to-image workflow's run config (an upscaler, a restyle): the workflow's own values by default."""

    workflow: str = Field(
        description="The image-to-image workflow: its name in the workflows folder(s), or a path inside one. Default: "
        f"the asset's own. {WORKFLOWS_FOLDERS}",
    )
    input_images: list[str] = Field(
        default_factory=list,
        description="Local images to work on. Empty: the good images of the asset's input (this run's, else its "
        "latest materialization).",
    )
    prompt: str | None = Field(default=None, description="The prompt for input_images, when the workflow takes one.")
    seed: int = Field(default=0, description="Seed for input_images (0 or more), when the workflow takes one.")
    prompt_ids: list[str] = _prompt_ids_field("image")


class VideoConfig(dg.Config):
    workflow: str = Field(
        default=VIDEO_WORKFLOW,
        description="The workflow that makes the videos: its name in the workflows folder(s), or a path inside "
        f"one. The model-free smoke_video tests a deployment before the models are there. {WORKFLOWS_FOLDERS}",
    )
    input_images: list[str] = Field(
        default_factory=list,
        description="Local images to animate (video_generation_job). Empty: the good images of generated_image (this "
        "run's, else its latest materialization).",
    )
    motion_prompt: str | None = Field(default=None, description="LTX-2 prompt for input_images.")
    negative_prompt: str | None = Field(default=None, description="What the video should avoid, for input_images.")
    seed: int = Field(default=0, description="Seed for input_images (0 or more).")
    frames: int = Field(default=121, description="Video length for input_images: 8n+1 from 9 to 257.")
    fps: int = Field(default=25, description="Frame rate for input_images: 1 to 60.")
    prompt_ids: list[str] = _prompt_ids_field("video")

    @classmethod
    def animate(cls, image: str | Path, spec: PromptSpec, **more: object) -> "VideoConfig":
        """A video of a local image, with the prompt's motion (its text by default), negative prompt, seed,
        length and frame rate; `more`: other fields (workflow, prompt_ids)."""
        negative = {} if spec.negative_prompt is None else {"negative_prompt": spec.negative_prompt}
        return cls(input_images=[str(image)], motion_prompt=spec.motion_prompt or spec.text, seed=spec.seed,
                   frames=spec.frames, fps=spec.fps, **negative, **more)
