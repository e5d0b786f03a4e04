"""The contract every view follows, its parameters, and its error type.

A view is a transform of the image. At every diffusion step the UNet sees
``view(x_t)`` with the view's prompt, and its noise estimate is brought back
with ``inverse``. Tensors are (B, C, S, S) in model space [-1, 1]; C may be 3
(images), 6 (IF noise + learned variance) or 6 (Stage II input: noisy image
and upsampled condition). Device and dtype are preserved, and ``view`` /
``inverse`` never read tensor values on the host, so they can run inside a
sampling loop on any device without synchronising.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

#: IF's UNets output noise in channels [:3] and a learned variance in [3:].
NOISE_CHANNELS = 3

#: The :meth:`View.unet_input_key` of every view whose ``view`` returns the image itself.
UNCHANGED = "unchanged"


class ViewError(ValueError):
    """A view cannot be made or applied: a bad parameter, size or input shape."""


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a view, described well enough to build a UI widget for it.

    ``type`` is ``int``, ``float`` or ``str``; a ``str`` parameter takes one of
    ``choices``. ``min`` / ``max`` bound numbers inclusively, except that
    ``min_exclusive`` makes the lower bound strict (e.g. a radius in (0, 0.5]).
    """

    name: str
    type: type
    default: Any
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    description: str = ""
    min_exclusive: bool = False

    def allowed(self) -> str:
        """The allowed values, in words, for error messages and tooltips."""
        if self.type is str:
            return "one of " + ", ".join(repr(choice) for choice in self.choices)
        low = "" if self.min is None else f"{self.min} {'<' if self.min_exclusive else '<='} "
        high = "" if self.max is None else f" <= {self.max}"
        kind = "an integer" if self.type is int else "a number"
        return f"{kind}, {low}{self.name}{high}" if low or high else kind

    def validate(self, view_name: str, value: Any) -> Any:
        """``value`` converted to this parameter's type, or ViewError saying what is allowed."""

        def refuse() -> ViewError:
            return ViewError(
                f"view '{view_name}': {self.name}={value!r} is not allowed; {self.name} must be {self.allowed()}"
            )

        if self.type is str:
            if value not in self.choices:
                raise refuse()
            return value
        # bool is an int subclass, but True is never a meaningful count or size.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise refuse()
        if self.type is int:
            if isinstance(value, float) and not value.is_integer():
                raise refuse()
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise refuse()
        below = self.min is not None and (value <= self.min if self.min_exclusive else value < self.min)
        above = self.max is not None and value > self.max
        if below or above:
            raise refuse()
        return value


@dataclass(frozen=True)
class WholeImageMotion:
    """A view that moves or recolours the whole picture as one piece, described neutrally so a
    viewer can play it with a transform instead of rendered frames: first mirror the rows (upside
    down) if ``mirror_rows``, then turn clockwise (as displayed) by ``quarter_turns``; or negate
    the colours. The identity is ``WholeImageMotion()``."""

    quarter_turns: int = 0
    mirror_rows: bool = False
    negate: bool = False

    @property
    def is_still(self) -> bool:
        return self == WholeImageMotion()


def map_noise_channels(estimate: Tensor, transform: Callable[[Tensor], Tensor]) -> Tensor:
    """Apply ``transform`` to the noise channels only; IF's variance channels pass through.

    Inverses that change values rather than positions (negation, filters, gains)
    must leave the learned variance alone: a negated or filtered variance is not
    a variance. Spatial inverses (permutations, rotations) move every channel.
    """
    noise = estimate[:, :NOISE_CHANNELS]
    return torch.cat([transform(noise), estimate[:, NOISE_CHANNELS:]], dim=1)


def working_precision(x: Tensor) -> Tensor:
    """``x`` in a dtype fit for filtering and resampling: float16/bfloat16 sums of many taps lose
    too much, so they are lifted to float32 (callers cast results back to ``x.dtype``)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class View(ABC):
    """A transform of square images with an inverse for noise estimates.

    Subclasses set the class attributes below and implement ``view``,
    ``inverse`` and ``render_frame`` (``frame`` checks its inputs, then calls
    it); ``check_size`` says which sizes they accept.
    Construct with keyword parameters matching ``PARAMS``.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    description: ClassVar[str]
    kind: ClassVar[str]  # "permutation" | "negate" | "factorized" | "failure"
    is_failure: ClassVar[bool] = False
    #: The picture itself, at rest, is how this view is seen: a hybrid's fine detail up close, the
    #: colour of a grey/colour split, the sharp residual of a motion blur split. Its animation
    #: frames show the other reading (stepping back, draining the colour, shaking), so a viewer
    #: shows such a view as the picture at rest rather than as the end of its frames.
    seen_at_rest: ClassVar[bool] = False
    failure_note: ClassVar[str] = ""
    reduction: ClassVar[str] = "mean"
    PARAMS: ClassVar[tuple[ParamSpec, ...]] = ()

    def __init__(self, **params: Any) -> None:
        specs = {spec.name: spec for spec in self.PARAMS}
        unknown = sorted(set(params) - set(specs))
        if unknown:
            accepted = ", ".join(specs) or "none"
            raise ViewError(f"view '{self.name}' has no parameter {', '.join(unknown)}; its parameters: {accepted}")
        self._params = {name: spec.validate(self.name, params.get(name, spec.default)) for name, spec in specs.items()}

    def params(self) -> dict[str, Any]:
        """The validated parameters (JSON-serialisable)."""
        return dict(self._params)

    def check_size(self, size: int) -> None:
        """Raise ViewError if the view cannot apply to S x S images; any positive size by default."""
        if size < 1:
            raise ViewError(f"view '{self.name}': size must be a positive number of pixels, got {size}")

    @abstractmethod
    def view(self, x: Tensor) -> Tensor:
        """What the UNet sees: the transformed (B, C, S, S) tensor."""

    @abstractmethod
    def inverse(self, eps: Tensor) -> Tensor:
        """Map a (B, C, S, S) noise estimate of the viewed image back to the original frame."""

    def preview(self, image: Tensor) -> Tensor:
        """What a person sees under this view."""
        return self.view(image)

    def unet_input_key(self) -> Hashable:
        """Views with equal keys show the UNet the same tensor for the same image, so a sampler may compute
        their UNet rows once (same prompt embedding too). ``view`` depends on the class and the parameters
        only; views that show the image unchanged (identity, factorized views) share :data:`UNCHANGED`."""
        return (type(self).__qualname__, tuple(sorted(self._params.items())))

    def whole_image_motion(self) -> WholeImageMotion | None:
        """This view as one motion of the whole picture, if it is one (identity, flips, rotations,
        negation); None when only the animation frames (``frame``) can show it."""
        return None

    def frame(self, image: Tensor, t: float) -> Tensor:
        """Animation frame at time t in [0, 1]: (B, C, F, F), F = S + 2 * (S // 4), white around.

        At t = 0 the image sits unchanged in the centre; as t grows the
        animation moves towards what the view shows.
        """
        self.checked_size(image)
        if not 0.0 <= t <= 1.0:
            raise ViewError(f"view '{self.name}': animation time t must be in [0, 1], got {t}")
        return self.render_frame(image, float(t))

    @abstractmethod
    def render_frame(self, image: Tensor, t: float) -> Tensor:
        """``frame`` for a checked image and time."""

    def checked_size(self, x: Tensor) -> int:
        """The side S of a (B, C, S, S) input, after checking its shape and that the view applies."""
        if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
            raise ViewError(f"view '{self.name}' needs square (B, C, S, S) tensors, got shape {tuple(x.shape)}")
        size = x.shape[-1]
        self.check_size(size)
        return size

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={value!r}" for name, value in self._params.items())
        return f"{self.name}({args})"
