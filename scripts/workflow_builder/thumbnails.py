"""The thumbnail the template browser shows for an example: what its views do, drawn with the pack's own
views on a test picture or on the example's own picture (for the demo, on the embedded model's own result),
captioned with its prompts.

Pillow and torch are imported inside the functions: the JSON files are built without them.
"""

from __future__ import annotations

import io
from pathlib import Path
from types import ModuleType

from .examples import DEMO_STAGE_I, Illusion, Picture
from .repo_modules import demo_evaluate, pack_submodule

THUMBNAIL_MAX_BYTES = 60_000
THUMBNAIL_WIDTH = 400


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def test_picture(size: int = 256):
    """A picture whose orientation, colours and detail all show: sky and sand, a sun, a big 'R'."""
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(picture)
    for y in range(size):  # sky blue at the top to sand at the bottom
        t = y / (size - 1)
        draw.line([(0, y), (size, y)], fill=(int(90 + 150 * t), int(160 + 50 * t), int(235 - 120 * t)))
    draw.ellipse([size * 0.06, size * 0.06, size * 0.28, size * 0.28], fill=(255, 205, 40))
    font = _font(int(size * 0.78))
    draw.text(
        (size * 0.55, size * 0.55),
        "R",
        font=font,
        anchor="mm",
        fill=(150, 25, 35),
        stroke_width=max(2, size // 40),
        stroke_fill=(150, 25, 35),
    )
    return picture


def _wrap(text: str, font, width: int, max_lines: int) -> list[str]:
    """``text`` in lines no wider than ``width`` px (the last line cut with an ellipsis if needed)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    for index, line in enumerate(lines):
        while font.getlength(line) > width and len(line) > 1:
            line = line[:-2] + "…"
        lines[index] = line
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1].rstrip("…") + "…"
    return lines


def picture_pixels(picture: Picture, input_dir: Path, size: int):
    """An example's picture (the pack's copy, else the one in ComfyUI's input folder ``input_dir``) at
    ``size`` px, as the samplers take it: (1, 3, size, size) in [-1, 1]."""
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(picture.pack_file or input_dir / picture.name) as image:
        pixels = np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32)
    return torch.from_numpy(pixels).permute(2, 0, 1)[None] / 127.5 - 1


def demo_result(illusion: Illusion, input_dir: Path):
    """The demo workflow's first illusion (its seed, steps, guidance and start picture), sampled with the
    embedded model through the pack's own loading and sampling code: (1, 3, 64, 64) in [-1, 1]."""
    evaluate = demo_evaluate()
    model = evaluate.load_demo()
    prompts = [f"{illusion.style} {prompt}".strip() for prompt in illusion.prompts]
    options = illusion.stage_1_options
    # The Stage I node's MTL switches, as the core takes them (the examples keep MTL's other settings).
    anti_segregation = pack_submodule("sampling").AntiSegregation() if options.get("anti_segregation") else None
    start = {}
    if illusion.picture is not None:
        start = {"start_image": picture_pixels(illusion.picture, input_dir, 64), "strength": options["strength"]}
    return evaluate.sample(
        model,
        [name for name, _ in illusion.views],
        prompts,
        seeds=1,
        seed=DEMO_STAGE_I["seed"],
        steps=options.get("steps", DEMO_STAGE_I["steps"]),
        guidance=DEMO_STAGE_I["guidance"],
        rectify=bool(options.get("rectify", False)),
        anti_segregation=anti_segregation,
        **start,
    )


def mark_repainted_middle(pixels):
    """``pixels`` with a white frame around the middle square (half the width and height) the mask repaints."""
    marked = pixels.clone()
    size = pixels.shape[-1]
    low, high, line = size // 4, size - size // 4, max(2, size // 64)
    for start, stop in ((low - line, low), (high, high + line)):
        marked[..., start:stop, low - line : high + line] = 1
        marked[..., low - line : high + line, start:stop] = 1
    return marked


def thumbnail(illusion: Illusion, views_module: ModuleType, input_dir: Path) -> bytes:
    """The views of ``illusion`` applied to its picture, else to :func:`test_picture` (for a demo workflow:
    to the result it draws), side by side, captioned with the prompts. ``views_module`` is the pack's
    ``views`` package; ``input_dir`` ComfyUI's input folder, where the examples' pictures are."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image, ImageDraw

    count = len(illusion.views)
    margin, gap, line_height = 12, 10, 16
    panel = (THUMBNAIL_WIDTH - 2 * margin - (count - 1) * gap) // count
    if illusion.demo:
        pixels = F.interpolate(demo_result(illusion, input_dir), size=(256, 256), mode="bicubic", align_corners=False)
        source = ", from the picture" if illusion.picture else ""
        note = f"The demo model's own result (seed 0{source}) under each view."
    elif illusion.picture is not None:
        pixels = picture_pixels(illusion.picture, input_dir, 256)
        if illusion.repaint_middle:
            pixels = mark_repainted_middle(pixels)
            note = "Diagram: the views of the start picture; the framed middle is repainted."
        elif illusion.picture_input == "reference_image":
            note = "Diagram: the views applied to the reference picture, not a generated result."
        else:
            note = "Diagram: the views applied to the start picture, not a generated result."
    else:
        picture = test_picture(256)
        pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        note = "Diagram: the views applied to a test picture, not a generated result."
    views = [views_module.make_view(name, **params) for name, params in illusion.views]

    title_font, caption_font, label_font, note_font = _font(14), _font(13), _font(12), _font(11)
    labels = [_wrap(f"{index}. {view.label}", label_font, panel, 2) for index, view in enumerate(views, start=1)]
    captions = [_wrap(f"{illusion.style} {prompt}".strip(), caption_font, panel, 4) for prompt in illusion.prompts]
    label_height = line_height * max(len(lines) for lines in labels)
    caption_height = 8 + label_height + line_height * max(len(lines) for lines in captions)
    header, footer = 28, 24
    height = header + panel + caption_height + footer
    canvas = Image.new("RGB", (THUMBNAIL_WIDTH, height), "white")
    draw = ImageDraw.Draw(canvas)
    kind = "Hybrid image" if all(view.kind == "factorized" for view in views) else "Visual anagram"
    title = f"{kind}: {illusion.name.replace('_', ' ')}" + (" (embedded model)" if illusion.demo else "")
    if illusion.keep_best:
        title += f" (CLIP keeps {illusion.keep_best} of {illusion.candidates})"
    draw.text((margin, 7), title, font=title_font, fill=(30, 30, 30))

    for index, (view, label, caption) in enumerate(zip(views, labels, captions, strict=True)):
        shown = view.preview(pixels)[0].permute(1, 2, 0)
        shown = ((shown.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        x = margin + index * (panel + gap)
        canvas.paste(Image.fromarray(shown).resize((panel, panel), Image.LANCZOS), (x, header))
        y = header + panel + 6
        for line in label:
            draw.text((x, y), line, font=label_font, fill=(110, 110, 110))
            y += line_height
        y = header + panel + 6 + label_height
        for line in caption:
            draw.text((x, y), line, font=caption_font, fill=(20, 20, 20))
            y += line_height
    draw.text((margin, height - footer + 6), note, font=note_font, fill=(140, 140, 140))

    # The template browser downloads every thumbnail: the best quality that stays within the budget.
    for quality in (88, 80, 70, 60):
        buffer = io.BytesIO()
        canvas.save(buffer, "JPEG", quality=quality, optimize=True, progressive=True)
        if buffer.tell() <= THUMBNAIL_MAX_BYTES:
            return buffer.getvalue()
    raise ValueError(f"{illusion.name}: the thumbnail does not fit in {THUMBNAIL_MAX_BYTES} bytes")


def check_thumbnail(path: Path) -> str | None:
    """A problem with the thumbnail at ``path``, or None. Its exact bytes depend on the installed Pillow
    and torch, so this checks what the template browser relies on, not the pixels."""
    from PIL import Image

    if not path.is_file():
        return "missing"
    if path.stat().st_size > THUMBNAIL_MAX_BYTES:
        return f"{path.stat().st_size} bytes, over {THUMBNAIL_MAX_BYTES}"
    with Image.open(path) as image:
        if image.format != "JPEG":
            return f"a {image.format}, not a JPEG"
        if image.width != THUMBNAIL_WIDTH:
            return f"{image.width} px wide, not {THUMBNAIL_WIDTH}"
    return None
