"""Views for visual anagrams: transforms of the image with inverses for noise estimates.

Pure torch. ``make_view(name, **params)`` builds a view from the registry
``VIEW_CLASSES`` (anagram views, then factorized views, then the paper's
documented failures); ``View`` in ``base`` states the contract every view keeps.
"""

from __future__ import annotations

from typing import Any

from .anagrams import (
    FlipView,
    IdentityView,
    InnerCircleView,
    NegateView,
    PatchPermuteView,
    PixelPermuteView,
    Rotate180View,
    RotateClockwiseView,
    RotateCounterclockwiseView,
    SkewView,
    SquareHingeView,
)
from .base import ParamSpec, View, ViewError, WholeImageMotion
from .factorized import (
    ColorView,
    GrayscaleView,
    HighPassView,
    LowPassView,
    MotionBlurResidualView,
    MotionBlurView,
    ScaleView,
    TripleHighPassView,
    TripleLowPassView,
    TripleMediumPassView,
)
from .failures import BlurFailureView, InnerCircleFailureView, WhiteBalanceFailureView
from .jigsaw import JigsawView
from .permutations import PermutationView

VIEW_CLASSES: dict[str, type[View]] = {
    view_class.name: view_class
    for view_class in (
        IdentityView,
        FlipView,
        RotateClockwiseView,
        RotateCounterclockwiseView,
        Rotate180View,
        NegateView,
        SkewView,
        PatchPermuteView,
        PixelPermuteView,
        JigsawView,
        InnerCircleView,
        SquareHingeView,
        LowPassView,
        HighPassView,
        TripleLowPassView,
        TripleMediumPassView,
        TripleHighPassView,
        GrayscaleView,
        ColorView,
        MotionBlurView,
        MotionBlurResidualView,
        ScaleView,
        InnerCircleFailureView,
        BlurFailureView,
        WhiteBalanceFailureView,
    )
}


def view_names(include_failures: bool = True) -> list[str]:
    """Registered view names in registry order, optionally without the documented failures."""
    return [name for name, view_class in VIEW_CLASSES.items() if include_failures or not view_class.is_failure]


def make_view(name: str, **params: Any) -> View:
    """A view by registry name, with its parameters validated."""
    if name not in VIEW_CLASSES:
        raise ViewError(f"unknown view {name!r}; valid views: {', '.join(VIEW_CLASSES)}")
    return VIEW_CLASSES[name](**params)


__all__ = [
    "VIEW_CLASSES",
    "ParamSpec",
    "PermutationView",
    "View",
    "ViewError",
    "WholeImageMotion",
    "make_view",
    "view_names",
]
