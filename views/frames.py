"""Animation frames: the image on a white canvas 1.5x its size, moving from itself to its view.

A frame of an S px image is F = S + 2 * (S // 4) px a side with the image's
home at offset S // 4, so rotated corners and travelling pieces stay in view.
Model space is [-1, 1], so white is +1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import working_precision
from .motions import RegionLayout

WHITE = 1.0

#: Sample offsets inside a pixel for splatting: 2 x 2 samples, 0.5 px apart. Any rigid
#: motion of such a lattice leaves at most 0.35 px to the nearest sample, so every
#: pixel a region covers receives a sample; and the samples sit 0.25 px inside
#: their pixel, so float rounding cannot push one into a neighbour at t = 0 or 1.
SAMPLE_OFFSETS = (0.25, 0.75)

#: Shake of the motion-blur animation: 19.5 back-and-forth cycles, a whole number of
#: half-swings, so the image is at rest at both ends and at full swing half-way.
SHAKE_CYCLES = 19.5


def frame_margin(size: int) -> int:
    return size // 4


def frame_size(size: int) -> int:
    return size + 2 * frame_margin(size)


def place(image: Tensor, canvas_size: int, top: int, left: int) -> Tensor:
    """``image`` pasted on a white square canvas with its top-left corner at (top, left)."""
    canvas = image.new_full((*image.shape[:2], canvas_size, canvas_size), WHITE)
    canvas[..., top : top + image.shape[-2], left : left + image.shape[-1]] = image
    return canvas


def centred(image: Tensor) -> Tensor:
    """The image at its home position on the frame canvas."""
    size = image.shape[-1]
    return place(image, frame_size(size), frame_margin(size), frame_margin(size))


def crossfade_frame(start: Tensor, end: Tensor, t: float) -> Tensor:
    return centred(torch.lerp(start, end, t))


def gain_frame(image: Tensor, factor: float, t: float) -> Tensor:
    """Brightness/contrast scaled from 1 to ``factor`` about model-space 0."""
    return centred(image * (1 + (factor - 1) * t))


def shrink_frame(image: Tensor, t: float, resize_factor: float) -> Tensor:
    """The image shrinking towards the centre, down to 1 / resize_factor of its size at t = 1,
    as when stepping back from a hybrid image until only its low frequencies read. The scale
    falls geometrically, so the zoom runs at an even pace."""
    size = image.shape[-1]
    canvas_size = frame_size(size)
    new_size = max(1, round(size * resize_factor**-t))
    if new_size != size:
        small = F.interpolate(
            working_precision(image), size=(new_size, new_size), mode="bilinear", antialias=True, align_corners=False
        )
        image = small.to(image.dtype)
    corner = (canvas_size - new_size) // 2
    return place(image, canvas_size, corner, corner)


def shake_frame(image: Tensor, t: float) -> Tensor:
    """The image shaken along the diagonal, the way a motion-blurred image is seen moving."""
    size = image.shape[-1]
    amplitude = 29 * size / 512  # the paper's shake: 14.5 px at 256 px
    triangle = 2 / math.pi * math.asin(math.sin(2 * math.pi * SHAKE_CYCLES * t))
    offset = frame_margin(size) + round(amplitude * triangle)
    return place(image, frame_size(size), offset, offset)


def splat_regions(image: Tensor, layout: RegionLayout, t: float) -> Tensor:
    """Render every region of ``layout`` moved to time t: forward-splat a supersampled copy of
    the image, each sample to the pixel it lands in, later regions on top."""
    batch, channels, size, _ = image.shape
    canvas_size = frame_size(size)
    per_pixel = len(SAMPLE_OFFSETS) ** 2
    count = size * size * per_pixel

    pixel = torch.arange(size * size).repeat_interleave(per_pixel)
    offsets = torch.tensor(SAMPLE_OFFSETS)
    offsets = torch.cartesian_prod(offsets, offsets).repeat(size * size, 1)
    points = torch.stack([pixel // size, pixel % size], dim=-1).float() + offsets
    regions = layout.labels.flatten()[pixel]

    landed = (layout.move(points, regions, t) + frame_margin(size)).floor().to(torch.int64)
    inside = ((landed >= 0) & (landed < canvas_size)).all(-1)
    target = torch.where(inside, landed[:, 0] * canvas_size + landed[:, 1], 0)
    # Deterministic "later on top": the highest (region, sample) priority wins each pixel.
    priority = torch.where(inside, regions * count + torch.arange(count), -1)
    winner = torch.full((canvas_size * canvas_size,), -1, dtype=torch.int64).scatter_reduce(0, target, priority, "amax")

    covered = (winner >= 0).to(image.device)
    source = pixel[winner.clamp(min=0) % count].to(image.device)
    colours = image.reshape(batch, channels, size * size).index_select(-1, source)
    frame = torch.where(covered, colours, torch.full_like(colours, WHITE))
    return _fill_pinholes(
        frame.reshape(batch, channels, canvas_size, canvas_size), covered.reshape(canvas_size, canvas_size)
    )


def _fill_pinholes(frame: Tensor, covered: Tensor) -> Tensor:
    """Fill each uncovered pixel whose four neighbours are all covered with their mean.

    A jagged region turned by an in-between angle can leave a single pixel on
    its rim without a sample. Real gaps (between travelling pieces, the notch a
    jigsaw knob left) are wider than one pixel, so they are never surrounded.
    At t = 0 and 1 only the canvas margin is uncovered, so the ends stay exact.
    """
    cross = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], device=frame.device)
    weights = covered.to(torch.float32)[None, None]
    neighbours = F.conv2d(weights, cross[None, None], padding=1)[0, 0]
    channels = frame.shape[1]
    sums = F.conv2d(frame.float() * weights, cross.expand(channels, 1, 3, 3), padding=1, groups=channels)
    pinhole = ~covered & (neighbours == 4)
    return torch.where(pinhole, (sums / 4).to(frame.dtype), frame)
