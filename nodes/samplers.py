"""Anagram Stage I and Stage II sampler nodes: ComfyUI progress, previews, cancel and errors
around the sampling core."""

from __future__ import annotations

import logging

import comfy.model_management
import comfy.utils
import torch
from comfy_api.latest import io
from PIL import Image

from ..sampling import (
    IF_SCHEDULE_NAMES,
    REDUCTIONS,
    SamplingInputError,
    sample_stage_1,
    sample_stage_2,
)
from .images import to_comfy_image, to_model_space
from .types import CATEGORY, Prompts, StageIIModel, StageIModel, Views

STEP_COUNT = "steps"  # the schedule choice that uses the steps widget
PREVIEW_SIZE = 512


def _schedule_input(default: str) -> io.Combo.Input:
    return io.Combo.Input(
        "schedule",
        options=[STEP_COUNT, *IF_SCHEDULE_NAMES],
        default=default,
        tooltip="'steps' spaces the steps evenly; the others are DeepFloyd's tuned timestep lists "
        "(fast27 / smart* for Stage I, super* for Stage II) and replace the steps value.",
    )


def _common_inputs(model_input: io.Input) -> list[io.Input]:
    return [
        model_input,
        Prompts.Input("prompts", tooltip="From the Anagram Prompt Encoder: prompt k pairs with view k."),
        Views.Input("views", tooltip="The chain of view nodes, in prompt order."),
        io.Int.Input("seed", default=0, min=0, max=0xFFFF_FFFF_FFFF_FFFF, control_after_generate=True,
                     tooltip="Seed of the first candidate; candidate k uses seed + k, as the paper's seeds do."),
        io.Int.Input("steps", default=30, min=1, max=1000, tooltip="Denoising steps (paper: 30)."),
        _schedule_input(STEP_COUNT),
        io.Float.Input("guidance", default=10.0, min=0.0, max=50.0, step=0.1,
                       tooltip="Classifier-free guidance scale for every view (paper: 10)."),
        io.Combo.Input("reduction", options=["auto", *REDUCTIONS], default="auto",
                       tooltip="How the views' noise estimates combine: mean (anagrams), sum (factorized hybrid views), "
                       "alternate (one view per step). 'auto' picks sum when every view is factorized, else mean."),
    ]


def _reduction(choice: str, views) -> str:
    if choice != "auto":
        return choice
    return "sum" if all(view.reduction == "sum" for view in views) else "mean"


def _run(label: str, sample, loaded, *, prompts, views, seed, steps, schedule, guidance, reduction,
         **stage_inputs) -> torch.Tensor:
    """Run a core sampler with ComfyUI's progress bar, previews, cancel and readable errors."""
    timesteps = None if schedule == STEP_COUNT else schedule
    progress = comfy.utils.ProgressBar(steps)

    def on_step(info) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        preview = to_comfy_image(info.predicted_clean[:1])[0]
        preview_image = Image.fromarray((preview.numpy() * 255).round().astype("uint8"))
        # The progress hook also raises if the user pressed cancel.
        progress.update_absolute(info.step, info.total, ("JPEG", preview_image, PREVIEW_SIZE))

    try:
        result = sample(
            unet=loaded.pipeline.unet,
            scheduler=loaded.pipeline.scheduler,
            views=list(views),
            embeddings=prompts.embeddings,
            seed=seed,
            num_inference_steps=steps,
            timesteps=timesteps,
            guidance_scale=guidance,
            reduction=_reduction(reduction, views),
            callback=on_step,
            device=loaded.device,
            **stage_inputs,
        )
    except SamplingInputError as error:
        raise ValueError(f"{label}: {error.input_name}: {error.problem}") from error
    except torch.OutOfMemoryError as error:
        raise RuntimeError(
            f"{label}: out of memory. Lower 'candidates', pick offload 'model' (or 'sequential') in the IF loader, "
            "or load a smaller model (IF-I-L / IF-I-M, IF-II-M)."
        ) from error
    return result.images


class AnagramStageI(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VisualAnagramsStageI",
            display_name="Anagram Sampler (Stage I)",
            category=CATEGORY,
            description="Draws a 64 px illusion with DeepFloyd IF Stage I: every view is denoised with its own "
            "prompt at every step (Geng et al., Visual Anagrams).",
            inputs=[
                *_common_inputs(StageIModel.Input("model", tooltip="An IF Stage I model (IF-I-M / L / XL).")),
                io.Int.Input("candidates", default=1, min=1, max=16,
                             tooltip="Illusions drawn at once (one batch); candidate k equals seed + k alone."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The 64 px illusions, one per candidate.")],
        )

    @classmethod
    def execute(cls, model, candidates, **sampling_inputs) -> io.NodeOutput:
        images = _run("Anagram Sampler (Stage I)", sample_stage_1, model.get(), num_candidates=candidates,
                      **sampling_inputs)
        return io.NodeOutput(to_comfy_image(images))


class AnagramStageII(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VisualAnagramsStageII",
            display_name="Anagram Upscaler (Stage II)",
            category=CATEGORY,
            description="Refines 64 px illusions to 256 px with DeepFloyd IF Stage II, keeping every view's prompt.",
            inputs=[
                *_common_inputs(StageIIModel.Input("model", tooltip="An IF Stage II model (IF-II-M / L).")),
                io.Image.Input("image", tooltip="Stage I illusions; other sizes are resized to Stage II's input size."),
                io.Int.Input("noise_level", default=50, min=0, max=999,
                             tooltip="Noise added to the upsampled image before refining (paper: 50)."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The 256 px illusions, one per input image.")],
        )

    @classmethod
    def execute(cls, model, image, noise_level, **sampling_inputs) -> io.NodeOutput:
        loaded = model.get()
        low_res = to_model_space(image)
        expected = loaded.pipeline.unet.config.sample_size // 4  # IF's Stage II upsamples 4x
        if low_res.shape[-1] != expected or low_res.shape[-2] != expected:
            # Any picture can be refined; say so, because the illusion's views were drawn at Stage I's size.
            logging.warning(
                "Anagram Upscaler (Stage II): image is %dx%d px, resized to %dx%d px (Stage II's input size); "
                "illusions keep their views only when Stage I made the image.",
                low_res.shape[-1], low_res.shape[-2], expected, expected,
            )
            low_res = torch.nn.functional.interpolate(low_res, (expected, expected), mode="bicubic", antialias=True)
        images = _run(
            "Anagram Upscaler (Stage II)",
            sample_stage_2,
            loaded,
            image_noising_scheduler=loaded.pipeline.image_noising_scheduler,
            image=low_res.clamp(-1, 1),
            noise_level=noise_level,
            **sampling_inputs,
        )
        return io.NodeOutput(to_comfy_image(images))
