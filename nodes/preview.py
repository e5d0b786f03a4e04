"""The view preview node: the illusion under every view, captioned, and its animation."""

from __future__ import annotations

import textwrap

import numpy as np
import torch
import torch.nn.functional as F
from comfy_api.latest import io
from PIL import Image, ImageDraw, ImageFont

from ..views.frames import frame_size
from .images import check_image, to_comfy_image, to_model_space
from .labels import node_label
from .sockets import check_sockets
from .types import CATEGORY, Prompts, Views
from .viewer import (
    MAX_SPRITE_FRAME,
    MAX_VIEWER_IMAGES,
    VIEWER_KEY,
    play_mode,
    viewer_payload,
)

CAPTION_LINES = 3


def _accepts(view, size: int) -> bool:
    try:
        view.check_size(size)
    except ValueError:
        return False
    return True


def animation_picture_size(size: int, views) -> int:
    """The picture's side in the animation frames and the viewer's sprites.

    Frames are 1.5 times the picture, and the viewer never shows one larger than
    :data:`MAX_SPRITE_FRAME`: rendering a 1024 px picture's 1536 px frames only to scale them
    down costs tens of seconds and gigabytes. So the frames are rendered from the picture shrunk
    by a whole factor (each permutation block becomes a whole smaller block, so a view moves the
    same pieces), the largest such size whose frames fit and that every view accepts; the full size
    when none does (a picture whose side has no suitable divisor).
    """
    for divisor in range(1, size + 1):
        side = size // divisor
        if size % divisor or frame_size(side) > MAX_SPRITE_FRAME:
            continue
        if all(_accepts(view, side) for view in views):
            return side
    return size


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def caption_strip(text: str, width: int) -> torch.Tensor:
    """White strip with ``text`` wrapped to ``width`` px, as (H, W, 3) in [0, 1]."""
    font_size = max(10, width // 18)
    line_height = font_size + 4
    characters_per_line = max(8, int(width / (font_size * 0.55)))
    lines = textwrap.wrap(text, characters_per_line)[:CAPTION_LINES] or [""]
    strip = Image.new("RGB", (width, line_height * CAPTION_LINES + 6), "white")
    draw = ImageDraw.Draw(strip)
    font = _font(font_size)
    for index, line in enumerate(lines):
        draw.text((4, 3 + index * line_height), line, fill="black", font=font)
    return torch.from_numpy(np.asarray(strip, dtype=np.float32) / 255.0)


def _captions(views, prompts) -> list[str]:
    texts = list(prompts.texts) if prompts is not None else []
    captions = []
    for index, view in enumerate(views):
        caption = f"{index + 1}. {view.label}"
        if index < len(texts):
            caption += f": {texts[index]}"
        captions.append(caption)
    return captions


class ViewPreview(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VisualAnagramsViewPreview",
            display_name="Illusion View Preview",
            category=CATEGORY,
            description="Shows the picture under every view with the prompt it should reveal: on the node, an "
            "illusion viewer plays the picture into each view and back. Also renders a captioned grid of the views "
            "and the animation frames (for animated WEBP or video savers).",
            # An output node, so it runs and shows the viewer even when nothing is wired to its outputs.
            is_output_node=True,
            inputs=[
                io.Image.Input("image", tooltip="The illusion (any batch: one grid row per image)."),
                Views.Input("views", tooltip="The views the illusion was made with, in prompt order."),
                Prompts.Input("prompts", optional=True, tooltip="Prompts, to caption each view."),
                io.Int.Input(
                    "frames_per_view",
                    default=24,
                    min=2,
                    max=240,
                    tooltip="Animation frames for each transition from the picture into a view (and as many back). "
                    "The viewer on the node steps through them for views that are not a flip, rotation or negation.",
                ),
                io.Int.Input(
                    "hold_frames", default=8, min=0, max=240, tooltip="Frames to pause on each view and on the picture."
                ),
            ],
            outputs=[
                io.Image.Output(display_name="view grid", tooltip="One row per image, one column per view."),
                io.Image.Output(
                    display_name="animation",
                    tooltip=f"Frames of the first image turning into each view, at most {MAX_SPRITE_FRAME} px a side "
                    "(what the viewer shows; the view grid keeps the image's full size).",
                ),
            ],
        )

    @classmethod
    def execute(cls, image, views, frames_per_view, hold_frames, prompts=None) -> io.NodeOutput:
        check_sockets(cls, image=image, views=views, prompts=prompts)
        check_image(cls, "image", image, square=True)
        pixels = to_model_space(image)
        size = pixels.shape[-1]
        for index, view in enumerate(views):
            try:
                view.check_size(size)
            except ValueError as error:
                raise ValueError(
                    f"{node_label(cls)}: views: view {index + 1} cannot show this image: {error}"
                ) from error
        # The grid keeps the full size (it is the picture the user made); the animation and the
        # viewer's sprites are rendered only as large as the viewer shows them.
        side = animation_picture_size(size, views)
        shown = pixels[:MAX_VIEWER_IMAGES]
        if side != size:
            shown = F.interpolate(shown.float(), size=(side, side), mode="area")
        transitions = _Transitions(shown, views, frames_per_view)
        viewed = [index for index, view in enumerate(views) if play_mode(view) == "frames"]
        texts = list(prompts.texts) if prompts is not None else []
        viewer = viewer_payload(
            image[:MAX_VIEWER_IMAGES],
            views,
            captions=[texts[index] if index < len(texts) else "" for index in range(len(views))],
            transitions={index: [transitions.get(index, b) for b in range(len(shown))] for index in viewed},
            frames_per_view=frames_per_view,
            hold_frames=hold_frames,
            frame_picture_size=side,
        )
        return io.NodeOutput(
            cls._grid(pixels, views, prompts),
            cls._animation(transitions, views, hold_frames),
            ui={VIEWER_KEY: [viewer]},
        )

    @staticmethod
    def _grid(pixels: torch.Tensor, views, prompts) -> torch.Tensor:
        size = pixels.shape[-1]
        captions = [caption_strip(text, size) for text in _captions(views, prompts)]
        rows = []
        for picture in pixels:
            cells = [
                torch.cat([to_comfy_image(view.preview(picture[None]))[0], caption], dim=0)
                for view, caption in zip(views, captions, strict=True)
            ]
            rows.append(torch.cat(cells, dim=1))
        return torch.cat(rows, dim=0)[None]

    @staticmethod
    def _animation(transitions: _Transitions, views, hold_frames: int) -> torch.Tensor:
        frames = []
        # The identity has nothing to animate; it is the start of every transition anyway.
        moving = [index for index, view in enumerate(views) if view.name != "identity"] or list(range(len(views)))
        for index in moving:
            there = transitions.get(index, 0)
            frames += there + [there[-1]] * hold_frames + there[::-1] + [there[0]] * hold_frames
        return torch.stack(frames)


class _Transitions:
    """Animation frames from each picture into each view, rendered once and shared by the
    ``animation`` output (first picture) and the viewer's sprite sheets (every picture shown)."""

    def __init__(self, pictures: torch.Tensor, views, frames_per_view: int):
        self.pictures = pictures
        self.views = views
        times = torch.linspace(0, 1, frames_per_view).tolist()
        # Ease in and out, so the motion settles on each view; a viewer stepping through the
        # frames at an even pace then plays the same easing.
        self.times = [0.5 - 0.5 * np.cos(np.pi * t) for t in times]
        self._frames: dict[tuple[int, int], list[torch.Tensor]] = {}

    def get(self, view_index: int, picture_index: int) -> list[torch.Tensor]:
        """Frames ((F, F, 3) ComfyUI images) of picture ``picture_index`` turning into view ``view_index``."""
        key = (view_index, picture_index)
        if key not in self._frames:
            view, picture = self.views[view_index], self.pictures[picture_index : picture_index + 1]
            self._frames[key] = [to_comfy_image(view.frame(picture, t))[0] for t in self.times]
        return self._frames[key]
