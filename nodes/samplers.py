"""Anagram Stage I and Stage II sampler nodes: ComfyUI progress, previews, cancel and errors
around the sampling core."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import comfy.model_management
import comfy.utils
import torch
from comfy_api.latest import io
from PIL import Image

from ..sampling import (
    IF_SCHEDULE_NAMES,
    REDUCTIONS,
    AntiSegregation,
    SamplingInputError,
    sample_stage_1,
    sample_stage_2,
)
from ..sampling.balancing import ViewBalancing
from ..sampling.inputs import MAX_VIEWS, check_low_res_image
from ..sampling.pictures import INPAINTING_MODES
from ..sampling.stages import stage_1_generators_after
from .comfy_rules import out_of_memory, out_of_memory_errors
from .images import check_image, to_comfy_image, to_model_space
from .labels import node_label
from .model_handle import get_together
from .pictures import StagePictures
from .sockets import check_sockets
from .types import CATEGORY, ClipScorer, Prompts, StageIIModel, StageIModel, Views, view_weights

STEP_COUNT = "steps"  # the schedule choice that uses the steps widget
PREVIEW_SIZE = 512

logger = logging.getLogger(__name__)

# Stage II's seed modes: its own noise (seed + k per image), or Stage I's generators continued, as the
# published code runs the cascade with one generator.
OWN_SEED = "own seed"
CONTINUE_STAGE_I = "continue Stage I"
SEED_MODES = (OWN_SEED, CONTINUE_STAGE_I)

CANDIDATES_TOOLTIP = (
    "Illusions drawn at once (one batch). Candidate k draws exactly the noise of a single run with seed + k, "
    "and its image matches that run's up to the UNet's batch-size-dependent rounding: in fp32 up to 4e-4 after "
    "8 steps on the tiny test models (within one 8-bit level; fp16 / bf16 round more coarsely), in float64 "
    "exactly or to about 1e-14."
)
STAGE_II_SEED_TOOLTIP = (
    "'own seed': the seed of the first image; image k of the batch uses seed + k. 'continue Stage I' (see "
    "seed_mode): Stage I's seed, so link one Int primitive to both seeds or copy the value."
)
SEED_MODE_TOOLTIP = (
    "'own seed' starts Stage II's randomness afresh. 'continue Stage I' continues Stage I's, as the paper's "
    "generate.py does with one generator: given Stage I's seed (the seed widget), steps and schedule (the two "
    "Stage I widgets below), image k of the batch continues Stage I's candidate k (seed + k), so the 64 -> 256 "
    "cascade reproduces the paper's images for the same seed. To continue one candidate picked from a batch, "
    "give seed + k."
)


RECTIFY_TOOLTIP = (
    "Anagram-MTL's noise variance rectification: the mean of the views' noise estimates is rescaled to unit "
    "variance (by 1/sqrt(sum a_i^2 + 2 sum rho_ij a_i a_j), rho_ij the estimates' correlation, a_i the view "
    "weights), instead of shrinking where the views disagree. Costs nothing measurable. Needs reduction mean."
)
ANTI_SEGREGATION_TOOLTIP = (
    "Anagram-MTL's anti-segregation: in the early steps, nudges the image so that every view's subject (its "
    "prompt's concept word) draws attention from the same pixels, instead of each settling in a region of its "
    "own. Costs about one more UNet call with a backward pass per early step and per candidate. Permutation views "
    "only (flips, rotations, jigsaw, ...)."
)
BALANCE_VIEWS_TOOLTIP = (
    "Anagram-MTL's noise-vector balancing: at every step CLIP measures how well each view already shows its "
    "prompt (S_ii), and the views' noise estimates are mixed with weights proportional to S_ii^-(1 + step / "
    "steps), so the weaker view pulls harder instead of fading. Needs a CLIP in balancing_clip: GLIDE's "
    "noise-aware CLIP scores the noisy sample at its timestep, as Anagram-MTL does; a standard CLIP scores the "
    "step's clean estimate. Costs one CLIP pass per view and candidate per step. Needs reduction mean. Off: the "
    "plain mix, exactly as without this option (a CLIP linked to balancing_clip is then not used)."
)
BALANCING_CLIP_TOOLTIP = (
    "From the CLIP Loader (illusion scoring): the CLIP balance_views scores the views with. Not used while "
    "balance_views is off."
)
MTL_DEFAULTS = AntiSegregation()

# diffusers' defaults: IFImg2ImgPipeline's for Stage I, IFImg2ImgSuperResolutionPipeline's for Stage II.
STAGE_I_STRENGTH = 0.7
STAGE_II_STRENGTH = 0.8
SPLIT_VIEWS = "low / high pass, triple bands, grayscale / colour, motion blur / its residual"


def _rectify_input() -> io.Boolean.Input:
    return io.Boolean.Input("rectify", default=False, optional=True, tooltip=RECTIFY_TOOLTIP)


def _balancing_inputs() -> list[io.Input]:
    return [
        io.Boolean.Input("balance_views", default=False, optional=True, tooltip=BALANCE_VIEWS_TOOLTIP),
        ClipScorer.Input("balancing_clip", optional=True, tooltip=BALANCING_CLIP_TOOLTIP),
    ]


def _model_and_balancing(
    node_cls: type[io.ComfyNode], model, balance_views: bool, balancing_clip, prompts
) -> tuple[Any, ViewBalancing | None]:
    """The loaded model and the balancing option for the core sampler (None when off: the plain mix, bit for
    bit). With balancing, the UNet and the CLIP go onto the device in one request, so neither evicts the other."""
    if not balance_views:
        return model.get(), None
    if balancing_clip is None:
        raise ValueError(
            f"{node_label(node_cls)}: balance_views needs a CLIP: connect a CLIP Loader (illusion scoring) to "
            "balancing_clip, or turn balance_views off."
        )
    loaded, scorer = get_together(model, balancing_clip)
    # The prompts as the sampler reads them (style included), one per view.
    return loaded, ViewBalancing(scorer, prompts.texts)


def _anti_segregation_inputs() -> list[io.Input]:
    return [
        io.Boolean.Input("anti_segregation", default=False, optional=True, tooltip=ANTI_SEGREGATION_TOOLTIP),
        io.Float.Input(
            "anti_segregation_step",
            default=MTL_DEFAULTS.step_size,
            min=0.0,
            max=100.0,
            step=0.1,
            optional=True,
            tooltip=f"Anti-segregation's gradient step on the image (Anagram-MTL: {MTL_DEFAULTS.step_size:g}).",
        ),
        io.Int.Input(
            "anti_segregation_steps",
            default=MTL_DEFAULTS.steps,
            min=0,
            max=1000,
            optional=True,
            tooltip="Refine after each of the first this-many denoising steps (Anagram-MTL: "
            f"{MTL_DEFAULTS.steps} of 30). The last step is never refined.",
        ),
        io.Int.Input(
            "attention_size",
            default=0,
            min=0,
            max=1024,
            optional=True,
            tooltip="Side in pixels of the attention maps anti-segregation reads; 0 takes the largest size at which "
            "the UNet's down and up blocks attend (32 for IF-I, Anagram-MTL's choice; 8 for the digits demo).",
        ),
    ]


def _picture_inputs(*, start_tooltip: str, strength: float, pipeline: str, size: str) -> list[io.Input]:
    """Illusions from a picture (sampling/pictures.py): a start image, a mask, a reference."""
    fit = f"Square; one for all {size[0]} or one each; resized to {size[1]}."
    return [
        io.Image.Input("start_image", optional=True, tooltip=f"{start_tooltip} {fit}"),
        io.Float.Input(
            "strength",
            default=strength,
            min=0.0,
            max=1.0,
            step=0.01,
            optional=True,
            tooltip="With a start image only (without one the run is text to image). Of the N steps only the last "
            "int(N x strength) run, from the start image noised to the first of them: 1 starts from pure noise "
            "(without a mask: exactly the text-to-image run), 0 returns the start image (no step runs). "
            f"{strength:g} is diffusers' {pipeline} default.",
        ),
        io.Mask.Input(
            "mask",
            optional=True,
            tooltip="Inpainting: the part of the start image to repaint (1 = repaint, binarised at 0.5). Outside "
            "it the result is the start image exactly: that region is set back to the clean picture after every "
            "step ('inpainting' decides what the UNet sees there meanwhile). Load Image gives one from a "
            "picture's alpha (transparent = repaint) or from its MaskEditor. Needs a start image. "
            f"{fit}",
        ),
        io.Combo.Input(
            "inpainting",
            options=list(INPAINTING_MODES),
            default=INPAINTING_MODES[0],
            optional=True,
            tooltip="With a mask: what the UNet sees outside it at each step. 'renoised': the start image noised "
            "to that step (as Stable Diffusion's inpainting pipeline and ComfyUI's samplers do); on the digits "
            "demo this repaints a real digit where 'clean' makes a blot. 'clean': the clean start image, as "
            "diffusers' IFInpaintingPipeline. Either way the result outside the mask is the start image exactly.",
        ),
        io.Image.Input(
            "reference_image",
            optional=True,
            tooltip="An inverse problem (the published code's --ref_im_path): before every step, the component "
            "the reference view shows (the grey levels of grayscale / colour, the low pass of a hybrid) is "
            "replaced by this picture's, noised to that step, and the other views are drawn to fit. Needs a "
            f"view that splits the image into components ({SPLIT_VIEWS}). {fit}",
        ),
        io.Int.Input(
            "reference_view",
            default=1,
            min=1,
            max=MAX_VIEWS,
            optional=True,
            tooltip="With a reference image: the view whose component the reference fixes, counted from 1 along "
            "the views chain (prompt order).",
        ),
        io.Boolean.Input(
            "project_reference",
            default=True,
            optional=True,
            tooltip="With a reference image: after the last step, set the fixed component to the reference's once "
            "more, without noise. On: grey levels (grayscale / colour) come out exactly the reference's; a low "
            "pass comes close, not equal (blurring twice is not blurring once). Off: the published loop, whose "
            "last step leaves that component off by up to about 0.1 in [-1, 1] (about 13 8-bit levels).",
        ),
    ]


def _schedule_input(
    name: str, default: str, *, display_name: str | None = None, optional: bool = False, tooltip_prefix: str = ""
) -> io.Combo.Input:
    return io.Combo.Input(
        name,
        display_name=display_name,
        options=[STEP_COUNT, *IF_SCHEDULE_NAMES],
        default=default,
        optional=optional,
        tooltip=tooltip_prefix + "'steps' spaces the steps evenly; the others are DeepFloyd's tuned timestep lists "
        "(fast27 / smart* for Stage I, super* for Stage II) and replace the steps value.",
    )


def _common_inputs(model_input: io.Input, seed_tooltip: str) -> list[io.Input]:
    return [
        model_input,
        Prompts.Input("prompts", tooltip="From the Anagram Prompt Encoder: prompt k pairs with view k."),
        Views.Input("views", tooltip="The chain of view nodes, in prompt order."),
        io.Int.Input(
            "seed", default=0, min=0, max=0xFFFF_FFFF_FFFF_FFFF, control_after_generate=True, tooltip=seed_tooltip
        ),
        io.Int.Input("steps", default=30, min=1, max=1000, tooltip="Denoising steps (paper: 30)."),
        _schedule_input("schedule", STEP_COUNT),
        io.Float.Input(
            "guidance",
            default=10.0,
            min=0.0,
            max=50.0,
            step=0.1,
            tooltip="Classifier-free guidance scale for every view (paper: 10).",
        ),
        io.Combo.Input(
            "reduction",
            options=["auto", *REDUCTIONS],
            default="auto",
            tooltip="How the views' noise estimates combine: mean (anagrams), sum (factorized hybrid "
            "views), alternate (one view per step). 'auto' picks sum when every view is factorized, "
            "else mean.",
        ),
    ]


def _reduction(choice: str, views) -> str:
    if choice != "auto":
        return choice
    return "sum" if all(view.reduction == "sum" for view in views) else "mean"


def _timesteps(schedule: str) -> str | None:
    return None if schedule == STEP_COUNT else schedule


def _out_of_memory(label: str, error: BaseException) -> BaseException:
    return out_of_memory(
        f"{label}: out of memory. Lower 'candidates' (Stage I) or the image batch (Stage II), turn "
        "anti-segregation off (its backward pass needs memory of its own), pick offload 'model' (or "
        "'sequential') in the IF loader, or load a smaller model (IF-I-L / IF-I-M, IF-II-M).",
        error,
    )


@contextlib.contextmanager
def _readable_errors(label: str) -> Iterator[None]:
    """Input problems and out-of-memory, as messages that name the node, the input and the fix."""
    try:
        yield
    except SamplingInputError as error:
        raise ValueError(f"{label}: {error.input_name}: {error.problem}") from error
    except out_of_memory_errors() as error:
        raise _out_of_memory(label, error) from error


def _run(sample, loaded, *, prompts, views, seed, steps, schedule, guidance, reduction, **stage_inputs) -> torch.Tensor:
    """Run a core sampler with ComfyUI's progress bar, previews and cancel."""
    progress = comfy.utils.ProgressBar(steps)

    def on_step(info) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        preview = to_comfy_image(info.predicted_clean[:1])[0]
        preview_image = Image.fromarray((preview.numpy() * 255).round().astype("uint8"))
        # The progress hook also raises if the user pressed cancel.
        progress.update_absolute(info.step, info.total, ("JPEG", preview_image, PREVIEW_SIZE))

    result = sample(
        unet=loaded.pipeline.unet,
        scheduler=loaded.pipeline.scheduler,
        views=list(views),
        embeddings=prompts.embeddings,
        seed=seed,
        num_inference_steps=steps,
        timesteps=_timesteps(schedule),
        guidance_scale=guidance,
        reduction=_reduction(reduction, views),
        view_weights=view_weights(views),
        callback=on_step,
        device=loaded.device,
        **stage_inputs,
    )
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
                *_common_inputs(
                    StageIModel.Input("model", tooltip="An IF Stage I model (IF-I-M / L / XL)."),
                    seed_tooltip="Seed of the first candidate; candidate k uses seed + k, as the paper's seeds do.",
                ),
                io.Int.Input("candidates", default=1, min=1, max=16, tooltip=CANDIDATES_TOOLTIP),
                # Optional and after the older inputs, so graphs saved before them load and run as before.
                _rectify_input(),
                *_anti_segregation_inputs(),
                *_picture_inputs(
                    start_tooltip="Image to image (SDEdit, as diffusers' IFImg2ImgPipeline): start from this "
                    "picture, noised to the first step that 'strength' keeps, instead of from pure noise.",
                    strength=STAGE_I_STRENGTH,
                    pipeline="IFImg2ImgPipeline's",
                    size=("candidates", "Stage I's size (64 px for IF)"),
                ),
                # Last, after the older widgets: the canvas stores widget values by position, so a widget
                # inserted before them would shift the values of every workflow saved before it.
                *_balancing_inputs(),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The 64 px illusions, one per candidate.")],
        )

    @classmethod
    def execute(
        cls,
        model,
        prompts,
        views,
        candidates,
        rectify=False,
        anti_segregation=False,
        anti_segregation_step=MTL_DEFAULTS.step_size,
        anti_segregation_steps=MTL_DEFAULTS.steps,
        attention_size=0,
        start_image=None,
        strength=STAGE_I_STRENGTH,
        mask=None,
        inpainting=INPAINTING_MODES[0],
        reference_image=None,
        reference_view=1,
        project_reference=True,
        balance_views=False,
        balancing_clip=None,
        **sampling_inputs,
    ) -> io.NodeOutput:
        check_sockets(
            cls,
            model=model,
            prompts=prompts,
            views=views,
            start_image=start_image,
            mask=mask,
            reference_image=reference_image,
            balancing_clip=balancing_clip,
        )
        settings = None
        if anti_segregation:
            settings = AntiSegregation(
                step_size=anti_segregation_step, steps=anti_segregation_steps, attention_size=attention_size or None
            )
        # Before the model loads: a wrong picture is named at once.
        pictures = StagePictures.checked(
            cls,
            count=candidates,
            count_name="candidates",
            start_image=start_image,
            strength=strength,
            mask=mask,
            inpainting=inpainting,
            reference_image=reference_image,
            reference_view=reference_view,
            project_reference=project_reference,
        )
        with _readable_errors(node_label(cls)):
            loaded, balancing = _model_and_balancing(cls, model, balance_views, balancing_clip, prompts)
            images = _run(
                sample_stage_1,
                loaded,
                prompts=prompts,
                views=views,
                num_candidates=candidates,
                rectify=rectify,
                balancing=balancing,
                anti_segregation=settings,
                **pictures.core_inputs("Stage I", loaded.pipeline.unet.config.sample_size),
                **sampling_inputs,
            )
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
                *_common_inputs(
                    StageIIModel.Input("model", tooltip="An IF Stage II model (IF-II-M / L)."),
                    seed_tooltip=STAGE_II_SEED_TOOLTIP,
                ),
                io.Image.Input("image", tooltip="Stage I illusions; other sizes are resized to Stage II's input size."),
                io.Int.Input(
                    "noise_level",
                    default=50,
                    min=0,
                    max=999,
                    tooltip="Noise added to the upsampled image before refining (paper: 50).",
                ),
                # Optional, so API graphs written before the seed modes still validate (and run as before).
                io.Combo.Input(
                    "seed_mode", options=list(SEED_MODES), default=OWN_SEED, optional=True, tooltip=SEED_MODE_TOOLTIP
                ),
                io.Int.Input(
                    "stage_1_steps",
                    display_name="Stage I steps",
                    default=30,
                    min=1,
                    max=1000,
                    optional=True,
                    tooltip="'continue Stage I' only: the steps Stage I ran (its steps widget).",
                ),
                _schedule_input(
                    "stage_1_schedule",
                    STEP_COUNT,
                    display_name="Stage I schedule",
                    optional=True,
                    tooltip_prefix="'continue Stage I' only: the schedule Stage I ran. ",
                ),
                _rectify_input(),
                *_picture_inputs(
                    start_tooltip="Image to image at Stage II's size (as diffusers' IFImg2ImgSuperResolutionPipeline, "
                    "its original_image): start from this picture, noised to the first step that 'strength' keeps, "
                    "instead of from pure noise; 'image' stays the low-resolution condition.",
                    strength=STAGE_II_STRENGTH,
                    pipeline="IFImg2ImgSuperResolutionPipeline's",
                    size=("images of 'image'", "Stage II's output size (256 px for IF)"),
                ),
                io.Float.Input(
                    "stage_1_strength",
                    display_name="Stage I strength",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    optional=True,
                    tooltip="'continue Stage I' only: the strength Stage I ran with a start image (1 without one). "
                    "A lower strength runs fewer Stage I steps, which draw less noise.",
                ),
                io.Boolean.Input(
                    "stage_1_reference",
                    display_name="Stage I reference",
                    default=False,
                    optional=True,
                    tooltip="'continue Stage I' only: on if Stage I ran with a reference image (which draws noise "
                    "before every step).",
                ),
                # Last, for the reason given at Stage I.
                *_balancing_inputs(),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The 256 px illusions, one per input image.")],
        )

    @classmethod
    def execute(
        cls,
        model,
        prompts,
        views,
        image,
        noise_level,
        seed,
        seed_mode=OWN_SEED,
        stage_1_steps=30,
        stage_1_schedule=STEP_COUNT,
        rectify=False,
        start_image=None,
        strength=STAGE_II_STRENGTH,
        mask=None,
        inpainting=INPAINTING_MODES[0],
        reference_image=None,
        reference_view=1,
        project_reference=True,
        stage_1_strength=1.0,
        stage_1_reference=False,
        balance_views=False,
        balancing_clip=None,
        **sampling_inputs,
    ) -> io.NodeOutput:
        label = node_label(cls)
        check_sockets(
            cls,
            model=model,
            prompts=prompts,
            views=views,
            image=image,
            start_image=start_image,
            mask=mask,
            reference_image=reference_image,
            balancing_clip=balancing_clip,
        )
        check_image(cls, "image", image, square=False)
        with _readable_errors(label):
            low_res = to_model_space(image)
            # Before the resize and the clamp below, which would smear or hide NaN and infinite pixels.
            check_low_res_image(low_res)
            # Before the model loads: a wrong picture is named at once.
            pictures = StagePictures.checked(
                cls,
                count=low_res.shape[0],
                count_name="images of 'image'",
                start_image=start_image,
                strength=strength,
                mask=mask,
                inpainting=inpainting,
                reference_image=reference_image,
                reference_view=reference_view,
                project_reference=project_reference,
            )
            loaded, balancing = _model_and_balancing(cls, model, balance_views, balancing_clip, prompts)
            expected = loaded.pipeline.unet.config.sample_size // 4  # IF's Stage II upsamples 4x
            if low_res.shape[-1] != expected or low_res.shape[-2] != expected:
                # Any picture can be refined; say so, because the illusion's views were drawn at Stage I's size.
                logger.warning(
                    "%s: image is %dx%d px, resized to %dx%d px (Stage II's input size); "
                    "illusions keep their views only when Stage I made the image.",
                    label,
                    low_res.shape[-1],
                    low_res.shape[-2],
                    expected,
                    expected,
                )
                low_res = torch.nn.functional.interpolate(low_res, (expected, expected), mode="bicubic", antialias=True)
            generators = None
            if seed_mode == CONTINUE_STAGE_I:
                # Stage I ran an IF Stage I UNet (3 channels in, noise + variance out) at this size. Its
                # scheduler is taken to place a step count's timesteps as Stage II's does (DDPM, 1000 training
                # steps, the same spacing; named schedules are explicit lists either way). Its dtype is not
                # known here; fp16, bf16 and fp32 (every dtype the loaders offer) draw alike.
                generators = stage_1_generators_after(
                    seed,
                    low_res.shape[0],
                    loaded.pipeline.scheduler,
                    sample_shape=(3, expected, expected),
                    num_inference_steps=stage_1_steps,
                    timesteps=_timesteps(stage_1_schedule),
                    strength=stage_1_strength,
                    reference=stage_1_reference,
                )
            images = _run(
                sample_stage_2,
                loaded,
                prompts=prompts,
                views=views,
                seed=seed,
                generators=generators,
                image_noising_scheduler=loaded.pipeline.image_noising_scheduler,
                image=low_res.clamp(-1, 1),
                noise_level=noise_level,
                rectify=rectify,
                balancing=balancing,
                **pictures.core_inputs("Stage II", loaded.pipeline.unet.config.sample_size),
                **sampling_inputs,
            )
        return io.NodeOutput(to_comfy_image(images))
