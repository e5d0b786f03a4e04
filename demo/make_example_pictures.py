#!/usr/bin/env python
"""Write the example workflows' start pictures: real digits from the held-out split, drawn as the demo model saw them.

    .venv/bin/python demo/make_example_pictures.py            # write examples/pictures/
    .venv/bin/python demo/make_example_pictures.py --check    # exit 1 if the committed files differ

``examples/pictures/digit_two.png`` is one handwritten "2" from scikit-learn's digits, taken from the test
split (:func:`digits.load_split`, never seen in training) and rendered by the demo's own renderer
(:func:`digits.to_model`, :func:`digits.to_pil`): 64 x 64 RGB, the demo model's resolution and colours.
The pick is the test-split "2" that :class:`digits.DigitClassifier` reads as 2 most surely: the one whose
*weakest* one-vs-one SVM margin (2 against its closest rival digit) is the largest, so it is a clear 2.
(The default one-vs-rest score would not do: it saturates, several 2s win every vote and tie to the third
decimal, and its top pick is a loopy 2 that people misread.)

The PNG holds pixels only (Pillow writes no time or text chunks unless asked), so its bytes are
reproducible for a given Pillow and zlib. ComfyUI's LoadImage lists only its input folder;
nodes/example_pictures.py copies these pictures there when ComfyUI starts.
"""

from __future__ import annotations

import argparse
import copy
import io
import itertools
import sys
from pathlib import Path

import numpy as np

import digits  # demo/digits.py: Python puts this script's folder first on sys.path

REPO = Path(__file__).resolve().parents[1]
PICTURES_DIR = REPO / "examples" / "pictures"
DIGIT = 2


def pick_test_digit(digit: int) -> tuple[int, float]:
    """(index in the test split, weakest one-vs-one margin) of the test sample of ``digit`` read most surely."""
    split = digits.load_split()
    pipeline = digits.classifier().model
    svm = copy.copy(pipeline[-1])  # a shallow copy: the shared classifier keeps its one-vs-rest shape
    svm.decision_function_shape = "ovo"
    scores = svm.decision_function(pipeline[:-1].transform(digits.features(digits.to_model(split.test_images))))
    # Column k holds the margin of classes_[a] over classes_[b] for the k-th pair (a < b): positive favours a.
    pairs = itertools.combinations(range(len(svm.classes_)), 2)
    column = list(svm.classes_).index(digit)
    margins = np.stack(
        [scores[:, k] if a == column else -scores[:, k] for k, (a, b) in enumerate(pairs) if column in (a, b)],
        axis=1,
    ).min(axis=1)
    candidates = np.flatnonzero(split.test_labels == digit)
    best = candidates[np.argmax(margins[candidates])]
    return int(best), float(margins[best])


def render_png(index: int) -> bytes:
    """The test split's sample ``index`` as PNG bytes, rendered exactly as the demo model's training data."""
    picture = digits.to_pil(digits.to_model(digits.load_split().test_images[index : index + 1]))[0]
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed files differ")
    args = parser.parse_args(argv)

    index, margin = pick_test_digit(DIGIT)
    path = PICTURES_DIR / "digit_two.png"
    data = render_png(index)
    shown = path.relative_to(REPO)
    if args.check:
        if not path.is_file() or path.read_bytes() != data:
            print(
                f"make_example_pictures --check: {shown} is missing or out of date "
                "(run python demo/make_example_pictures.py)",
                file=sys.stderr,
            )
            return 1
        print(f"make_example_pictures --check: {shown} up to date (test sample {index}, margin {margin:.3f})")
        return 0

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    print(f"make_example_pictures: wrote {shown} (test sample {index}, weakest one-vs-one margin {margin:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
