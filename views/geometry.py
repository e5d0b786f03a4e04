"""Pixel geometry: masks from continuous shapes sampled at pixel centres, and rotation inside a mask.

Sampling at pixel centres, with coordinates measured from the image centre,
keeps every symmetry of the shape: a disc about the centre gives a pixel mask
that is exactly centrally symmetric, a 90°-symmetric layout gives a mask that
``torch.rot90`` maps onto itself.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import working_precision


def pixel_centres(cells: int) -> Tensor:
    """(cells, cells, 2) float64 (row, col) coordinates of pixel centres; pixel (r, c) covers [r, r+1) x [c, c+1)."""
    axis = torch.arange(cells, dtype=torch.float64) + 0.5
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([rows, cols], dim=-1)


def disc_mask(cells: int, radius: float) -> Tensor:
    """(cells, cells) bool: pixels whose centre lies strictly inside the centred disc of ``radius * cells``."""
    offsets = pixel_centres(cells) - cells / 2
    return offsets.square().sum(-1) < (radius * cells) ** 2


@functools.lru_cache(maxsize=16)
def rotation_grid(size: int, degrees: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(1, S, S, 2) ``grid_sample`` grid rotating an S px image counter-clockwise by ``degrees``.

    Cached per device so views applying it every sampling step copy nothing to the device.
    """
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    # affine_grid maps each output position to where it samples the input (x right, y down).
    inverse_rotation = torch.tensor([[[cos, -sin, 0.0], [sin, cos, 0.0]]], dtype=dtype)
    return F.affine_grid(inverse_rotation, [1, 1, size, size], align_corners=False).to(device)


def rotate_inside(x: Tensor, inside: Tensor, degrees: float, mode: str) -> Tensor:
    """``x`` with the pixels in the (S, S) mask ``inside`` (on ``x``'s device) replaced by ``x``
    rotated about the image centre, counter-clockwise as displayed, by ``degrees``.

    Multiples of 90° are exact pixel rotations; other angles resample with
    ``grid_sample`` in ``mode`` ("bilinear" or "nearest"), as torchvision's
    ``rotate`` does, repeating edge pixels where a mask reaching the border
    would sample beyond it.
    """
    quarter_turns, remainder = divmod(degrees, 90)
    if remainder == 0:
        rotated = torch.rot90(x, int(quarter_turns) % 4, dims=(-2, -1))
    else:
        work = working_precision(x)
        grid = rotation_grid(x.shape[-1], degrees, x.device, work.dtype).expand(x.shape[0], -1, -1, -1)
        rotated = F.grid_sample(work, grid, mode=mode, padding_mode="border", align_corners=False).to(x.dtype)
    return torch.where(inside, rotated, x)
