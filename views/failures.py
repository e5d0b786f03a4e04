"""The paper's documented failures: transforms that break the noise statistics diffusion needs.

A diffusion model expects its input noise to be i.i.d. Gaussian with the
schedule's variance. Views that resample pixels (rotating by angles that are
not quarter turns, blurring) mix neighbouring values, so the noise the model
sees is correlated and of lower variance; rescaling values changes the
variance outright. The model then misjudges the noise and the illusion fails.
They are kept so people can see why, and are flagged ``is_failure``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from .anagrams import INNER_CIRCLE_RADIUS
from .base import ParamSpec, View, ViewError, map_noise_channels, working_precision
from .frames import centred, gain_frame, shrink_frame
from .geometry import disc_mask, rotate_inside


class FailureView(View):
    kind = "failure"
    is_failure = True


@functools.lru_cache(maxsize=16)
def inner_disc(size: int, device: torch.device) -> Tensor:
    """The paper's inner-circle disc at full resolution, cached on each device."""
    return disc_mask(size, INNER_CIRCLE_RADIUS).to(device)


def rotate_disc(x: Tensor, degrees: float, mode: str) -> Tensor:
    """The centred disc of the paper's inner circle rotated counter-clockwise by ``degrees``."""
    return rotate_inside(x, inner_disc(x.shape[-1], x.device), degrees, mode)


class InnerCircleFailureView(FailureView):
    """The inner disc rotated by an arbitrary angle, with interpolation."""

    name = "inner_circle_failure"
    label = "Inner circle, any angle (fails)"
    description = "The inner disc turned by an angle that is not a quarter turn: a documented failure."
    failure_note = (
        "Turning by an angle that is not a multiple of 90° resamples pixels: bilinear sampling averages "
        "neighbours (correlated, lower-variance noise) and nearest sampling repeats some pixels and drops "
        "others. Either way the rotated noise is no longer i.i.d. Gaussian and the model misreads it."
    )
    PARAMS = (
        ParamSpec(
            "angle", float, 135.0, -360.0, 360.0, description="Rotation of the disc in degrees, counter-clockwise."
        ),
        ParamSpec(
            "interpolation",
            str,
            "bilinear",
            choices=("bilinear", "nearest"),
            description="How rotated pixels are sampled.",
        ),
    )

    def view(self, x: Tensor) -> Tensor:
        self.checked_size(x)
        return rotate_disc(x, self._params["angle"], self._params["interpolation"])

    def inverse(self, eps: Tensor) -> Tensor:
        self.checked_size(eps)
        return rotate_disc(eps, -self._params["angle"], self._params["interpolation"])

    def render_frame(self, image: Tensor, t: float) -> Tensor:
        return centred(rotate_disc(image, self._params["angle"] * t, self._params["interpolation"]))


class BlurFailureView(FailureView):
    """Blur by downsampling then upsampling; the inverse passes the estimate through (as the paper)."""

    name = "blur_failure"
    label = "Blur (fails)"
    description = "The image blurred by shrinking and enlarging it: a documented failure."
    failure_note = (
        "Shrinking and enlarging averages neighbouring pixels, so the noise the model sees is blurred: "
        "strongly correlated and of much lower variance than the i.i.d. Gaussian noise it was trained on. "
        "Blur has no inverse, so the estimate passes back unchanged."
    )
    PARAMS = (
        ParamSpec(
            "factor", int, 8, 2, 64, description="How many times smaller the image is made before enlarging it back."
        ),
    )

    def check_size(self, size: int) -> None:
        super().check_size(size)
        if size < self._params["factor"]:
            raise ViewError(f"view '{self.name}': size must be at least factor={self._params['factor']} px, got {size}")

    def view(self, x: Tensor) -> Tensor:
        size = self.checked_size(x)
        work = working_precision(x)
        small = F.interpolate(
            work, size=size // self._params["factor"], mode="bilinear", antialias=True, align_corners=False
        )
        return F.interpolate(small, size=size, mode="bilinear", align_corners=False).to(x.dtype)

    def inverse(self, eps: Tensor) -> Tensor:
        self.checked_size(eps)
        return eps

    def render_frame(self, image: Tensor, t: float) -> Tensor:
        return shrink_frame(image, t, self._params["factor"])


class WhiteBalanceFailureView(FailureView):
    """Pixel values multiplied by a constant (an attempt at the 'dress' illusion)."""

    name = "white_balance_failure"
    label = "White balance (fails)"
    description = "The image's values scaled up or down: a documented failure."
    failure_note = (
        "Scaling pixel values scales the noise with them, so the model sees noise whose variance is "
        "factor² times what the schedule says; the noise is no longer the Gaussian the model expects."
    )
    PARAMS = (ParamSpec("factor", float, 1.5, 0.0, 4.0, min_exclusive=True, description="Multiplier of pixel values."),)

    def view(self, x: Tensor) -> Tensor:
        self.checked_size(x)
        return x * self._params["factor"]

    def inverse(self, eps: Tensor) -> Tensor:
        self.checked_size(eps)
        return map_noise_channels(eps, lambda noise: noise / self._params["factor"])

    def render_frame(self, image: Tensor, t: float) -> Tensor:
        return gain_frame(image, self._params["factor"], t)
