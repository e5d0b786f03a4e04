#!/usr/bin/env python
"""Draw docs/picture-modes.jpg: the three ways an illusion starts from a picture, on the embedded digits model.

Each row runs the demo model (30 steps, guidance 4, seed 0, its first candidate: nothing is picked by
result) from the pack's shipped real "2" (examples/pictures/digit_two.png):

1. image to image: the 2 as start image, strength 0.9 (the digits_from_picture example's), views
   identity / flip, prompts "the digit two" / "the digit five";
2. inpainting: the same, with a mask repainting the lower half of the picture;
3. an inverse problem: the 2 as reference fixing the low-pass view's component, the high-pass view
   prompted "the digit five" (reduction sum, reference projected after the last step).

    .venv/bin/python demo/picture_modes.py                        # writes docs/picture-modes.jpg
    .venv/bin/python demo/picture_modes.py --measure-inpainting   # renoised vs clean, 20 seeds

It prints how the digit classifier reads every picture shown. About a minute on one CPU thread.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import digits
from evaluate import GUIDANCE, REPO, STEPS, load_demo
from pack import import_submodule

PICTURE = REPO / "examples" / "pictures" / "digit_two.png"
OUTPUT = REPO / "docs" / "picture-modes.jpg"
SCALE = 3  # 64 px digits shown at 192 px
CAPTION_HEIGHT = 30
GAP = 8
REPAINT_TINT = (230, 120, 40)  # the mask's region, shown over the start picture


def load_picture(path: Path) -> torch.Tensor:
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(pixels).permute(2, 0, 1)[None] * 2 - 1


def run(model, view_names, prompts, *, seed: int, **picture_inputs) -> torch.Tensor:
    sampling, views = import_submodule("sampling"), import_submodule("views")
    result = sampling.sample_stage_1(
        model.unet,
        model.scheduler,
        [views.make_view(name) for name in view_names],
        model.encode(prompts),
        seed=seed,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        reduction="sum" if view_names[0] == "low_pass" else "mean",
        **picture_inputs,
    )
    return result.images[:1]


def tinted(picture: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    tint = torch.tensor(REPAINT_TINT, dtype=torch.float32).view(1, 3, 1, 1) / 127.5 - 1
    return torch.where(mask.bool(), 0.5 * picture + 0.5 * tint, picture)


def panel(picture: torch.Tensor, caption: str, reader) -> Image.Image:
    reading = f" (reads {reader.predict(picture)[0]})" if reader is not None else ""
    print(f"  {caption}{reading}")
    (image,) = digits.to_pil(picture, SCALE)
    framed = Image.new("RGB", (image.width, image.height + CAPTION_HEIGHT), (255, 255, 255))
    framed.paste(image, (0, 0))
    ImageDraw.Draw(framed).text((4, image.height + 8), caption + reading, fill=(20, 20, 20))
    return framed


def figure(rows: list[tuple[str, list[Image.Image]]]) -> Image.Image:
    width = max(len(panels) for _, panels in rows) * (64 * SCALE + GAP) + GAP
    row_height = 64 * SCALE + CAPTION_HEIGHT + 24
    canvas = Image.new("RGB", (width, len(rows) * row_height + GAP), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for index, (title, panels) in enumerate(rows):
        top = index * row_height + GAP
        draw.text((GAP, top), title, fill=(0, 0, 0))
        for column, image in enumerate(panels):
            canvas.paste(image, (GAP + column * (64 * SCALE + GAP), top + 18))
    return canvas


def half_mask(half: str) -> torch.Tensor:
    """1 = repaint the lower or upper half of the picture."""
    mask = torch.zeros(1, 1, digits.SIZE, digits.SIZE)
    rows = slice(digits.SIZE // 2, None) if half == "lower" else slice(None, digits.SIZE // 2)
    mask[..., rows, :] = 1
    return mask


def measure_inpainting(model, reader, two: torch.Tensor, seeds: int = 20) -> None:
    """How often the inpainted illusion reads 2 as it is and 5 flipped, per inpainting mode and masked half."""
    sampling, views = import_submodule("sampling"), import_submodule("views")
    flip = views.make_view("flip")
    embeddings = model.encode([digits.prompt(2), digits.prompt(5)])
    for half in ("lower", "upper"):
        for mode in sampling.pictures.INPAINTING_MODES:
            images = sampling.sample_stage_1(
                model.unet,
                model.scheduler,
                [views.make_view("identity"), flip],
                embeddings,
                num_candidates=seeds,
                seed=0,
                num_inference_steps=STEPS,
                guidance_scale=GUIDANCE,
                start_image=two,
                strength=0.9,
                mask=half_mask(half),
                inpainting=mode,
            ).images
            as_is, flipped = reader.predict(images), reader.predict(flip.view(images))
            both = ((as_is == 2) & (flipped == 5)).mean() * 100
            print(f"{half} half repainted, {mode}: both views read {both:.0f} % of {seeds} seeds")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUTPUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--measure-inpainting", action="store_true", help="print renoised vs clean, draw nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    model, reader = load_demo(), digits.classifier()
    views = import_submodule("views")
    two = load_picture(PICTURE)
    if args.measure_inpainting:
        measure_inpainting(model, reader, two)
        return 0
    prompts = [digits.prompt(2), digits.prompt(5)]
    flip, low, high = (views.make_view(name) for name in ("flip", "low_pass", "high_pass"))
    rows = []

    print("1. image to image")
    result = run(model, ["identity", "flip"], prompts, seed=args.seed, start_image=two, strength=0.9)
    rows.append(
        (
            "1. Start image, strength 0.9",
            [
                panel(two, "start: a real 2", reader),
                panel(result, "result", reader),
                panel(flip.view(result), "flipped", reader),
            ],
        )
    )

    print("2. inpainting")
    mask = half_mask("lower")
    result = run(model, ["identity", "flip"], prompts, seed=args.seed, start_image=two, strength=0.9, mask=mask)
    rows.append(
        (
            "2. Start image and mask, strength 0.9 (orange: repainted; the rest stays the picture)",
            [
                panel(tinted(two, mask), "start and mask", None),
                panel(result, "result", reader),
                panel(flip.view(result), "flipped", reader),
            ],
        )
    )

    print("3. reference")
    result = run(model, ["low_pass", "high_pass"], prompts, seed=args.seed, reference_image=two, reference_view=0)
    rows.append(
        (
            "3. Reference fixes the low pass; the high pass is prompted 'the digit five'",
            [
                panel(two, "reference", reader),
                panel(result, "result", reader),
                panel(low.preview(result), "low pass (from afar)", None),
                panel(high.preview(result), "high pass (up close)", None),
            ],
        )
    )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure(rows).save(args.out, quality=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
