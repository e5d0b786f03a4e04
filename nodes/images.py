"""Conversions between ComfyUI's IMAGE and the model's pixel space.

ComfyUI IMAGE: (B, H, W, 3) float in [0, 1]. IF's pixel space: (B, 3, H, W)
in [-1, 1].
"""

from __future__ import annotations

import torch


def to_model_space(image: torch.Tensor) -> torch.Tensor:
    return image.movedim(-1, 1) * 2 - 1


def to_comfy_image(pixels: torch.Tensor) -> torch.Tensor:
    return ((pixels.float() + 1) / 2).clamp(0, 1).movedim(1, -1).cpu()
