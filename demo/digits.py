"""scikit-learn's handwritten digits as 64 px model-space images, and a classifier that reads them.

The demo model (``demo/IF-I-digits``) is trained on these pictures and the tests
check its samples with the classifier, so both sides share this one module.

The data set ships inside scikit-learn (``sklearn.datasets.load_digits``: 1797
scans of handwritten digits by 43 writers, 8 x 8 pixels, ink 0..16), so nothing
is downloaded.

Rendering (8 x 8 ink -> 64 x 64 RGB in [-1, 1], IF's model space):

* **Upsampling**: bicubic (8x), then a soft threshold (a steep sigmoid around
  half ink). Nearest-neighbour would draw 8 px squares; bicubic alone gives a
  grey blur. Bicubic + threshold turns the 8 x 8 ink map into smooth, round
  strokes with a soft edge a couple of pixels wide, which reads as a pen stroke
  and keeps the picture band-limited (easy for a small model to learn).
* **Polarity**: dark blue-black ink on cream paper, like a pen on paper (and
  unlike the white-on-black of MNIST, which looks like a negative). The paper
  is the large constant area, so the rotations and flips of the views move only
  the strokes.

:func:`ink` inverts the colouring (projection on the paper -> ink axis), and
:func:`features` area-averages the ink back to 8 x 8 in the data set's 0..16
scale, which is what :class:`DigitClassifier` reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

SIZE = 64  # IF Stage I resolution
SOURCE = 8  # the data set's resolution
MARGIN = 8  # paper around the digit: the 8 x 8 scan fills the middle 48 x 48
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: How the demo model's prompts name a digit (``w``: its word), the one phrasing it was trained on.
PROMPT = "the digit {w}"

# Colours in [0, 1]: cream paper, blue-black ink.
PAPER = (0.96, 0.94, 0.88)
INK = (0.09, 0.13, 0.32)
THRESHOLD = 0.55  # soft-threshold centre (fraction of full ink)
SHARPNESS = 9.0  # soft-threshold steepness

TEST_FRACTION = 0.2  # held-out share of the data set (stratified)
SPLIT_SEED = 0


@dataclass(frozen=True)
class Split:
    """The data set split once, reproducibly: ``train`` for the model and the classifier, ``test`` held out."""

    train_images: np.ndarray  # (N, 8, 8) float32 in [0, 16]
    train_labels: np.ndarray  # (N,) int64
    test_images: np.ndarray
    test_labels: np.ndarray


def prompt(digit: int) -> str:
    """The demo model's prompt for ``digit``: "the digit seven"."""
    return PROMPT.format(w=DIGIT_WORDS[digit])


@lru_cache(maxsize=1)
def load_split() -> Split:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = data.images.astype(np.float32)
    labels = data.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    return Split(train_x, train_y, test_x, test_y)


# -- rendering ----------------------------------------------------------------------------------


def upsample_ink(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(N, 8, 8) ink in [0, 16] -> (N, 1, 64, 64) ink in [0, 1] (bicubic, in the middle 48 x 48; before the
    soft threshold)."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32).reshape(-1, 1, SOURCE, SOURCE) / 16.0
    inner = SIZE - 2 * MARGIN
    x = F.interpolate(x, size=(inner, inner), mode="bicubic", align_corners=False).clamp(0, 1)
    return F.pad(x, (MARGIN,) * 4)


def soft_threshold(ink_map: torch.Tensor, threshold: float | torch.Tensor = THRESHOLD) -> torch.Tensor:
    """A steep sigmoid rescaled so that 0 stays 0 and 1 stays 1 (at the default threshold)."""
    t = torch.as_tensor(threshold, dtype=ink_map.dtype, device=ink_map.device)
    if t.ndim:
        t = t.view(-1, 1, 1, 1)
    lo = torch.sigmoid((0 - t) * SHARPNESS)
    hi = torch.sigmoid((1 - t) * SHARPNESS)
    return ((torch.sigmoid((ink_map - t) * SHARPNESS) - lo) / (hi - lo)).clamp(0, 1)


def colorize(ink_map: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) ink in [0, 1] -> (N, 3, H, W) RGB model space in [-1, 1]."""
    paper = torch.tensor(PAPER, dtype=ink_map.dtype, device=ink_map.device).view(1, 3, 1, 1)
    ink_colour = torch.tensor(INK, dtype=ink_map.dtype, device=ink_map.device).view(1, 3, 1, 1)
    rgb = paper + (ink_colour - paper) * ink_map
    return rgb * 2 - 1


def to_model(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(N, 8, 8) digits in [0, 16] -> (N, 3, 64, 64) model-space images in [-1, 1]."""
    return colorize(soft_threshold(upsample_ink(images)))


def ink(model_images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) model-space images -> (N, H, W) ink in [0, 1] (0 paper, 1 full ink).

    Each pixel is projected on the paper -> ink colour axis, then levelled per image the way a scanner
    would: the median of the margin (the 8 px frame, always paper in the data) is the paper, the 98th
    percentile the full ink (at least a third of the way to the ink colour). So a sample whose paper
    came out a little tinted or grey still reads by its strokes.
    """
    x = (model_images.float().clamp(-1, 1) + 1) / 2
    paper = torch.tensor(PAPER).view(1, 3, 1, 1)
    axis = torch.tensor(INK).view(1, 3, 1, 1) - paper
    projection = ((x - paper) * axis).sum(1) / axis.square().sum()  # (N, H, W): 0 paper, 1 ink
    frame = torch.ones(projection.shape[-2:], dtype=torch.bool)
    frame[MARGIN:-MARGIN, MARGIN:-MARGIN] = False
    low = projection[:, frame].median(dim=1).values.view(-1, 1, 1)
    high = torch.quantile(projection.flatten(1), 0.98, dim=1).view(-1, 1, 1)
    high = torch.maximum(high, low + 1 / 3)
    return ((projection - low) / (high - low)).clamp(0, 1)


def features(model_images: torch.Tensor) -> np.ndarray:
    """(N, 3, 64, 64) model-space images -> (N, 64) features: the middle 48 x 48's ink area-averaged to 8 x 8,
    scaled 0..16 (ink in the margin is ignored)."""
    inner = ink(model_images)[:, None, MARGIN : SIZE - MARGIN, MARGIN : SIZE - MARGIN]
    pooled = F.adaptive_avg_pool2d(inner, SOURCE)
    return (pooled.flatten(1) * 16).numpy().astype(np.float64)


def to_pil(model_images: torch.Tensor, scale: int = 1):
    """(N, 3, H, W) model-space images -> a list of PIL images (nearest-neighbour ``scale``)."""
    from PIL import Image

    pixels = ((model_images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    pictures = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in pixels]
    if scale != 1:
        pictures = [p.resize((p.width * scale, p.height * scale), Image.NEAREST) for p in pictures]
    return pictures


def grid(model_images: torch.Tensor, columns: int, scale: int = 1, gap: int = 2):
    """A PIL grid of (N, 3, H, W) model-space images, row-major, on a grey background."""
    from PIL import Image

    pictures = to_pil(model_images, scale)
    rows = (len(pictures) + columns - 1) // columns
    w, h = pictures[0].size
    canvas = Image.new("RGB", (columns * (w + gap) + gap, rows * (h + gap) + gap), (128, 128, 128))
    for index, picture in enumerate(pictures):
        canvas.paste(picture, (gap + (index % columns) * (w + gap), gap + (index // columns) * (h + gap)))
    return canvas


class Augmenter:
    """Random variations that keep a digit's meaning: shift, scale, slant (shear) and stroke weight.

    Never a rotation or a flip, which would turn a 6 into a 9. ``augmenter(index)`` renders the digits
    ``images[index]`` (model space), drawing from ``generator``.
    """

    def __init__(self, images, generator: torch.Generator):
        self.ink = upsample_ink(images)  # (N, 1, 64, 64) before the soft threshold
        self.generator = generator

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=self.generator)

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        n = len(index)
        scale = self._uniform(n, 0.88, 1.12)  # > 1 zooms out: the grid samples a wider area
        shear = self._uniform(n, -0.15, 0.15)  # slant
        shift = self._uniform(2 * n, -0.1, 0.1).view(n, 2)  # up to 3 px (the grid spans 2 units = 64 px)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = scale
        theta[:, 0, 1] = shear * scale
        theta[:, 1, 1] = scale
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, (n, 1, SIZE, SIZE), align_corners=False)
        ink_map = F.grid_sample(self.ink[index], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        weight = self._uniform(n, THRESHOLD - 0.1, THRESHOLD + 0.1)  # stroke weight
        return colorize(soft_threshold(ink_map, weight))


# -- the classifier -----------------------------------------------------------------------------


class DigitClassifier:
    """Reads a model-space image as a digit: ink area-averaged to 8 x 8, then an RBF SVM.

    Trained on the *rendered* training digits (rendered, then read back), as they are and in
    ``AUGMENTED_COPIES`` augmented copies (the model's training variations: shifted, scaled, slanted,
    thinner or bolder), so it reads what a good model draws. Fits in a few seconds.
    """

    AUGMENTED_COPIES = 4

    def __init__(self, split: Split | None = None):
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        split = split or load_split()
        augment = Augmenter(split.train_images, torch.Generator().manual_seed(SPLIT_SEED))
        index = torch.arange(len(split.train_labels))
        pictures = [to_model(split.train_images)] + [augment(index) for _ in range(self.AUGMENTED_COPIES)]
        labels = np.concatenate([split.train_labels] * (1 + self.AUGMENTED_COPIES))
        self.model = make_pipeline(StandardScaler(), SVC(C=10.0, gamma="scale"))
        self.model.fit(np.concatenate([features(p) for p in pictures]), labels)

    def predict(self, model_images: torch.Tensor) -> np.ndarray:
        """(N, 3, 64, 64) model-space images -> (N,) digits."""
        return self.model.predict(features(model_images))

    def held_out_accuracy(self, split: Split | None = None) -> float:
        split = split or load_split()
        return float((self.predict(to_model(split.test_images)) == split.test_labels).mean())


@lru_cache(maxsize=1)
def classifier() -> DigitClassifier:
    return DigitClassifier()
