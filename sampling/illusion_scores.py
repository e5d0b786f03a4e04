"""How good an illusion is, by the Visual Anagrams paper's metrics, and candidates ranked by them.

Geng, Park & Owens (CVPR 2024, section 4.1) judge an N-view illusion ``x`` with prompts ``p_1..p_N`` by
CLIP's score matrix

    S_ij = cos(CLIP_image(v_i(x)), CLIP_text(p_j))      (view i of the picture against prompt j)

* **alignment** ``A = min_i S_ii``: the worst view's match with its own prompt (every view must read);
* **concealment** ``C = (tr(softmax_j(S / tau)) + tr(softmax_i(S / tau))) / (2N)``: CLIP used as a zero-shot
  classifier in both directions (which prompt does view i show; which view shows prompt j), averaged, so
  ``C`` is 1 when every view shows its own prompt and none of the others, and ``1/N`` when CLIP cannot tell
  the views apart. ``tau`` is CLIP's temperature (0.01 for OpenAI's CLIPs).

A view is shown as a person sees it (``View.preview``: a hybrid's low-pass view is the picture from afar).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import SamplingInputError

#: What candidates can be ranked by. "both": the mean of a candidate's places in the two rankings.
RANK_BY = ("both", "alignment", "concealment")
#: The paper's temperature: OpenAI CLIP's learned one (logit scale 100).
PAPER_TEMPERATURE = 0.01


@dataclass(frozen=True)
class IllusionScores:
    """The paper's scores of K candidates (float32, on the CPU)."""

    similarities: torch.Tensor  # (K, N, N): [k, i, j] = cos(view i of candidate k, prompt j)
    alignment: torch.Tensor  # (K,)
    concealment: torch.Tensor  # (K,)
    temperature: float

    @property
    def num_candidates(self) -> int:
        return self.similarities.shape[0]


def similarity_matrices(scorer, images: torch.Tensor, views: Sequence, texts: Sequence[str]) -> torch.Tensor:
    """S (K, N, N) for K candidates ``images`` (K, 3, S, S) in model space, N ``views`` and N ``texts``."""
    if len(views) != len(texts):
        raise SamplingInputError("prompts", f"{len(texts)} prompts for {len(views)} views: give one prompt per view")
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise SamplingInputError("images", f"expected (K, 3, S, S) pictures, got shape {tuple(images.shape)}")
    text = scorer.text_embeddings(list(texts))  # (N, D)
    # Every view of every candidate in one batch, view-major.
    viewed = torch.cat([view.preview(images) for view in views])
    image = scorer.image_embeddings(viewed).view(len(views), images.shape[0], -1)  # (N, K, D)
    return torch.einsum("ikd,jd->kij", image, text.to(image.device)).float().cpu()


def alignment_scores(similarities: torch.Tensor) -> torch.Tensor:
    """``A = min_i S_ii`` per candidate: (K,) from (K, N, N)."""
    return similarities.diagonal(dim1=-2, dim2=-1).min(-1).values


def concealment_scores(similarities: torch.Tensor, temperature: float) -> torch.Tensor:
    """``C``: the mean of the softmax diagonals over prompts (rows) and over views (columns), per candidate."""
    if not temperature > 0:
        raise SamplingInputError("temperature", f"must be positive, got {temperature}")
    logits = similarities.double() / temperature
    views = similarities.shape[-1]
    over_prompts = logits.softmax(-1).diagonal(dim1=-2, dim2=-1).sum(-1)
    over_views = logits.softmax(-2).diagonal(dim1=-2, dim2=-1).sum(-1)
    return ((over_prompts + over_views) / (2 * views)).float()


def score_illusions(
    scorer, images: torch.Tensor, views: Sequence, texts: Sequence[str], *, temperature: float | None = None
) -> IllusionScores:
    """The paper's scores of each candidate; ``temperature`` defaults to the scorer's own."""
    temperature = float(scorer.temperature if temperature is None else temperature)
    similarities = similarity_matrices(scorer, images, views, texts)
    return IllusionScores(
        similarities=similarities,
        alignment=alignment_scores(similarities),
        concealment=concealment_scores(similarities, temperature),
        temperature=temperature,
    )


def rank_candidates(scores: IllusionScores, by: str = "both") -> list[int]:
    """Candidate indices, best first. A candidate whose scores are not numbers (a broken CLIP output) comes last.

    "both" orders by the mean of a candidate's places in the alignment and the concealment rankings (the
    two scores live on different scales, so places, not values, are averaged); ties go to the better
    alignment, then to the earlier candidate.
    """
    if by not in RANK_BY:
        raise SamplingInputError("rank_by", f"{by!r} is not one of {', '.join(RANK_BY)}")
    alignment = _finite_or_worst(scores.alignment)
    concealment = _finite_or_worst(scores.concealment)
    candidates = range(scores.num_candidates)
    if by == "alignment":
        return sorted(candidates, key=lambda k: (-alignment[k], k))
    if by == "concealment":
        return sorted(candidates, key=lambda k: (-concealment[k], -alignment[k], k))
    place_a = _places(alignment)
    place_c = _places(concealment)
    return sorted(candidates, key=lambda k: (place_a[k] + place_c[k], -alignment[k], k))


def _finite_or_worst(values: torch.Tensor) -> list[float]:
    return [value if value == value and abs(value) != float("inf") else float("-inf") for value in values.tolist()]


def _places(values: list[float]) -> list[int]:
    """Each candidate's place (0 = best) when ordered by ``values``, higher first, ties by index."""
    order = sorted(range(len(values)), key=lambda k: (-values[k], k))
    places = [0] * len(values)
    for place, k in enumerate(order):
        places[k] = place
    return places
