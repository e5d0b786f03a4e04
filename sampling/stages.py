"""Stage I (text -> 64 px) and Stage II (64 -> 256 px) multi-view samplers for DeepFloyd IF.

Both take any diffusers IF UNet and scheduler, any device and dtype. Randomness
follows the published code (github.com/dangeng/visual_anagrams) exactly: with
``generator = torch.manual_seed(seed)`` it draws the initial noise, (Stage II)
the augmentation noise of the upsampled image, then the scheduler's variance
noise every step, all on the CPU, and Stage II continues the generator Stage I
left off.

Candidates. Candidate k of a K-candidate run gets its own CPU generator seeded
``seed + k``, so it draws exactly the noise of the single run with seed
``seed + k``. Its image matches that run's up to the UNet's batch-size-dependent
rounding (CPU and GPU kernels sum in another order for another batch size): in
float32 up to 4e-4 after 8 steps on the tiny test models, within one 8-bit
level (fp16 / bf16 round more coarsely); in float64 exactly, or at float64's
own rounding level (about 1e-14) where the kernels still differ.

Continuing Stage I. ``sample_stage_1`` returns its generators, advanced past
its draws, for ``sample_stage_2``. When only the Stage I seed, steps and
schedule are known (a ComfyUI graph, a saved 64 px image),
:func:`stage_1_generators_after` rebuilds those generators by replaying Stage
I's draws, so the whole cascade reproduces the published code's seeds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from .anti_segregation import AntiSegregation, AntiSegregationStep, attention_size
from .balancing import ViewBalancing
from .errors import SamplingCancelled
from .inputs import RunChecks, check_seed, check_stage_1_unet, check_stage_2_inputs
from .multiview import MultiViewDenoiser, PromptEmbeddings
from .pictures import PictureGuide, picture_guide, steps_to_run
from .schedules import resolve_timesteps


@dataclass(frozen=True)
class StepInfo:
    """What the per-step callback sees. Tensors stay on the device: reading
    them (e.g. for a preview) is the callback's choice, and its cost."""

    step: int  # steps completed, 1..total
    total: int
    timestep: int
    sample: torch.Tensor  # x_{t-1}, (K, 3, H, W)
    predicted_clean: torch.Tensor  # the scheduler's x_0 estimate, (K, 3, H, W) in [-1, 1]


# Return True to stop the run (raises SamplingCancelled); raising also works.
StepCallback = Callable[[StepInfo], "bool | None"]


@dataclass
class SampleResult:
    images: torch.Tensor  # (K, 3, H, W) in model space, about [-1, 1], not clamped
    generators: list[torch.Generator]  # advanced past this stage: pass them on to Stage II


def candidate_generators(seed: int, num_candidates: int) -> list[torch.Generator]:
    """CPU generators for candidates ``seed, seed + 1, ...`` (``torch.manual_seed`` streams)."""
    return [torch.Generator(device="cpu").manual_seed(seed + k) for k in range(num_candidates)]


def stage_1_generators_after(
    seed: int,
    num_candidates: int,
    scheduler,
    *,
    sample_shape: tuple[int, int, int],
    num_inference_steps: int | None = 30,
    timesteps: Sequence[int] | str | None = None,
    model_output_channels: int | None = None,
    dtype: torch.dtype = torch.float32,
    strength: float = 1.0,
    reference: bool = False,
) -> list[torch.Generator]:
    """The generators ``sample_stage_1`` returns, rebuilt from its seed, schedule and sample shape alone.

    Replays Stage I's draws for candidates ``seed .. seed + num_candidates - 1``: the initial noise of
    ``sample_shape`` (C, H, W), then each ``scheduler.step``'s variance noise, by running the same calls
    on zeros (the draws never depend on the values; at 64 px this costs next to nothing). Drawing the
    same shapes through the same scheduler counts the draws exactly, whatever the schedule (a step
    at timestep 0 draws nothing) and however torch consumes its generator.

    ``scheduler``, ``num_inference_steps`` and ``timesteps`` are Stage I's. Any scheduler that places
    ``num_inference_steps`` timesteps as Stage I's does will do (same training steps and spacing); an
    explicit list or IF schedule name does not depend on the scheduler's configuration at all.
    ``model_output_channels`` is what Stage I's UNet predicts (default ``2 * C``: IF's noise and
    variance). ``dtype`` is Stage I's: fp16, bf16 and fp32 consume a CPU generator alike, float64 does not.
    ``strength`` and ``reference`` are Stage I's picture inputs (:mod:`.pictures`): a strength below 1 visits
    fewer steps, and a reference image draws its noise before every step.
    """
    check_seed(seed, num_candidates)
    scheduler = _fresh_copy(scheduler)
    resolve_timesteps(scheduler, num_inference_steps, timesteps)
    generators = candidate_generators(seed, num_candidates)
    channels, height, width = sample_shape
    sample = randn_tensor((num_candidates, channels, height, width), generator=generators, dtype=dtype)
    estimate = sample.new_zeros((num_candidates, model_output_channels or 2 * channels, height, width))
    timesteps = scheduler.timesteps
    for timestep in timesteps[len(timesteps) - steps_to_run(len(timesteps), strength) :]:
        if reference:
            randn_tensor(sample.shape, generator=generators, dtype=dtype)
        sample = scheduler.step(estimate, timestep, sample, generator=generators, return_dict=False)[0]
    return generators


def sample_stage_1(
    unet,
    scheduler,
    views: Sequence,
    embeddings: PromptEmbeddings,
    *,
    num_candidates: int = 1,
    seed: int = 0,
    generators: Sequence[torch.Generator] | None = None,
    num_inference_steps: int = 30,
    timesteps: Sequence[int] | str | None = None,
    guidance_scale: float = 10.0,
    reduction: str = "mean",
    view_weights: Sequence[float] | None = None,
    rectify: bool = False,
    balancing: ViewBalancing | None = None,
    anti_segregation: AntiSegregation | None = None,
    start_image: torch.Tensor | None = None,
    strength: float = 1.0,
    mask: torch.Tensor | None = None,
    reference_image: torch.Tensor | None = None,
    reference_view: int = 0,
    project_reference: bool = True,
    inpainting: str = "renoised",
    max_batch_size: int | None = None,
    share_unet_rows: bool = True,
    callback: StepCallback | None = None,
    device: torch.device | str | None = None,
) -> SampleResult:
    """Sample ``num_candidates`` Stage I illusions at the UNet's ``sample_size``.

    ``timesteps`` may be an explicit descending list or an IF schedule name
    (``"smart50"``, ``"fast27"``, ...), replacing ``num_inference_steps``.
    ``generators`` (one CPU generator per candidate) replace ``seed``.
    ``rectify`` (:mod:`.rectification`), ``balancing`` (:mod:`.balancing`: per-step view weights from a
    CLIP) and ``anti_segregation`` (:mod:`.anti_segregation`) are Anagram-MTL's improvements; off, the run
    is the published Visual Anagrams loop.

    ``start_image`` (with ``strength``), ``mask`` and ``reference_image`` (fixing ``views[reference_view]``'s
    component, ``project_reference`` once more after the last step; ``inpainting`` what the UNet sees
    outside the mask) make the illusion from a picture
    (:mod:`.pictures`): (1 or K, 3, S, S) in model space at the UNet's size, the mask (1 or K, 1, S, S)
    with 1 = repaint.

    ``share_unet_rows`` computes UNet rows that would be identical once (:class:`.multiview.BatchPlan`:
    factorized views' unconditional estimate, 2N·K rows per step become (N+1)·K); off only to compare.
    """
    with _autograd_off(gradients_inside=anti_segregation is not None):
        run = RunChecks(
            stage="Stage I",
            unet=unet,
            views=views,
            embeddings=embeddings,
            num_candidates=num_candidates,
            seed=seed,
            generators=generators,
            guidance_scale=guidance_scale,
            reduction=reduction,
            view_weights=view_weights,
            max_batch_size=max_batch_size,
            rectify=rectify,
            balancing=balancing,
        )
        check_stage_1_unet(unet)
        size = unet.config.sample_size
        run.check_views_at(size)
        if anti_segregation is not None:
            anti_segregation.check()
            run.check_anti_segregation(anti_segregation, attention_size(unet, anti_segregation))
        device, dtype = _execution_device(unet, device), unet.dtype
        guide = picture_guide(
            stage="Stage I",
            views=views,
            num_candidates=num_candidates,
            size=size,
            device=device,
            dtype=dtype,
            start_image=start_image,
            strength=strength,
            mask=mask,
            reference_image=reference_image,
            reference_view=reference_view,
            project_reference=project_reference,
            inpainting=inpainting,
        )
        scheduler = _fresh_copy(scheduler)
        resolve_timesteps(scheduler, num_inference_steps, timesteps)
        generators = _generators(seed, generators, num_candidates)

        noise = randn_tensor(
            (num_candidates, unet.config.in_channels, size, size), generator=generators, device=device, dtype=dtype
        )
        denoiser = MultiViewDenoiser(
            unet,
            views,
            embeddings,
            device=device,
            dtype=dtype,
            balancing=_bound_balancing(balancing, views, scheduler, guide, view_weights, device),
            share_rows=share_unet_rows,
            **run.denoiser_options(),
        )
        refine = None
        if anti_segregation is not None and anti_segregation.steps > 0:
            refine = AntiSegregationStep(
                anti_segregation,
                unet,
                scheduler,
                views,
                embeddings.positive,
                embeddings.concept_spans,
                max_batch_size=max_batch_size,
                device=device,
                dtype=dtype,
            )
        images = _denoise(scheduler, denoiser, noise, generators, callback, refine, guide)
        return SampleResult(images=images, generators=generators)


@torch.inference_mode()
def sample_stage_2(
    unet,
    scheduler,
    image_noising_scheduler,
    image: torch.Tensor,
    views: Sequence,
    embeddings: PromptEmbeddings,
    *,
    noise_level: int = 50,
    seed: int = 0,
    generators: Sequence[torch.Generator] | None = None,
    num_inference_steps: int = 30,
    timesteps: Sequence[int] | str | None = None,
    guidance_scale: float = 10.0,
    reduction: str = "mean",
    view_weights: Sequence[float] | None = None,
    rectify: bool = False,
    balancing: ViewBalancing | None = None,
    start_image: torch.Tensor | None = None,
    strength: float = 1.0,
    mask: torch.Tensor | None = None,
    reference_image: torch.Tensor | None = None,
    reference_view: int = 0,
    project_reference: bool = True,
    inpainting: str = "renoised",
    max_batch_size: int | None = None,
    share_unet_rows: bool = True,
    callback: StepCallback | None = None,
    device: torch.device | str | None = None,
) -> SampleResult:
    """Refine low-resolution illusions ``image`` (K, 3, h, w) in [-1, 1] to the UNet's size.

    Each image of the batch is one candidate. The UNet sees the noisy sample
    concatenated with the image upsampled bilinearly (``align_corners=True``)
    and noise-augmented at ``noise_level``, which it also gets as ``class_labels``.

    The picture inputs are Stage I's, at this stage's size: ``start_image`` is the high-resolution
    picture the run starts from (diffusers' ``original_image``), while ``image`` stays the condition.
    ``share_unet_rows`` is Stage I's.
    """
    # The image first: its batch is the candidates, so an empty one is an image problem.
    check_stage_2_inputs(unet, image_noising_scheduler, image, noise_level)
    num_candidates = image.shape[0]
    run = RunChecks(
        stage="Stage II",
        unet=unet,
        views=views,
        embeddings=embeddings,
        num_candidates=num_candidates,
        seed=seed,
        generators=generators,
        guidance_scale=guidance_scale,
        reduction=reduction,
        view_weights=view_weights,
        max_batch_size=max_batch_size,
        rectify=rectify,
        balancing=balancing,
    )
    size = unet.config.sample_size
    run.check_views_at(image.shape[-1])
    run.check_views_at(size)
    device, dtype = _execution_device(unet, device), unet.dtype
    guide = picture_guide(
        stage="Stage II",
        views=views,
        num_candidates=num_candidates,
        size=size,
        device=device,
        dtype=dtype,
        start_image=start_image,
        strength=strength,
        mask=mask,
        reference_image=reference_image,
        reference_view=reference_view,
        project_reference=project_reference,
        inpainting=inpainting,
    )
    scheduler = _fresh_copy(scheduler)
    resolve_timesteps(scheduler, num_inference_steps, timesteps)
    generators = _generators(seed, generators, num_candidates)

    noisy_channels = unet.config.in_channels // 2
    noise = randn_tensor((num_candidates, noisy_channels, size, size), generator=generators, device=device, dtype=dtype)

    upscaled = F.interpolate(image.to(device=device, dtype=dtype), (size, size), mode="bilinear", align_corners=True)
    noise_levels = torch.full((num_candidates,), int(noise_level), device=device, dtype=torch.long)
    augmentation = randn_tensor(upscaled.shape, generator=generators, device=device, dtype=dtype)
    upscaled = image_noising_scheduler.add_noise(upscaled, augmentation, timesteps=noise_levels)

    denoiser = MultiViewDenoiser(
        unet,
        views,
        embeddings,
        device=device,
        dtype=dtype,
        condition=upscaled,
        class_labels=noise_levels,
        share_rows=share_unet_rows,
        balancing=_bound_balancing(balancing, views, scheduler, guide, view_weights, device),
        **run.denoiser_options(),
    )
    images = _denoise(scheduler, denoiser, noise, generators, callback, guide=guide)
    return SampleResult(images=images, generators=generators)


def _denoise(
    scheduler,
    denoiser: MultiViewDenoiser,
    noise: torch.Tensor,
    generators,
    callback,
    refine: AntiSegregationStep | None = None,
    guide: PictureGuide | None = None,
) -> torch.Tensor:
    """The loop from the start noise: x_T, then one multi-view step per visited timestep."""
    if guide is None:
        timesteps = scheduler.timesteps
        sample = noise * scheduler.init_noise_sigma
    else:
        timesteps = guide.visited(scheduler.timesteps)
        sample = guide.initial_sample(noise, scheduler, timesteps)
    total = len(timesteps)
    for index, timestep in enumerate(timesteps):
        if guide is not None:
            sample = guide.before_step(sample, timestep, scheduler, generators)
        estimate = denoiser(scheduler.scale_model_input(sample, timestep), timestep, index)
        sample, predicted_clean = scheduler.step(estimate, timestep, sample, generator=generators, return_dict=False)
        if refine is not None and refine.settings.applies_after(index, total):
            # Anagram-MTL refines x_{t-1} against the next timestep, before the next step sees it.
            sample = refine(sample, timesteps[index + 1])
        if guide is not None:
            # Last, so that nothing after it moves the kept pixels.
            sample = guide.keep_outside_mask(sample)
        if callback is not None:
            if guide is not None:
                # Only the preview reads the clean estimate: blend it only then.
                predicted_clean = guide.keep_outside_mask(predicted_clean)
            info = StepInfo(index + 1, total, int(timestep), sample, predicted_clean)
            if callback(info):
                raise SamplingCancelled(index + 1, total)
    return sample if guide is None else guide.finish(sample)


def _autograd_off(*, gradients_inside: bool) -> contextlib.AbstractContextManager:
    """Inference mode for a plain run. Anti-segregation takes gradients inside the run, and autograd
    refuses tensors made in inference mode, so such a run leaves it (a caller's too: ComfyUI runs
    nodes inside it) and turns gradients off with ``no_grad`` instead."""
    if not gradients_inside:
        return torch.inference_mode()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode(False))
    stack.enter_context(torch.no_grad())
    return stack


def _bound_balancing(balancing: ViewBalancing | None, views, scheduler, guide, view_weights, device):
    """MTL's balancing bound to this run: its step count is the whole schedule's (MTL's ``step / 30``), and a
    run from a picture starts part-way along it."""
    if balancing is None:
        return None
    total = len(scheduler.timesteps)
    visited = total if guide is None else len(guide.visited(scheduler.timesteps))
    base = None if view_weights is None else torch.tensor([float(w) for w in view_weights], device=device)
    return balancing.bind(views, scheduler, total_steps=total, first_step=total - visited, base_weights=base)


def _generators(seed: int, generators, num_candidates: int) -> list[torch.Generator]:
    return list(generators) if generators is not None else candidate_generators(seed, num_candidates)


def _fresh_copy(scheduler):
    """A private scheduler, so a run never changes the caller's (shared) one."""
    return type(scheduler).from_config(scheduler.config)


def _execution_device(unet, device) -> torch.device:
    # With CPU offload hooks the weights sit on the CPU between calls, so the
    # caller (the node) names the device the UNet actually runs on.
    return torch.device(device) if device is not None else unet.device
