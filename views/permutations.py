"""Permutation views: exact pixel permutations built from regions and rigid motions.

A permutation keeps i.i.d. Gaussian noise i.i.d. Gaussian, which is what lets
the diffusion model denoise the viewed image. Each view describes itself once,
as a ``RegionLayout`` on a base grid; everything else follows from it:

* **One geometric idea at every size.** Region masks live on a base grid of
  ``BASE_GRID`` cells a side (Stage I's resolution) and are block-expanded to
  larger sizes, with motions acting at full resolution. Stage II at 256 px then
  applies the 64 px permutation to 4x4 blocks, rotating content inside them, so
  it refines the illusion Stage I drew. Sizes below 64 use their own pixels as
  the grid.
* **Index gathers.** The layout becomes a destination index per pixel, built once
  per (size, device); ``view`` and ``inverse`` are single ``index_select`` calls
  over the flattened H*W axis, moving every channel alike.
* **Animation.** Frames render the same motions interpolated in t.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from .base import View, ViewError
from .frames import splat_regions
from .motions import RegionLayout

#: Cells a side of the grid region masks are defined on: Stage I's resolution.
BASE_GRID = 64


@dataclass(frozen=True)
class IndexMaps:
    """Flat pixel indices for one (size, device): ``view`` gathers from ``source``, ``inverse`` from ``destination``."""

    source: Tensor
    destination: Tensor


class PermutationView(View):
    """A view that permutes pixels by moving regions rigidly.

    Subclasses implement ``base_layout(cells)``; grid views may add size rules
    in ``check_cells``. Whole-image views set ``uses_base_grid = False``: they
    need no grid, so they apply at every size.
    """

    kind = "permutation"
    uses_base_grid: ClassVar[bool] = True

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self._layouts: dict[int, RegionLayout] = {}
        self._index_maps: dict[tuple[int, torch.device], IndexMaps] = {}

    @abstractmethod
    def base_layout(self, cells: int) -> RegionLayout:
        """The regions and motions on a cells x cells grid, in cell units."""

    def check_cells(self, cells: int, size: int) -> None:
        """Raise ViewError if the layout cannot be drawn on a grid of ``cells`` (used at ``size``)."""

    def base_cells(self, size: int) -> int:
        """Cells a side of the grid the layout is drawn on at this size."""
        super().check_size(size)
        if not self.uses_base_grid or size <= BASE_GRID:
            return size
        if size % BASE_GRID:
            raise ViewError(
                f"view '{self.name}': size must be at most {BASE_GRID} or a multiple of {BASE_GRID} "
                f"(larger sizes refine the {BASE_GRID} px layout in blocks), got {size}"
            )
        return BASE_GRID

    def check_size(self, size: int) -> None:
        self.check_cells(self.base_cells(size), size)

    def layout(self, size: int) -> RegionLayout:
        """The full-resolution layout at this size (cached)."""
        if size not in self._layouts:
            self.check_size(size)
            cells = self.base_cells(size)
            self._layouts[size] = self.base_layout(cells).scaled(size // cells)
        return self._layouts[size]

    def index_maps(self, size: int, device: torch.device) -> IndexMaps:
        """The gather indices at this size on this device, built once."""
        key = (size, torch.device(device))
        if key not in self._index_maps:
            destination = self.layout(size).destinations()
            # A layout bug would silently copy some pixels and drop others: refuse it at build time.
            if not torch.equal(
                torch.bincount(destination, minlength=size * size), torch.ones(size * size, dtype=torch.int64)
            ):
                raise RuntimeError(f"view {self!r} does not permute the pixels of a {size} px image")
            source = torch.empty_like(destination)
            source[destination] = torch.arange(size * size)
            self._index_maps[key] = IndexMaps(source.to(device), destination.to(device))
        return self._index_maps[key]

    def _gather(self, x: Tensor, pick: str) -> Tensor:
        size = self.checked_size(x)
        index = getattr(self.index_maps(size, x.device), pick)
        # torch.gather over rows with a broadcast (expanded, never copied) index
        # is several times faster than index_select along the last axis.
        rows = x.reshape(-1, size * size)
        return torch.gather(rows, 1, index.expand(rows.shape[0], -1)).reshape(x.shape)

    def view(self, x: Tensor) -> Tensor:
        return self._gather(x, "source")

    def inverse(self, eps: Tensor) -> Tensor:
        return self._gather(eps, "destination")

    def render_frame(self, image: Tensor, t: float) -> Tensor:
        """Regions travel from their place to where the view puts them, turning as they go."""
        return splat_regions(image, self.layout(image.shape[-1]), t)
