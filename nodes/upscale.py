"""Stage III: Stable Diffusion's x4 upscaler, run naively with the first prompt, as the paper does."""

from __future__ import annotations

import comfy.model_management
import comfy.utils
import torch
from comfy_api.latest import io

from .comfy_rules import out_of_memory, out_of_memory_errors
from .images import check_image
from .labels import node_label
from .sockets import check_sockets
from .types import CATEGORY, Prompts, StageIIIModel


class NaiveStageIII(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VisualAnagramsStageIII",
            display_name="Naive x4 Upscaler (Stage III)",
            category=CATEGORY,
            description="Upscales 256 px illusions to 1024 px with Stable Diffusion's x4 upscaler. Like the paper's "
            "Stage III it is naive: it is guided by the first prompt only and knows nothing of the views, so other "
            "views can lose detail.",
            inputs=[
                StageIIIModel.Input("model", tooltip="From the IF Stage III Loader (x4 upscaler)."),
                io.Image.Input("image", tooltip="Stage II illusions (256 px)."),
                Prompts.Input("prompts", tooltip="Only the first prompt is used."),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=0xFFFF_FFFF_FFFF_FFFF,
                    control_after_generate=True,
                    tooltip="Seed of the first image; image k of the batch uses seed + k.",
                ),
                io.Int.Input(
                    "steps", default=75, min=1, max=1000, tooltip="Denoising steps (the upscaler's default: 75)."
                ),
                io.Float.Input(
                    "guidance",
                    default=9.0,
                    min=0.0,
                    max=50.0,
                    step=0.1,
                    tooltip="Classifier-free guidance for the first prompt (the upscaler's default: 9).",
                ),
                io.Int.Input(
                    "noise_level", default=0, min=0, max=350, tooltip="Noise added before upscaling (the paper: 0)."
                ),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The 1024 px images, one per input image.")],
        )

    @classmethod
    def execute(cls, model, image, prompts, seed, steps, guidance, noise_level) -> io.NodeOutput:
        check_sockets(cls, model=model, image=image, prompts=prompts)
        check_image(cls, "image", image, square=False)
        loaded = model.get()
        progress = comfy.utils.ProgressBar(steps)

        def on_step_end(pipeline, step, timestep, callback_kwargs):
            comfy.model_management.throw_exception_if_processing_interrupted()
            progress.update_absolute(step + 1, steps)
            return callback_kwargs

        upscaled = []
        for index, picture in enumerate(image.movedim(-1, 1)):
            generator = torch.Generator(device="cpu").manual_seed(seed + index)
            try:
                output = loaded.pipeline(
                    prompt=prompts.texts[0],
                    image=picture[None],
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    noise_level=noise_level,
                    generator=generator,
                    output_type="pt",
                    callback_on_step_end=on_step_end,
                ).images
            except out_of_memory_errors() as error:
                raise out_of_memory(
                    f"{node_label(cls)}: out of memory at 1024 px. Pick offload 'model' or 'sequential' in the "
                    "Stage III loader, or skip Stage III (the 256 px Stage II output is the paper's main result).",
                    error,
                ) from error
            upscaled.append(output.float().cpu())
        return io.NodeOutput(torch.cat(upscaled).movedim(1, -1).clamp(0, 1))
