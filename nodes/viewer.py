"""What the canvas's illusion viewer (js/viewer.js) needs: the pictures, and how to play each view.

The view preview node sends this through its ``ui`` output under :data:`VIEWER_KEY`
(ComfyUI passes a node's ``ui`` dict to the frontend's ``onExecuted`` and keeps it in
the history). A custom key rather than ``images`` on purpose: the frontend draws any
``images`` under the node by itself, which would show the picture twice, beside the viewer.

Every view is played one of three ways:

- ``still``: the identity, or a view seen in the picture at rest (``View.seen_at_rest``: a
  hybrid's fine detail up close); nothing to play, the picture is the view.
- ``css``: a motion of the whole picture (flips, rotations) or its colours (negation),
  played by the browser as a CSS transition from ``from`` to ``to`` (transform and
  filter strings). This module is the one place that turns a view's neutral
  :class:`~..views.WholeImageMotion` into CSS; the browser interpolates it smoothly at
  any size and frame rate.
- ``frames``: everything else (permutations, jigsaw, inner circle, hybrid images...):
  the view's own animation frames (``View.frame``), the same frames the node's
  ``animation`` output holds, packed into one sprite sheet per picture and stepped
  through by the viewer.

Files go to ComfyUI's temp folder, as PreviewImage's do (ComfyUI empties it at start).
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Sequence

import folder_paths
import numpy as np
import torch
from PIL import Image

from ..views import View, WholeImageMotion
from ..views.frames import frame_size

VIEWER_KEY = "visual_anagrams_viewer"

#: The viewer shows at most this many pictures of a batch (the candidates of one run).
MAX_VIEWER_IMAGES = 8

#: Sprite frames larger than this (Stage III's 1024 px pictures make 1536 px frames) are
#: scaled down: the viewer is a node on the canvas, and sheets of 24 full-size frames
#: would be tens of megapixels.
MAX_SPRITE_FRAME = 512


def css_motion(motion: WholeImageMotion) -> dict[str, dict[str, str]]:
    """The CSS transition that plays ``motion``: ``{"from": {...}, "to": {...}}`` with
    ``transform`` and ``filter`` strings.

    Both ends list the same functions, so the browser interpolates each one:
    ``rotate`` turns clockwise for positive angles, as the views' quarter turns do; the
    upside-down mirror is ``rotateX(180deg)``, a card flip about the horizontal axis
    (the viewer gives the stage a perspective), which is the views' own flip animation
    (rows scaled by cos(pi t)) seen in 3D; and ``invert`` goes through grey, as the
    negate view's crossfade from x to -x does. Transform functions apply right to
    left, so the mirror comes before the turn, as in :class:`WholeImageMotion`.
    """
    turn = 90 * motion.quarter_turns
    flip = 180 if motion.mirror_rows else 0
    invert = 1 if motion.negate else 0
    return {
        "from": {"transform": "rotate(0deg) rotateX(0deg)", "filter": "invert(0)"},
        "to": {"transform": f"rotate({turn}deg) rotateX({flip}deg)", "filter": f"invert({invert})"},
    }


def play_mode(view: View) -> str:
    motion = view.whole_image_motion()
    if view.seen_at_rest or (motion is not None and motion.is_still):
        return "still"
    return "frames" if motion is None else "css"


def _to_pil(image: torch.Tensor) -> Image.Image:
    """A (H, W, 3) ComfyUI image in [0, 1] as an 8-bit PIL image."""
    return Image.fromarray(np.clip(255.0 * image.cpu().numpy(), 0, 255).astype(np.uint8))


def _temp_file(suffix: str) -> tuple[str, dict[str, str]]:
    """A fresh path in ComfyUI's temp folder and its reference for ``/view``. Random names:
    two previews running in one prompt, or two prompts, never overwrite each other's files."""
    directory = folder_paths.get_temp_directory()
    os.makedirs(directory, exist_ok=True)
    filename = f"visual_anagrams_viewer_{uuid.uuid4().hex[:16]}{suffix}"
    return os.path.join(directory, filename), {"filename": filename, "subfolder": "", "type": "temp"}


def save_picture(image: torch.Tensor) -> dict[str, str]:
    path, reference = _temp_file(".png")
    _to_pil(image).save(path, compress_level=1)  # PreviewImage's level: fast, temp files
    return reference


def save_sprite_sheet(frames: Sequence[torch.Tensor]) -> dict:
    """Frames ((H, W, 3) ComfyUI images of one size) in a grid, row by row, as one WEBP.

    WEBP, not PNG: a sheet of two dozen 384 px frames is a few hundred kB instead of
    several MB, and the viewer loads one per picture and view.
    """
    side = frames[0].shape[0]
    scale = min(1.0, MAX_SPRITE_FRAME / side)
    cell = max(1, round(side * scale))
    columns = math.ceil(math.sqrt(len(frames)))
    rows = math.ceil(len(frames) / columns)
    sheet = Image.new("RGB", (columns * cell, rows * cell), "white")
    for index, frame in enumerate(frames):
        picture = _to_pil(frame)
        if cell != side:
            picture = picture.resize((cell, cell), Image.Resampling.LANCZOS)
        sheet.paste(picture, ((index % columns) * cell, (index // columns) * cell))
    path, reference = _temp_file(".webp")
    sheet.save(path, quality=88, method=4)
    return {**reference, "frames": len(frames), "columns": columns, "rows": rows, "frame_size": cell}


def viewer_payload(
    pictures: torch.Tensor,
    views: Sequence[View],
    captions: Sequence[str],
    transitions: dict[int, list[list[torch.Tensor]]],
    frames_per_view: int,
    hold_frames: int,
    frame_picture_size: int,
) -> dict:
    """The viewer's data for ``pictures`` ((B, H, W, 3) ComfyUI images).

    ``captions[k]`` is the prompt view k reveals ("" without prompts); ``transitions[k][b]``
    holds the animation frames ((F, F, 3) ComfyUI images, picture to view) of picture b
    under view k, for every view played with frames, rendered from the picture at
    ``frame_picture_size`` px (F = ``frame_size(frame_picture_size)``).
    """
    payload_views = []
    for index, view in enumerate(views):
        entry = {"name": view.name, "label": view.label, "caption": captions[index], "mode": play_mode(view)}
        if entry["mode"] == "css":
            entry["css"] = css_motion(view.whole_image_motion())
        elif entry["mode"] == "frames":
            entry["sprites"] = [save_sprite_sheet(frames) for frames in transitions[index]]
        payload_views.append(entry)
    return {
        "images": [save_picture(picture) for picture in pictures],
        "views": payload_views,
        # The picture's side as a fraction of an animation frame's (a frame is the picture on a
        # white square 1.5 times its size), so the viewer lays its stage out exactly as the
        # frames are and switches between the picture and the frames without a jump.
        "picture_fraction": frame_picture_size / frame_size(frame_picture_size),
        "frames_per_view": frames_per_view,
        "hold_frames": hold_frames,
    }
