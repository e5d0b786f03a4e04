"""The visual-anagram views of the paper: pixel permutations and colour negation.

Each permutation view only describes its regions and their rigid motions on
the base grid (see ``permutations`` and ``motions``); applying, inverting,
refining at larger sizes and animating are shared.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import replace
from typing import ClassVar

import torch
from torch import Tensor

from .base import UNCHANGED, ParamSpec, View, ViewError, WholeImageMotion, map_noise_channels
from .frames import centred, crossfade_frame
from .geometry import disc_mask, rotate_inside
from .motions import RegionLayout, random_swings
from .permutations import PermutationView

#: The paper's inner circle: radius 3/8 of the side.
INNER_CIRCLE_RADIUS = 0.375

SEED = ParamSpec("seed", int, 0, 0, 0xFFFF_FFFF_FFFF_FFFF, description="Seed of the random arrangement.")


class WholeImageView(PermutationView):
    """The whole image moved as one piece about its centre: identity, flip and rotations."""

    uses_base_grid = False
    quarter_turns: ClassVar[int] = 0
    mirror_rows: ClassVar[bool] = False

    def base_layout(self, cells: int) -> RegionLayout:
        labels = torch.zeros(cells, cells, dtype=torch.int64)
        return RegionLayout.build(
            labels, pivot=[cells / 2, cells / 2], quarter_turns=[self.quarter_turns], mirror_rows=[self.mirror_rows]
        )

    def whole_image_motion(self) -> WholeImageMotion:
        return WholeImageMotion(quarter_turns=self.quarter_turns, mirror_rows=self.mirror_rows)


class IdentityView(WholeImageView):
    name = "identity"
    label = "Identity"
    description = "The image as it is."

    # No gather needed: the sampler reads these, it never writes to them.
    def view(self, x: Tensor) -> Tensor:
        self.checked_size(x)
        return x

    def inverse(self, eps: Tensor) -> Tensor:
        self.checked_size(eps)
        return eps

    def unet_input_key(self) -> Hashable:
        return UNCHANGED


class FlipView(WholeImageView):
    name = "flip"
    label = "Flip upside down"
    description = "The image mirrored top to bottom."
    mirror_rows = True

    # torch.flip is the same permutation as the layout's gather, and faster still.
    def view(self, x: Tensor) -> Tensor:
        self.checked_size(x)
        return torch.flip(x, [-2])

    def inverse(self, eps: Tensor) -> Tensor:
        return self.view(eps)


class RotateClockwiseView(WholeImageView):
    name = "rotate_cw"
    label = "Rotate 90° clockwise"
    description = "The image turned a quarter turn clockwise."
    quarter_turns = 1


class RotateCounterclockwiseView(WholeImageView):
    name = "rotate_ccw"
    label = "Rotate 90° counter-clockwise"
    description = "The image turned a quarter turn counter-clockwise."
    quarter_turns = -1


class Rotate180View(WholeImageView):
    name = "rotate_180"
    label = "Rotate 180°"
    description = "The image turned upside down by a half turn."
    quarter_turns = 2


class NegateView(View):
    """Colour negation: the model sees -x. The inverse negates only the noise, not IF's variance."""

    name = "negate"
    label = "Negate colours"
    description = "The image with its colours inverted."
    kind = "negate"

    def view(self, x: Tensor) -> Tensor:
        self.checked_size(x)
        return -x

    def inverse(self, eps: Tensor) -> Tensor:
        self.checked_size(eps)
        return map_noise_channels(eps, torch.neg)

    def render_frame(self, image: Tensor, t: float) -> Tensor:
        return crossfade_frame(image, -image, t)

    def whole_image_motion(self) -> WholeImageMotion:
        return WholeImageMotion(negate=True)


class SkewView(PermutationView):
    """Every base-grid column rolled vertically by an amount growing across the image.

    Column j of G rolls down by ``int(factor * (j - G/2))`` cells (truncated
    towards zero, as the paper does), so the inverse is the roll by -factor.
    """

    name = "skew"
    label = "Skew"
    description = "Columns rolled up or down cyclically, more towards the sides: a shear that wraps around."
    PARAMS = (ParamSpec("factor", float, 1.5, -4.0, 4.0, description="Rows of roll per column away from the centre."),)

    def base_layout(self, cells: int) -> RegionLayout:
        columns = torch.arange(cells)
        rolls = torch.trunc(self._params["factor"] * (columns.to(torch.float64) - cells / 2))
        pivot = torch.stack(
            [torch.full((cells,), cells / 2, dtype=torch.float64), columns.to(torch.float64) + 0.5], dim=1
        )
        shift = torch.stack([rolls, torch.zeros(cells, dtype=torch.float64)], dim=1)
        return RegionLayout.build(columns.expand(cells, cells), pivot=pivot, shift=shift, wraps=True)


class PatchPermuteView(PermutationView):
    """The image cut into an n x n grid of square patches, shuffled by a seeded permutation.

    Output patch i shows input patch ``perm[i]``, with
    ``perm = torch.randperm(n * n, generator=torch.Generator().manual_seed(seed))``.
    """

    name = "patch_permute"
    label = "Patch permutation"
    description = "Square patches shuffled like tiles."
    PARAMS = (
        ParamSpec(
            "patches_per_side",
            int,
            8,
            1,
            64,
            description="Patches along each side; must divide the image size (64 for larger sizes).",
        ),
        SEED,
    )

    def check_cells(self, cells: int, size: int) -> None:
        patches = self._params["patches_per_side"]
        if cells % patches:
            grid = f"the image size {size}" if cells == size else f"{cells}, the grid a {size} px image is refined from"
            allowed = ", ".join(str(n) for n in range(1, cells + 1) if cells % n == 0)
            raise ViewError(
                f"view '{self.name}': patches_per_side={patches} must divide {grid}; allowed values: {allowed}"
            )

    def base_layout(self, cells: int) -> RegionLayout:
        patches = self._params["patches_per_side"]
        side = cells // patches
        generator = torch.Generator().manual_seed(self._params["seed"])
        perm = torch.randperm(patches * patches, generator=generator)
        goes_to = torch.empty_like(perm)
        goes_to[perm] = torch.arange(patches * patches)

        home = torch.arange(patches * patches)
        corner = torch.stack([home // patches, home % patches], dim=1).to(torch.float64) * side
        shift = torch.stack([goes_to // patches, goes_to % patches], dim=1).to(torch.float64) * side - corner
        cell = torch.arange(cells) // side
        labels = cell[:, None] * patches + cell[None, :]
        swing = random_swings(shift, generator, cells / 8)
        return RegionLayout.build(labels, pivot=corner + side / 2, shift=shift, swing=swing)


class PixelPermuteView(PatchPermuteView):
    """Patch permutation at one pixel per patch at 64 px (4 x 4 blocks at 256 px, as the paper)."""

    name = "pixel_permute"
    label = "Pixel permutation"
    description = "Every pixel shuffled (blocks of pixels at higher resolution)."
    PARAMS = (
        replace(
            PatchPermuteView.PARAMS[0],
            default=64,
            description="Patches along each side; 64 shuffles single pixels at 64 px.",
        ),
        SEED,
    )


class InnerCircleView(PermutationView):
    """A centred disc turned by 180° while the rest stays."""

    name = "inner_circle"
    label = "Inner circle rotation"
    description = "A disc in the middle turned upside down while the border stays."
    PARAMS = (
        ParamSpec(
            "radius",
            float,
            INNER_CIRCLE_RADIUS,
            0.0,
            0.5,
            min_exclusive=True,
            description="Disc radius as a fraction of the image side.",
        ),
    )

    def base_layout(self, cells: int) -> RegionLayout:
        # Tested at pixel centres about the image centre, the disc is exactly centrally symmetric,
        # so the half turn maps it onto itself.
        labels = disc_mask(cells, self._params["radius"]).to(torch.int64)
        centre = [cells / 2, cells / 2]
        return RegionLayout.build(labels, pivot=[centre, centre], quarter_turns=[0, 2])

    def render_frame(self, image: Tensor, t: float) -> Tensor:
        """The picture spins clockwise behind a round window (as in the paper's animation).

        Spinning the stepped disc itself would open slivers along its rim at
        in-between angles; a window onto rotated content has none. At t = 1 the
        half turn is exact, so the last frame is the view.
        """
        window = self.layout(image.shape[-1]).labels.bool().to(image.device)
        return centred(rotate_inside(image, window, -180 * t, "bilinear"))


class SquareHingeView(PermutationView):
    """A 3 x 3 grid of squares, each turned a quarter turn about its own centre.

    Squares are ``G // 3`` cells a side from the top-left corner; leftover rows and
    columns at the bottom and right stay put. Convention (the paper's): square
    (row i, column j) turns clockwise if i + j is even (corners and centre),
    counter-clockwise otherwise, so neighbours turn opposite ways like a hinged
    chain. The animation swings them apart and back as the hinges open.
    """

    name = "square_hinge"
    label = "Square hinge"
    description = "Nine squares each turned a quarter turn, alternating directions, like a hinged puzzle."

    def check_cells(self, cells: int, size: int) -> None:
        if cells < 3:
            raise ViewError(f"view '{self.name}': size must be at least 3 px for a 3 x 3 grid of squares, got {size}")

    def base_layout(self, cells: int) -> RegionLayout:
        side = cells // 3
        block = torch.arange(cells) // side
        inside = (block[:, None] < 3) & (block[None, :] < 3)
        labels = torch.where(inside, 1 + block[:, None] * 3 + block[None, :], 0)
        square = torch.arange(9)
        row, col = square // 3, square % 3
        centres = torch.stack([row, col], dim=1).to(torch.float64) * side + side / 2
        turns = torch.where((row + col) % 2 == 0, 1, -1)
        # Hinged squares stay corner to corner: at angle a their centres sit (sin a + cos a) times
        # further from the middle square, i.e. sqrt(2) times at mid-time (see swing_profile).
        swing = (centres - 1.5 * side) * (math.sqrt(2) - 1)
        still = torch.tensor([[cells / 2, cells / 2]], dtype=torch.float64)
        return RegionLayout.build(
            labels,
            pivot=torch.cat([still, centres]),
            quarter_turns=torch.cat([torch.zeros(1, dtype=torch.int64), turns]),
            swing=torch.cat([torch.zeros(1, 2, dtype=torch.float64), swing]),
        )
