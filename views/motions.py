"""Regions of an image, each moved by one rigid motion: the shape of every permutation view.

Coordinates are (row, col) with row 0 at the top; pixel (r, c) covers
[r, r+1) x [c, c+1), so its centre is (r + 0.5, c + 0.5). A region's motion is

    p  ->  pivot + turn(mirror(p - pivot)) + shift

where ``mirror`` flips rows (upside down) if asked and ``turn`` rotates by a
number of quarter turns, clockwise as displayed. With whole-pixel shifts and
pivots on the half-pixel lattice (for odd quarter turns, both coordinates whole
or both half), such a motion sends pixel centres to pixel centres, so it is an
exact permutation of pixels. The same formula, with the angle, the mirror and the
shift interpolated in t, animates the view (see ``RegionLayout.move``), which
is why an animation's last frame is exactly the view.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor


def swing_profile(t: float) -> float:
    """How far a moving region bulges sideways at time t: 0 at both ends, 1 half-way.

    It is the hinge's own curve: squares hinged corner to corner and turned by an
    angle a sit (sin a + cos a) times their resting distance from the middle one,
    so at a = 90°·t they bulge out by this profile times (sqrt(2) - 1).
    """
    quarter = math.pi / 2 * t
    return (math.sin(quarter) + math.cos(quarter) - 1) / (math.sqrt(2) - 1)


def random_swings(shift: Tensor, generator: torch.Generator, amplitude: float) -> Tensor:
    """(R, 2) sideways bulges for regions travelling by ``shift``: perpendicular to the straight
    path, of random signed size up to ``amplitude``, so paths curve gently and differently.
    Regions that stay put get none."""
    length = shift.norm(dim=1, keepdim=True)
    across = torch.stack([-shift[:, 1], shift[:, 0]], dim=1) / length.clamp(min=1e-12)
    size = (torch.rand(shift.shape[0], 1, generator=generator, dtype=torch.float64) * 2 - 1) * amplitude
    return across * size


@dataclass(frozen=True)
class RegionLayout:
    """A partition of an n x n image into regions and one rigid motion per region.

    ``labels`` (n, n) int64 gives every pixel's region; the other tensors are
    indexed by region: ``quarter_turns`` (clockwise), ``mirror_rows`` (flip
    upside down before turning), ``pivot`` and ``shift`` (row, col) in pixels,
    and ``swing``, the animation path's sideways bulge at mid-time. ``wraps``
    makes destinations wrap around the image (cyclic rolls, as in skew).
    """

    labels: Tensor
    quarter_turns: Tensor
    mirror_rows: Tensor
    pivot: Tensor
    shift: Tensor
    swing: Tensor
    wraps: bool = False

    @classmethod
    def build(
        cls,
        labels: Tensor,
        pivot: Tensor | Sequence,
        quarter_turns: Tensor | Sequence[int] | None = None,
        mirror_rows: Tensor | Sequence[bool] | None = None,
        shift: Tensor | Sequence | None = None,
        swing: Tensor | Sequence | None = None,
        wraps: bool = False,
    ) -> RegionLayout:
        """A layout from per-region values; the motion parts not given are 'none'."""
        pivot = torch.as_tensor(pivot, dtype=torch.float64).reshape(-1, 2)
        count = pivot.shape[0]

        def vectors(value) -> Tensor:
            return (
                torch.zeros(count, 2, dtype=torch.float64)
                if value is None
                else torch.as_tensor(value, dtype=torch.float64).reshape(count, 2)
            )

        turns = (
            torch.zeros(count, dtype=torch.int64)
            if quarter_turns is None
            else torch.as_tensor(quarter_turns, dtype=torch.int64)
        )
        mirror = (
            torch.zeros(count, dtype=torch.bool)
            if mirror_rows is None
            else torch.as_tensor(mirror_rows, dtype=torch.bool)
        )
        return cls(
            labels.to(torch.int64),
            turns.reshape(count),
            mirror.reshape(count),
            pivot,
            vectors(shift),
            vectors(swing),
            wraps,
        )

    @property
    def size(self) -> int:
        return self.labels.shape[-1]

    def scaled(self, factor: int) -> RegionLayout:
        """The same layout on a grid ``factor`` times finer: every cell becomes a factor x factor
        block and motions scale with it, so blocks move onto blocks and content inside a block
        turns with its region at full resolution."""
        if factor == 1:
            return self
        labels = self.labels.repeat_interleave(factor, 0).repeat_interleave(factor, 1)
        return replace(
            self, labels=labels, pivot=self.pivot * factor, shift=self.shift * factor, swing=self.swing * factor
        )

    def move(self, points: Tensor, regions: Tensor, t: float) -> Tensor:
        """Where ``points`` (N, 2) of ``regions`` (N,) are at time t of the animation.

        t = 0 leaves them in place, t = 1 applies the motion exactly (up to float
        rounding). In between, a region turns about its pivot by its angle·t, a
        mirror is a card flip (rows scaled by cos(pi·t)), and the pivot travels
        along the straight shift bent sideways by the swing.
        """
        dtype = points.dtype
        pivot = self.pivot.to(dtype)[regions]
        offset = points - pivot
        rows, cols = offset.unbind(-1)
        rows = torch.where(self.mirror_rows[regions], rows * math.cos(math.pi * t), rows)
        angle = self.quarter_turns[regions].to(dtype) * (math.pi / 2 * t)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # Clockwise as displayed, rows pointing down: right (0, 1) turns to down (1, 0).
        turned = torch.stack([cos * rows + sin * cols, cos * cols - sin * rows], dim=-1)
        moved = pivot + turned + t * self.shift.to(dtype)[regions] + swing_profile(t) * self.swing.to(dtype)[regions]
        return torch.remainder(moved, self.size) if self.wraps else moved

    def destinations(self) -> Tensor:
        """(n*n,) int64: the flat index each pixel moves to under the full motion."""
        size = self.size
        centres = (torch.arange(size * size) // size, torch.arange(size * size) % size)
        centres = torch.stack(centres, dim=-1).to(torch.float64) + 0.5
        moved = self.move(centres, self.labels.flatten(), 1.0)
        # Motions send pixel centres to pixel centres; rounding absorbs cos/sin rounding.
        cell = torch.round(moved - 0.5).to(torch.int64)
        return cell[:, 0] * size + cell[:, 1]
