"""The samplers' picture inputs: ComfyUI IMAGE and MASK as the core's model-space tensors at a stage's size.

What the core takes (``sampling/pictures.py``): pictures (1 or K, 3, S, S) in [-1, 1] and masks (1 or K, 1, S, S),
S the stage's size (the UNet's: 64 px for IF Stage I, 256 px for Stage II). What ComfyUI hands over: IMAGE
(B, H, W, C) in [0, 1] at whatever size the picture had, and MASK (B, H, W) or (H, W), 1 = repaint.

Checked in two steps, so that a wrong picture is named before a model loads (:meth:`StagePictures.checked`)
and resized once the model says its size (:meth:`StagePictures.core_inputs`). A non-square picture is
refused rather than cropped: which part to keep is the user's choice. A square one of another size is
resized, with a line in the log.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
import torch.nn.functional as F
from comfy_api.latest import io

from ..sampling.pictures import MASK_THRESHOLD
from .images import check_image, to_model_space
from .labels import node_label

logger = logging.getLogger(__name__)

CROP_SQUARE = "Crop it square first: Image Crop, or Upscale Image with crop 'center'."
PAINT_THE_MASK = (
    "Paint the region to repaint: right-click the Load Image node > Open in MaskEditor; a picture without alpha "
    "gives an empty mask."
)


@dataclasses.dataclass
class StagePictures:
    """A sampler's picture inputs, checked, in model space at their own size (None when not connected)."""

    node_cls: type[io.ComfyNode]
    start_image: torch.Tensor | None
    strength: float
    mask: torch.Tensor | None
    inpainting: str
    reference_image: torch.Tensor | None
    reference_view: int
    project_reference: bool

    @classmethod
    def checked(
        cls,
        node_cls: type[io.ComfyNode],
        *,
        count: int,
        count_name: str,
        start_image: torch.Tensor | None,
        strength: float,
        mask: torch.Tensor | None,
        inpainting: str,
        reference_image: torch.Tensor | None,
        reference_view: int,
        project_reference: bool,
    ) -> StagePictures:
        """Refuse, naming the node, the input and the fix, what no resize can mend.

        ``count`` pictures are drawn (``count_name``: "candidates", ...); each input holds one picture
        for all of them or one per picture drawn. ``reference_view`` counts from 1, as the canvas does.
        """
        return cls(
            node_cls=node_cls,
            start_image=_picture(node_cls, "start_image", start_image, count, count_name),
            strength=strength,
            mask=_mask(node_cls, "mask", mask, count, count_name),
            inpainting=inpainting,
            reference_image=_picture(node_cls, "reference_image", reference_image, count, count_name),
            reference_view=reference_view,
            project_reference=project_reference,
        )

    def core_inputs(self, stage: str, size: int) -> dict:
        """The keyword arguments of ``sample_stage_1`` / ``sample_stage_2`` for pictures at ``size`` px.

        Unconnected, they are the core's defaults: the run is the text-to-image one, bit for bit.
        """
        start = self._resized("start_image", self.start_image, stage, size, mode="bicubic")
        mask = self._resized("mask", self.mask, stage, size, mode="bilinear")
        if mask is not None:
            self._check_mask_repaints(mask, size)
        reference = self._resized("reference_image", self.reference_image, stage, size, mode="bicubic")
        return {
            "start_image": None if start is None else start.clamp(-1, 1),
            # The strength widget has a value whether or not a start image is connected; without one the run
            # is text to image, which is strength 1.
            "strength": self.strength if start is not None else 1.0,
            "mask": mask,
            "inpainting": self.inpainting,
            "reference_image": None if reference is None else reference.clamp(-1, 1),
            "reference_view": self.reference_view - 1,
            "project_reference": self.project_reference,
        }

    def _resized(self, name: str, picture: torch.Tensor | None, stage: str, size: int, *, mode: str):
        if picture is None or picture.shape[-1] == size:
            return picture
        logger.info(
            "%s: %s is %dx%d px, resized to %dx%d px (%s's size).",
            node_label(self.node_cls),
            name,
            picture.shape[-1],
            picture.shape[-2],
            size,
            size,
            stage,
        )
        # A mask is resized like a picture, then binarised by the core at 0.5: antialiased bilinear averages
        # the painted share around each pixel, so a shrunk mask repaints the pixels mostly painted (nearest
        # would keep or drop a thin stroke by where the samples fall) and an enlarged one keeps its edges
        # halfway between the old pixels' centres, where nearest puts them too.
        return F.interpolate(picture, (size, size), mode=mode, antialias=True)

    def _check_mask_repaints(self, mask: torch.Tensor, size: int) -> None:
        # An empty mask is the usual mistake, not a request: Load Image gives an all-zero 64 px mask for any
        # picture without alpha, and the run would only return the start image.
        repaints = (mask >= MASK_THRESHOLD).flatten(1).any(1).tolist()
        if all(repaints):
            return
        which = "" if len(repaints) == 1 else f" (mask {repaints.index(False) + 1} of {len(repaints)})"
        raise ValueError(
            f"{node_label(self.node_cls)}: mask: repaints nothing{which}: no value reaches {MASK_THRESHOLD} at "
            f"{size}x{size} px (1 = repaint). {PAINT_THE_MASK}"
        )


def _picture(node_cls, name: str, image: torch.Tensor | None, count: int, count_name: str) -> torch.Tensor | None:
    """An IMAGE (B, H, W, 3) in [0, 1] as model space (B, 3, H, W), after the checks."""
    if image is None:
        return None
    check_image(node_cls, name, image, square=False)
    _check_square_batch(node_cls, name, image.shape[0], image.shape[2], image.shape[1], count, count_name)
    _check_finite(node_cls, name, image)
    return to_model_space(image.float())


def _mask(node_cls, name: str, mask: torch.Tensor | None, count: int, count_name: str) -> torch.Tensor | None:
    """A MASK (B, H, W) or (H, W), 1 = repaint, as (B, 1, H, W), after the checks."""
    if mask is None:
        return None
    prefix = f"{node_label(node_cls)}: {name}"
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise ValueError(
            f"{prefix}: expected a mask shaped (batch, height, width), got a tensor of shape {tuple(mask.shape)}. "
            "Connect a MASK output, such as Load Image's."
        )
    if mask.shape[0] == 0:
        raise ValueError(f"{prefix}: the batch is empty (0 masks). Connect a MASK output that holds a mask.")
    _check_square_batch(node_cls, name, mask.shape[0], mask.shape[2], mask.shape[1], count, count_name)
    _check_finite(node_cls, name, mask)
    return mask[:, None].float()


def _check_square_batch(node_cls, name: str, batch: int, width: int, height: int, count: int, count_name: str):
    prefix = f"{node_label(node_cls)}: {name}"
    if width != height:
        raise ValueError(f"{prefix}: is {width}x{height} px, and illusions are square. {CROP_SQUARE}")
    if batch not in (1, count):
        raise ValueError(
            f"{prefix}: holds a batch of {batch} for {count} {count_name}: give one for all of them, or one for each."
        )


def _check_finite(node_cls, name: str, values: torch.Tensor) -> None:
    # Before the resize and the clamp, which would smear NaN over its neighbours or pass an infinity
    # as a plausible saturated pixel.
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        raise ValueError(
            f"{node_label(node_cls)}: {name}: {bad} values are NaN or infinite. Fix the node that made it, or "
            "replace those values."
        )
