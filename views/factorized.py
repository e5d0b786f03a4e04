"""Factorized views (Factorized Diffusion, same authors): the image as a sum of components.

The model sees the image unchanged; each prompt's noise estimate is reduced to
that prompt's component (low frequencies, grey levels, ...) and the estimates
are summed (reduction "sum"), so each component follows its own prompt. Only
the noise channels are filtered; IF's variance channels pass through.

``preview`` shows a view's component of the image. Components such as high
frequencies or colour are residuals near model-space 0, so they display as a
mid-grey picture carrying only that component; they are shown as they are,
not rescaled, so previews of complementary views add up to the image.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Hashable
from typing import ClassVar

from torch import Tensor

from .base import UNCHANGED, ParamSpec, View, map_noise_channels, working_precision
from .filters import diagonal_blur, gaussian_blur, scaled_kernel_size, scaled_sigma
from .frames import crossfade_frame, gain_frame, shake_frame, shrink_frame

#: How much hybrid-image frames shrink by t = 1 (the paper's animation), as if seen from afar.
HYBRID_RESIZE_FACTOR = 12


class FactorizedView(View):
    """A view whose inverse keeps one component of the noise estimate; the model sees x itself."""

    kind = "factorized"
    reduction = "sum"

    @abstractmethod
    def component(self, x: Tensor) -> Tensor:
        """This view's component of a (B, C, S, S) image or noise estimate."""

    def view(self, x: Tensor) -> Tensor:
        self.checked_size(x)
        return x

    def inverse(self, eps: Tensor) -> Tensor:
        self.checked_size(eps)
        return map_noise_channels(eps, self.component)

    def unet_input_key(self) -> Hashable:
        return UNCHANGED

    def preview(self, image: Tensor) -> Tensor:
        self.checked_size(image)
        return self.component(image)


class SplitView(FactorizedView):
    """One part of a split of the image into parts that sum back to it."""

    part: ClassVar[int]

    @abstractmethod
    def split(self, x: Tensor) -> tuple[Tensor, ...]:
        """The parts of ``x`` (computed in float32 for half-precision inputs); they sum to ``x``."""

    def component(self, x: Tensor) -> Tensor:
        return self.split(working_precision(x))[self.part].to(x.dtype)


def sigma_param(name: str, default: float, description: str) -> ParamSpec:
    return ParamSpec(name, float, default, 0.0, 32.0, min_exclusive=True, description=description)


def kernel_size_param(default: int) -> ParamSpec:
    return ParamSpec(
        "kernel_size", int, default, 3, 129, description="Blur kernel size at 64 px (scaled with the image, kept odd)."
    )


class FrequencySplitView(SplitView):
    """Frequency bands: the animation steps back from the image until only low frequencies read."""

    def render_frame(self, image: Tensor, t: float) -> Tensor:
        return shrink_frame(image, t, HYBRID_RESIZE_FACTOR)


class GaussianSplitView(FrequencySplitView):
    """Hybrid images: low frequencies (Gaussian blur) and the high frequencies left over."""

    PARAMS = (
        sigma_param("sigma", 2.0, "Gaussian blur sigma at 64 px (scaled with the image)."),
        kernel_size_param(33),
    )

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        size = x.shape[-1]
        low = gaussian_blur(
            x, scaled_kernel_size(self._params["kernel_size"], size), scaled_sigma(self._params["sigma"], size)
        )
        return low, x - low


class LowPassView(GaussianSplitView):
    name = "low_pass"
    label = "Low frequencies"
    description = "The blurred image: what you see from far away."
    part = 0


class HighPassView(GaussianSplitView):
    name = "high_pass"
    label = "High frequencies"
    description = "The fine detail: what you see up close."
    part = 1
    seen_at_rest = True


class TripleBandView(FrequencySplitView):
    """Three-way hybrid: high, medium and low frequency bands from two Gaussian blurs."""

    PARAMS = (
        sigma_param("sigma_1", 1.0, "Sigma separating high from medium frequencies, at 64 px."),
        sigma_param("sigma_2", 2.0, "Sigma separating medium from low frequencies, at 64 px."),
        kernel_size_param(25),
    )

    def split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        size = x.shape[-1]
        kernel_size = scaled_kernel_size(self._params["kernel_size"], size)
        below_high = gaussian_blur(x, kernel_size, scaled_sigma(self._params["sigma_1"], size))
        low = gaussian_blur(below_high, kernel_size, scaled_sigma(self._params["sigma_2"], size))
        return low, below_high - low, x - below_high


class TripleLowPassView(TripleBandView):
    name = "triple_low_pass"
    label = "Triple hybrid: low band"
    description = "The coarsest of three frequency bands: seen from far away."
    part = 0


class TripleMediumPassView(TripleBandView):
    name = "triple_medium_pass"
    label = "Triple hybrid: medium band"
    description = "The middle of three frequency bands: seen from a middle distance."
    part = 1


class TripleHighPassView(TripleBandView):
    name = "triple_high_pass"
    label = "Triple hybrid: high band"
    description = "The finest of three frequency bands: seen up close."
    part = 2
    seen_at_rest = True


class ColourSplitView(SplitView):
    """Grey levels (the channel mean, on every channel) and the colour left over."""

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        grey = x.mean(dim=1, keepdim=True).expand_as(x)
        return grey, x - grey

    def render_frame(self, image: Tensor, t: float) -> Tensor:
        """Colour drains away: the full image at t = 0, its grey levels at t = 1."""
        grey, _ = self.split(working_precision(image))
        return crossfade_frame(image, grey.to(image.dtype), t)


class GrayscaleView(ColourSplitView):
    name = "grayscale"
    label = "Grayscale"
    description = "The image without colour."
    part = 0


class ColorView(ColourSplitView):
    name = "color"
    label = "Colour"
    description = "The colour the grey levels lack."
    part = 1
    seen_at_rest = True


class MotionSplitView(SplitView):
    """Motion blur along the diagonal, and the sharp residual it leaves."""

    PARAMS = (
        ParamSpec(
            "kernel", int, 7, 3, 65, description="Length of the blur line at 64 px (scaled with the image, kept odd)."
        ),
    )

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        blurred = diagonal_blur(x, scaled_kernel_size(self._params["kernel"], x.shape[-1]))
        return blurred, x - blurred

    def render_frame(self, image: Tensor, t: float) -> Tensor:
        return shake_frame(image, t)


class MotionBlurView(MotionSplitView):
    name = "motion_blur"
    label = "Motion blur"
    description = "The image smeared along the diagonal, as when it moves fast."
    part = 0


class MotionBlurResidualView(MotionSplitView):
    name = "motion_blur_res"
    label = "Motion blur residual"
    description = "What motion blur removes: the image seen when it holds still."
    part = 1
    seen_at_rest = True


class ScaleView(FactorizedView):
    """The noise estimate scaled by a constant factor (the paper's scaling view)."""

    name = "scale"
    label = "Scale"
    description = "The image's intensities scaled by a constant about mid-grey."
    PARAMS = (
        ParamSpec("factor", float, 0.5, 0.0, 4.0, min_exclusive=True, description="Multiplier of the noise estimate."),
    )

    def component(self, x: Tensor) -> Tensor:
        return x * self._params["factor"]

    def render_frame(self, image: Tensor, t: float) -> Tensor:
        return gain_frame(image, self._params["factor"], t)
