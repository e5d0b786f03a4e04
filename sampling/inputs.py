"""Input checks, run before the first denoising step.

Every problem raises :class:`SamplingInputError` naming the input at fault, so
a long run never fails halfway through for a reason known at the start.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..views import View, ViewError
from .errors import SamplingInputError
from .multiview import REDUCTIONS, PromptEmbeddings

MAX_VIEWS = 8
MAX_SEED = 2**64 - 1


@dataclass
class RunChecks:
    """The checks both stages share; constructing it runs them."""

    stage: str
    unet: object
    views: Sequence
    embeddings: PromptEmbeddings
    num_candidates: int
    seed: int
    generators: Sequence[torch.Generator] | None
    guidance_scale: float
    reduction: str
    view_weights: Sequence[float] | None
    max_batch_size: int | None
    rectify: bool = False
    balancing: object | None = None  # a balancing.ViewBalancing

    def __post_init__(self):
        self._check_views()
        self._check_embeddings()
        self._check_candidates()
        self._check_guidance()
        if self.rectify and self.reduction != "mean":
            raise SamplingInputError(
                "rectify",
                f"rectification rescales the mean of the views' estimates (anagrams); reduction {self.reduction!r} "
                "does not average them (factorized views' 'sum' is unit-variance by construction). Use reduction "
                "'mean' or turn rectify off",
            )
        if self.balancing is not None:
            self.balancing.check(len(self.views), self.reduction)

    def check_anti_segregation(self, settings, size: int) -> None:
        """Anti-segregation's inputs beyond its settings (``settings.check()``): concept words, and
        views that move pixels, which must apply at the attention maps' ``size``."""
        if len(self.views) < 2:
            raise SamplingInputError(
                "anti-segregation", "it keeps several views' subjects together: give 2 or more views"
            )
        for index, view in enumerate(self.views):
            if view.kind != "permutation":
                raise SamplingInputError(
                    "anti-segregation",
                    f"view {index + 1} ({view.name}) changes colours or frequencies, not positions, so its attention "
                    "maps cannot be moved back to the picture's frame. Use it with permutation views (flips, "
                    "rotations, jigsaw, ...) or turn anti-segregation off",
                )
        spans = self.embeddings.concept_spans
        if spans is None:
            raise SamplingInputError(
                "prompt embeddings",
                "anti-segregation needs each prompt's concept-word tokens: encode the prompts with encode_prompts "
                "(or set PromptEmbeddings.concept_spans)",
            )
        if len(spans) != len(self.views):
            raise SamplingInputError("prompt embeddings", f"{len(spans)} concept spans for {len(self.views)} views")
        for index, span in enumerate(spans):
            if span is None:
                raise SamplingInputError(
                    "concept words",
                    f"prompt {index + 1}'s last word lies past IF's first 77 tokens: shorten the prompt or name "
                    "its concept word",
                )
            start, end = span
            if not 0 <= start < end <= self.embeddings.positive.shape[1]:
                raise SamplingInputError(
                    "concept words", f"prompt {index + 1}'s concept tokens [{start}, {end}) lie outside its tokens"
                )
        self.check_views_at(size)

    def check_views_at(self, size: int) -> None:
        for index, view in enumerate(self.views):
            try:
                view.check_size(size)
            except ViewError as error:
                raise SamplingInputError(
                    "views", f"view {index + 1} ({view.name}) cannot apply at {size} px in {self.stage}: {error}"
                ) from error

    def denoiser_options(self) -> dict:
        return dict(
            num_candidates=self.num_candidates,
            guidance_scale=float(self.guidance_scale),
            reduction=self.reduction,
            view_weights=self.view_weights,
            max_batch_size=self.max_batch_size,
            rectify=self.rectify,
        )

    def _check_views(self) -> None:
        count = len(self.views)
        if not 1 <= count <= MAX_VIEWS:
            raise SamplingInputError("views", f"need 1 to {MAX_VIEWS} views, got {count}")
        for index, view in enumerate(self.views):
            if not isinstance(view, View):
                raise SamplingInputError("views", f"view {index + 1} is a {type(view).__name__}, not a View")

    def _check_embeddings(self) -> None:
        positive, negative = self.embeddings.positive, self.embeddings.negative
        if positive.ndim != 3:
            raise SamplingInputError(
                "prompt embeddings", f"expected (prompts, tokens, dim), got shape {tuple(positive.shape)}"
            )
        if positive.shape[0] != len(self.views):
            raise SamplingInputError(
                "prompt embeddings",
                f"{positive.shape[0]} prompts for {len(self.views)} views: give exactly one prompt per view, "
                "in view order",
            )
        if (
            negative.ndim != 3
            or negative.shape[0] not in (1, positive.shape[0])
            or negative.shape[1:] != positive.shape[1:]
        ):
            raise SamplingInputError(
                "negative embeddings",
                f"shape {tuple(negative.shape)} does not match the prompts' {tuple(positive.shape)} "
                "(one negative per view, or one shared by all)",
            )
        expected_dim = _text_embedding_dim(self.unet)
        if expected_dim is not None and positive.shape[2] != expected_dim:
            raise SamplingInputError(
                "prompt embeddings",
                f"embedding size {positive.shape[2]} does not fit this UNet, which takes {expected_dim}: "
                "encode the prompts with the text encoder that belongs to this model (T5-XXL for DeepFloyd IF)",
            )

    def _check_candidates(self) -> None:
        if self.num_candidates < 1:
            raise SamplingInputError("candidates", f"need at least 1 candidate, got {self.num_candidates}")
        if self.generators is not None:
            if len(self.generators) != self.num_candidates:
                raise SamplingInputError(
                    "generators", f"{len(self.generators)} generators for {self.num_candidates} candidates"
                )
            if any(g.device.type != "cpu" for g in self.generators):
                raise SamplingInputError(
                    "generators", "generators must be CPU generators (seeds are device-independent)"
                )
        else:
            check_seed(self.seed, self.num_candidates)
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise SamplingInputError("max batch size", f"must be at least 1, got {self.max_batch_size}")

    def _check_guidance(self) -> None:
        if not math.isfinite(self.guidance_scale):
            raise SamplingInputError("guidance scale", f"must be a finite number, got {self.guidance_scale}")
        if self.reduction not in REDUCTIONS:
            raise SamplingInputError(
                "reduction", f"unknown reduction {self.reduction!r}; choose one of {', '.join(REDUCTIONS)}"
            )
        if self.view_weights is None:
            return
        weights = list(self.view_weights)
        if self.reduction == "alternate":
            raise SamplingInputError("view weights", "weights apply to the mean and sum reductions, not alternate")
        if len(weights) != len(self.views):
            raise SamplingInputError("view weights", f"{len(weights)} weights for {len(self.views)} views")
        if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
            raise SamplingInputError("view weights", f"weights must be non-negative with a positive sum, got {weights}")


def check_stage_1_unet(unet) -> None:
    config = unet.config
    if config.in_channels != 3 or getattr(config, "class_embed_type", None) is not None:
        raise SamplingInputError(
            "model",
            f"this UNet takes {config.in_channels} input channels and a noise-level label: it is a Stage II "
            "(super-resolution) model. Load a Stage I model (IF-I-M, IF-I-L or IF-I-XL) for Stage I",
        )
    _check_square_sample_size(unet)


def check_seed(seed: int, num_candidates: int) -> None:
    """Candidates use seeds ``seed .. seed + num_candidates - 1``: all must be valid torch seeds."""
    if not 0 <= int(seed) <= MAX_SEED - (num_candidates - 1):
        raise SamplingInputError("seed", f"seed must be in [0, {MAX_SEED - (num_candidates - 1)}], got {seed}")


def check_low_res_image(image: torch.Tensor) -> None:
    """Stage II's input picture (K, 3, h, w) in model space: some images, three channels, finite pixels.

    Checked before anything else touches the batch: an empty batch would otherwise read as "0 candidates",
    and a NaN or infinite pixel would be refined into noise without a word (a clamp keeps NaN, and turns
    infinities into plausible-looking saturated pixels).
    """
    if image.ndim != 4:
        raise SamplingInputError(
            "image", f"expected a batch of images (K, 3, h, w), got shape {tuple(image.shape)}. Connect an IMAGE"
        )
    if image.shape[0] == 0:
        raise SamplingInputError(
            "image", "the batch holds no images. Connect a batch of at least one image, such as Stage I's output"
        )
    channels = image.shape[1]
    if channels != 3:
        raise SamplingInputError(
            "image",
            f"the images have {channels} colour channel{'s' if channels != 1 else ''}, Stage II refines RGB "
            "images (3 channels). Convert them to RGB first (drop an alpha channel; repeat a grey one)",
        )
    finite = torch.isfinite(image)
    if not bool(finite.all()):
        bad_images = [index + 1 for index, ok in enumerate(finite.flatten(1).all(1).tolist()) if not ok]
        raise SamplingInputError(
            "image",
            f"{int((~finite).sum())} pixel values are NaN or infinite (image{'s' if len(bad_images) > 1 else ''} "
            f"{', '.join(map(str, bad_images))} of {image.shape[0]}). Fix the node that made the image, or replace "
            "those pixels before Stage II: it cannot refine them",
        )


def check_stage_2_inputs(unet, image_noising_scheduler, image: torch.Tensor, noise_level: int) -> None:
    config = unet.config
    if config.in_channels != 6:
        raise SamplingInputError(
            "model",
            f"this UNet takes {config.in_channels} input channels: it is a Stage I model. Load a Stage II "
            "model (IF-II-M or IF-II-L) for Stage II",
        )
    size = _check_square_sample_size(unet)
    check_low_res_image(image)
    if image.shape[2] != image.shape[3]:
        raise SamplingInputError(
            "image", f"expected a batch of square RGB images (K, 3, h, h), got shape {tuple(image.shape)}"
        )
    if image.shape[-1] >= size:
        raise SamplingInputError(
            "image",
            f"the image is {image.shape[-1]} px but this Stage II model makes {size} px images from smaller "
            "ones: give it the Stage I output (64 px for DeepFloyd IF)",
        )
    train_steps = image_noising_scheduler.config.num_train_timesteps
    if not 0 <= int(noise_level) < train_steps:
        raise SamplingInputError("noise level", f"must be in [0, {train_steps - 1}], got {noise_level}")


def _check_square_sample_size(unet) -> int:
    size = unet.config.sample_size
    if not isinstance(size, int):
        raise SamplingInputError("model", f"the UNet's sample_size {size!r} is not square; IF models are square")
    return size


def _text_embedding_dim(unet) -> int | None:
    # IF's UNets project T5 states with encoder_hid_dim; others take cross_attention_dim directly.
    config = unet.config
    return getattr(config, "encoder_hid_dim", None) or getattr(config, "cross_attention_dim", None)
