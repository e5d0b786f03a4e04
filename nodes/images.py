"""Conversions between ComfyUI's IMAGE and the model's pixel space, and the check that an IMAGE is one.

ComfyUI IMAGE: (B, H, W, 3) float in [0, 1]. IF's pixel space: (B, 3, H, W)
in [-1, 1].
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from .labels import node_label


def to_model_space(image: torch.Tensor) -> torch.Tensor:
    return image.movedim(-1, 1) * 2 - 1


def to_comfy_image(pixels: torch.Tensor) -> torch.Tensor:
    return ((pixels.float() + 1) / 2).clamp(0, 1).movedim(1, -1).cpu()


def check_image(node_cls: type[io.ComfyNode], name: str, image: torch.Tensor, *, square: bool) -> None:
    """Raise a ValueError naming the node, the input and the fix unless ``image`` is a non-empty batch of
    RGB images (square ones if ``square``): what the views and the models work on.

    ComfyUI's IMAGE type does not promise any of it: a mask converted to an image can have one
    channel, an image with alpha four, and a batch filtered by another node none at all.
    """
    prefix = f"{node_label(node_cls)}: {name}"
    if image.ndim != 4:
        raise ValueError(
            f"{prefix}: expected a batch of images shaped (batch, height, width, 3), got a tensor of shape "
            f"{tuple(image.shape)}. Connect an IMAGE output that holds pictures."
        )
    count, height, width, channels = image.shape
    if count == 0:
        raise ValueError(
            f"{prefix}: the batch is empty (0 images). Connect an output that holds at least one image, or check "
            "the node before it (a filter or a batch split may have dropped them all)."
        )
    if channels != 3:
        raise ValueError(
            f"{prefix}: has {channels} channel{'s' if channels != 1 else ''}; views and IF work on RGB images "
            "(3 channels). Convert it to RGB first (a mask: Convert Mask to Image; an image with alpha: drop "
            "the alpha channel)."
        )
    if square and height != width:
        raise ValueError(
            f"{prefix}: views need square images, got {width}x{height} px. Crop it square, or connect the "
            "sampler's output directly."
        )
