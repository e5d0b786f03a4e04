"""Illusions from a picture: a start image (image-to-image), an inpainting mask, a fixed reference component.

Each plugs into one point of the multi-view loop (``stages._denoise``); the views act as usual.
Pictures are in model space [-1, 1] at the stage's own size, in the picture's frame (not a view's),
one for every candidate or one shared by all.

* **Start image + strength** (SDEdit), as diffusers' ``IFImg2ImgPipeline``: of the N timesteps only
  the last ``int(N * strength)`` run (named IF schedules included), and the start image, noised to
  the first of them with each candidate's own start noise (``scheduler.add_noise``), replaces pure
  noise. Two ends differ from diffusers on purpose: strength 1 starts from pure noise, as
  Stable Diffusion's inpainting pipeline does at strength 1, so it *is* the text-to-image run (IF's
  img2img pipeline still leaks sqrt(alpha_bar) of the picture there: 0.065 of it at 30 steps);
  strength 0 returns the start image without a UNet call (diffusers returns an empty batch).
* **Mask** (1 = repaint, ComfyUI's and diffusers' convention; binarised at 0.5 as diffusers does).
  Outside the mask the sample is set back to the clean picture after every scheduler step, so the
  result there *is* the picture, bit for bit. What the UNet sees there is ``inpainting``'s choice:
  ``"renoised"`` (default; Stable Diffusion's inpainting pipeline and ComfyUI's own samplers do
  this) shows it the picture noised to the current timestep with the candidate's start noise, so
  every pixel it sees is at the step's noise level, as in training; ``"clean"`` is
  ``IFInpaintingPipeline``'s blending, which shows the clean picture next to the noisy inside.
  Measured on the digits model (README): clean surroundings make the repainted region a blot,
  re-noised ones a digit. Neither draws extra noise (candidate k still matches the run with
  seed + k) nor costs an extra UNet call (RePaint's resampling jumps would multiply them).
* **Reference** (inverse problems with factorized views, the published code's ``--ref_im_path``):
  before every UNet call, including the last, the fixed view's component of x_t is replaced by the
  reference's, noised to the current timestep with a fresh draw from each candidate's generator (the
  published loop's ``randn_like``, on the CPU the same stream). The published loop stops there: its
  last step returns the scheduler's thresholded x_0 estimate, whose fixed component is off the
  reference's by up to about 0.1. ``project_reference`` (default on) replaces it once more, without
  noise, after the last step: for grey levels / colour (an exact split) the output's grey levels then
  *are* the reference's; a Gaussian low-pass is not idempotent (blurring twice is not blurring once),
  so the hybrid's far-away reading stays close to the reference's, not equal to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from ..views.factorized import SplitView
from .errors import SamplingInputError

#: diffusers' mask threshold: a mask value >= this repaints.
MASK_THRESHOLD = 0.5
#: What the UNet sees outside the mask: the picture noised to the step, or the clean picture (IF's pipeline).
INPAINTING_MODES = ("renoised", "clean")


def steps_to_run(num_steps: int, strength: float) -> int:
    """How many of a schedule's ``num_steps`` timesteps a run with ``strength`` visits (the last ones).

    diffusers' ``get_timesteps``, truncation included (``int(100 * 0.29) == 28``), so a strength gives
    the same timesteps here as in IF's image-to-image pipelines.
    """
    return min(int(num_steps * strength), num_steps)


class PictureGuide:
    """A picture's part in one run: where it starts, what it keeps, what it fixes.

    Made by :func:`picture_guide` after the checks; the plain text-to-image run has none.
    """

    def __init__(
        self,
        *,
        start: Tensor | None,
        strength: float,
        mask: Tensor | None,
        reference: Tensor | None,
        fixed_view: SplitView | None,
        project_reference: bool,
        inpainting: str = INPAINTING_MODES[0],
    ):
        self.start = start
        self.strength = strength
        self.mask = mask
        self.reference = reference
        self.fixed_view = fixed_view
        self.project_reference = project_reference
        self.renoise_kept_region = mask is not None and inpainting == "renoised"
        self._start_noise: Tensor | None = None

    def visited(self, timesteps: Tensor) -> Tensor:
        """The timesteps this run visits: the last ``int(N * strength)`` (all of them without a start image)."""
        return timesteps[len(timesteps) - steps_to_run(len(timesteps), self.strength) :]

    def initial_sample(self, noise: Tensor, scheduler, visited: Tensor) -> Tensor:
        """x_T from the start noise: pure noise at strength 1, the noised start image below, the start
        image itself when no step runs; the kept region is the clean start image."""
        self._start_noise = noise
        if self.start is None or len(visited) == len(scheduler.timesteps):
            sample = noise * scheduler.init_noise_sigma
        elif len(visited) == 0:
            return self.start.expand_as(noise).clone()
        else:
            first = visited[:1].repeat(noise.shape[0]).to(noise.device)
            sample = scheduler.add_noise(self.start.expand_as(noise), noise, first)
        return self.keep_outside_mask(sample)

    def fix_reference(self, sample: Tensor, timestep: Tensor, scheduler, generators) -> Tensor:
        """x_t with the fixed component replaced by the reference's, noised to ``timestep``."""
        if self.reference is None:
            return sample
        alpha_bar = scheduler.alphas_cumprod[int(timestep)].to(sample.device)
        noise = randn_tensor(sample.shape, generator=generators, device=sample.device, dtype=sample.dtype)
        noisy_reference = alpha_bar.sqrt() * self.reference + (1 - alpha_bar).sqrt() * noise
        return self._with_reference_component(sample, noisy_reference)

    def before_step(self, sample: Tensor, timestep: Tensor, scheduler, generators) -> Tensor:
        """x_t as the views see it: the reference's noised component fixed, the kept region renoised."""
        sample = self.fix_reference(sample, timestep, scheduler, generators)
        if self.renoise_kept_region:
            # The start noise again, as Stable Diffusion's inpainting pipeline does: no extra draw.
            steps = torch.full((sample.shape[0],), int(timestep), device=sample.device)
            noised = scheduler.add_noise(self.start.expand_as(sample), self._start_noise, steps)
            sample = torch.where(self.mask, sample, noised)
        return sample

    def keep_outside_mask(self, sample: Tensor) -> Tensor:
        """The clean start image wherever the mask keeps the picture."""
        if self.mask is None:
            return sample
        return torch.where(self.mask, sample, self.start)

    def finish(self, sample: Tensor) -> Tensor:
        if self.reference is not None and self.project_reference:
            sample = self._with_reference_component(sample, self.reference)
        return sample

    def _with_reference_component(self, sample: Tensor, reference: Tensor) -> Tensor:
        # For a split into parts that sum to x, x - C(x) is the rest: the published loop's
        # views[1].inverse_view(x) for two parts, and every other part for three.
        component = self.fixed_view.component
        return component(reference.expand_as(sample)) + (sample - component(sample))


def picture_guide(
    *,
    stage: str,
    views: Sequence,
    num_candidates: int,
    size: int,
    device: torch.device,
    dtype: torch.dtype,
    start_image: Tensor | None = None,
    strength: float = 1.0,
    mask: Tensor | None = None,
    reference_image: Tensor | None = None,
    reference_view: int = 0,
    project_reference: bool = True,
    inpainting: str = INPAINTING_MODES[0],
) -> PictureGuide | None:
    """Check a run's pictures and place them on the device, or None for a plain text-to-image run."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
        raise SamplingInputError("strength", f"must be a number in [0, 1], got {strength!r}")
    if not 0 <= strength <= 1:
        raise SamplingInputError("strength", f"must be in [0, 1], got {strength}")
    if start_image is None:
        if strength != 1:
            raise SamplingInputError(
                "strength",
                f"strength {strength} keeps part of a start image, and none is given: give a start image, "
                "or set strength 1 (text to image)",
            )
        if mask is not None:
            raise SamplingInputError(
                "mask", "a mask says which part of the start image to repaint: give the start image too"
            )
    if inpainting not in INPAINTING_MODES:
        raise SamplingInputError(
            "inpainting", f"unknown mode {inpainting!r}; choose one of {', '.join(map(repr, INPAINTING_MODES))}"
        )
    if start_image is None and reference_image is None:
        return None

    def place(name: str, picture: Tensor, channels: int) -> Tensor:
        picture = _checked_picture(stage, name, picture, channels, num_candidates, size)
        return picture.to(device=device, dtype=dtype)

    start = None if start_image is None else place("start image", start_image, 3)
    keep = None
    if mask is not None:
        if mask.ndim == 2:
            mask = mask[None, None]
        elif mask.ndim == 3:
            mask = mask[:, None]
        keep = place("mask", mask, 1) >= MASK_THRESHOLD
    reference = fixed_view = None
    if reference_image is not None:
        reference = place("reference image", reference_image, 3)
        fixed_view = _fixed_view(views, reference_view)
    return PictureGuide(
        start=start,
        strength=float(strength),
        mask=keep,
        reference=reference,
        fixed_view=fixed_view,
        project_reference=bool(project_reference),
        inpainting=inpainting,
    )


def _checked_picture(stage: str, name: str, picture, channels: int, num_candidates: int, size: int) -> Tensor:
    if not isinstance(picture, Tensor) or picture.ndim != 4:
        shape = tuple(picture.shape) if isinstance(picture, Tensor) else type(picture).__name__
        raise SamplingInputError(name, f"expected a tensor shaped (batch, {channels}, {size}, {size}), got {shape}")
    count, picture_channels, height, width = picture.shape
    if picture_channels != channels:
        raise SamplingInputError(name, f"has {picture_channels} channels, {stage} needs {channels}")
    if (height, width) != (size, size):
        raise SamplingInputError(
            name, f"is {width}x{height} px, {stage} works at {size}x{size} px: resize it to the stage's size"
        )
    if count not in (1, num_candidates):
        raise SamplingInputError(
            name, f"holds {count} pictures for {num_candidates} candidates: give one for all, or one per candidate"
        )
    if not torch.is_floating_point(picture) or not bool(torch.isfinite(picture).all()):
        raise SamplingInputError(name, "must hold finite floating-point values (model space, about [-1, 1])")
    return picture


def _fixed_view(views: Sequence, reference_view: int) -> SplitView:
    if isinstance(reference_view, bool) or not isinstance(reference_view, int):
        raise SamplingInputError("reference view", f"must be a view index, got {reference_view!r}")
    if not 0 <= reference_view < len(views):
        raise SamplingInputError(
            "reference view", f"view {reference_view + 1} does not exist: this run has {len(views)} views"
        )
    view = views[reference_view]
    if not isinstance(view, SplitView):
        raise SamplingInputError(
            "reference view",
            f"view {reference_view + 1} ({view.name}) is not part of a split of the image into components "
            "(low/high pass, triple bands, grayscale/color, motion blur and its residual): a reference fixes one "
            "such component. Pick the view whose component the reference should fix",
        )
    return view
