"""Blur filters for factorized views: separable Gaussian and diagonal motion blur, in pure torch.

Filter sizes are given at 64 px (Stage I) and scale with the image so a filter
means the same thing at every stage: sigma * S / 64, and a kernel size scaled
likewise and kept odd (the paper's 33 -> 133 at 256 px and 529 at 1024 px).
Edges are reflect-padded; the kernel is trimmed to what a small image can
reflect (radius at most S - 1). Filters compute in their input's dtype;
callers lift half precision to float32 first (``base.working_precision``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

REFERENCE_SIZE = 64


def scaled_kernel_size(kernel_size: int, size: int) -> int:
    """A kernel size given at 64 px, at ``size`` px: scaled, odd, at least 3."""
    scaled = round(kernel_size * size / REFERENCE_SIZE)
    return max(3, scaled if scaled % 2 else scaled + 1)


def scaled_sigma(sigma: float, size: int) -> float:
    return sigma * size / REFERENCE_SIZE


def _convolve(x: Tensor, kernel: Tensor) -> Tensor:
    """Each channel of ``x`` convolved with the odd-sized 2-D ``kernel``, reflect-padded."""
    rows, cols = kernel.shape
    channels = x.shape[1]
    padded = F.pad(x, (cols // 2, cols // 2, rows // 2, rows // 2), mode="reflect")
    return F.conv2d(padded, kernel.to(x.dtype).expand(channels, 1, rows, cols), groups=channels)


def _fitted(kernel_size: int, size: int) -> int:
    """The kernel size, trimmed so its radius fits reflect padding of a ``size`` px image."""
    return min(kernel_size, 2 * size - 1)


def gaussian_blur(x: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """Gaussian blur of every channel of a (B, C, S, S) tensor."""
    kernel_size = _fitted(kernel_size, x.shape[-1])
    offsets = torch.arange(kernel_size, dtype=torch.float64, device=x.device) - kernel_size // 2
    weights = torch.exp(-0.5 * (offsets / sigma).square())
    weights = weights / weights.sum()
    return _convolve(_convolve(x, weights[:, None]), weights[None, :])


def diagonal_blur(x: Tensor, kernel_size: int) -> Tensor:
    """Motion blur along the main diagonal (top-left to bottom-right): the mean of a diagonal line."""
    kernel_size = _fitted(kernel_size, x.shape[-1])
    return _convolve(x, torch.eye(kernel_size, dtype=torch.float64, device=x.device) / kernel_size)
