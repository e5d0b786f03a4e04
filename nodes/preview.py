"""The view preview node: the illusion under every view, captioned, and its animation."""

from __future__ import annotations

import textwrap

import numpy as np
import torch
from comfy_api.latest import io
from PIL import Image, ImageDraw, ImageFont

from .images import to_comfy_image, to_model_space
from .types import CATEGORY, Prompts, Views

CAPTION_LINES = 3


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _caption_strip(text: str, width: int) -> torch.Tensor:
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
            description="Shows the picture under every view with the prompt it should reveal, and renders the "
            "animation from the picture into each view and back (for animated WEBP or video savers).",
            inputs=[
                io.Image.Input("image", tooltip="The illusion (any batch: one grid row per image)."),
                Views.Input("views", tooltip="The views the illusion was made with, in prompt order."),
                Prompts.Input("prompts", optional=True, tooltip="Prompts, to caption each view."),
                io.Int.Input(
                    "frames_per_view",
                    default=24,
                    min=2,
                    max=240,
                    tooltip="Animation frames for each transition from the picture into a view (and as many back).",
                ),
                io.Int.Input(
                    "hold_frames", default=8, min=0, max=240, tooltip="Frames to pause on each view and on the picture."
                ),
            ],
            outputs=[
                io.Image.Output(display_name="view grid", tooltip="One row per image, one column per view."),
                io.Image.Output(display_name="animation", tooltip="Frames of the first image turning into each view."),
            ],
        )

    @classmethod
    def execute(cls, image, views, frames_per_view, hold_frames, prompts=None) -> io.NodeOutput:
        if image.shape[1] != image.shape[2]:
            raise ValueError(
                f"Illusion View Preview: image: views need square images, got {image.shape[2]}x{image.shape[1]} px. "
                "Connect the sampler's output directly."
            )
        pixels = to_model_space(image)
        size = pixels.shape[-1]
        for index, view in enumerate(views):
            try:
                view.check_size(size)
            except ValueError as error:
                raise ValueError(f"Illusion View Preview: views: view {index + 1} cannot show this image: {error}")
        return io.NodeOutput(
            cls._grid(pixels, views, prompts), cls._animation(pixels[:1], views, frames_per_view, hold_frames)
        )

    @staticmethod
    def _grid(pixels: torch.Tensor, views, prompts) -> torch.Tensor:
        size = pixels.shape[-1]
        captions = [_caption_strip(text, size) for text in _captions(views, prompts)]
        rows = []
        for picture in pixels:
            cells = [
                torch.cat([to_comfy_image(view.preview(picture[None]))[0], caption], dim=0)
                for view, caption in zip(views, captions)
            ]
            rows.append(torch.cat(cells, dim=1))
        return torch.cat(rows, dim=0)[None]

    @staticmethod
    def _animation(picture: torch.Tensor, views, frames_per_view: int, hold_frames: int) -> torch.Tensor:
        times = torch.linspace(0, 1, frames_per_view).tolist()
        # Ease in and out, so the motion settles on each view.
        times = [0.5 - 0.5 * np.cos(np.pi * t) for t in times]
        frames = []
        # The identity has nothing to animate; it is the start of every transition anyway.
        moving = [view for view in views if view.name != "identity"] or list(views)
        for view in moving:
            there = [view.frame(picture, t) for t in times]
            frames += there + [there[-1]] * hold_frames + there[::-1] + [there[0]] * hold_frames
        return to_comfy_image(torch.cat(frames))
