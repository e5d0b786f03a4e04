"""The Illusion Score node: the Visual Anagrams paper's alignment and concealment scores of a batch of
candidates (sampling/illusion_scores.py), the candidates ranked by them, and a readable report."""

from __future__ import annotations

import logging
import math

import torch
from comfy_api.latest import io

from ..sampling import SamplingInputError
from ..sampling.illusion_scores import PAPER_TEMPERATURE, RANK_BY, IllusionScores, rank_candidates, score_illusions
from .choices import check_choice
from .comfy_rules import out_of_memory, out_of_memory_errors
from .images import check_image, to_model_space
from .labels import node_label
from .preview import caption_strip
from .sockets import check_sockets
from .types import CATEGORY, ClipScorer, Prompts, Views

logger = logging.getLogger(__name__)

#: The widget's bound: far more candidates than a batch holds in practice (a larger top_k takes them all).
MAX_TOP_K = 4096
MIN_TEMPERATURE = 0.001

SCORES_EXPLAINED = (
    "S_ij is the cosine similarity of CLIP's embeddings of view i of the picture and of prompt j. Alignment "
    "A = min_i S_ii: the worst view's match with its own prompt. Concealment C: CLIP used as a classifier both "
    "ways (which prompt does each view show, which view shows each prompt; softmax of S / temperature), the "
    "mean probability of the right answer: 1 when every view shows its own prompt only, 1/N when CLIP cannot "
    "tell the views apart."
)


def _check_inputs(node_cls: type[io.ComfyNode], images: torch.Tensor, views, prompts) -> torch.Tensor:
    """The candidates in model space, after checking they can be scored against these views and prompts."""
    label = node_label(node_cls)
    check_image(node_cls, "images", images, square=True)
    finite = torch.isfinite(images)
    if not bool(finite.all()):
        bad = [index + 1 for index, ok in enumerate(finite.flatten(1).all(1).tolist()) if not ok]
        raise ValueError(
            f"{label}: images: {int((~finite).sum())} pixel values are NaN or infinite (image"
            f"{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))} of {images.shape[0]}). Fix the node that "
            "made them, or replace those pixels: CLIP cannot score them."
        )
    size = images.shape[1]
    for index, view in enumerate(views):
        try:
            view.check_size(size)
        except ValueError as error:
            raise ValueError(
                f"{label}: views: view {index + 1} ({view.label}) cannot show {size} px images: {error}. Connect "
                "the views the illusions were made with."
            ) from error
    texts = list(prompts.texts)
    if len(texts) != len(views):
        raise ValueError(
            f"{label}: prompts: {len(texts)} prompts for {len(views)} views. Connect the prompts encoded for this "
            "view chain (the encoder the sampler used), one prompt per view."
        )
    return to_model_space(images)


def _check_settings(label: str, rank_by: str, top_k: int, temperature: float) -> None:
    """The widgets, checked here too: a node called outside ComfyUI's validation gets the same refusals."""
    check_choice(label, "rank_by", rank_by, RANK_BY)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"{label}: top_k {top_k!r} is not a whole number of at least 1: give 1 or more")
    if not (math.isfinite(temperature) and temperature >= MIN_TEMPERATURE):
        raise ValueError(
            f"{label}: temperature {temperature!r} must be a number of at least {MIN_TEMPERATURE}: give the paper's "
            f"{PAPER_TEMPERATURE} or another positive value"
        )


def _report(scores: IllusionScores, order: list[int], views, texts, rank_by: str) -> str:
    """Every candidate, best first: place, candidate (1-based), A, C, and each view's S_ii."""
    count, num_views = scores.num_candidates, len(views)
    pairs = list(zip(views, texts, strict=True))
    diagonal = scores.similarities.diagonal(dim1=-2, dim2=-1)  # (K, N)
    header = ["place", "candidate", "A", "C", *(f"S_{index}{index}" for index in range(1, num_views + 1))]
    rows = [
        [
            f"#{place}",
            str(k + 1),
            f"{float(scores.alignment[k]):.4f}",
            f"{float(scores.concealment[k]):.4f}",
            *(f"{float(value):.4f}" for value in diagonal[k]),
        ]
        for place, k in enumerate(order, start=1)
    ]
    table_rows = [header, *rows]
    widths = [max(len(row[column]) for row in table_rows) for column in range(len(header))]
    table = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in table_rows
    ]
    lines = [
        f"Illusion scores of {count} candidate{'s' if count != 1 else ''}, ranked by {rank_by} "
        f"(CLIP temperature {scores.temperature:g}).",
        *table,
        "Views: " + "; ".join(f"{index}. {view.label}: {text}" for index, (view, text) in enumerate(pairs, start=1)),
        SCORES_EXPLAINED,
    ]
    if rank_by == "both":
        lines.append("Ranked by both: the mean of a candidate's places in the A and the C rankings (ties: better A).")
    return "\n".join(lines)


def _captioned(picture: torch.Tensor, caption: str) -> torch.Tensor:
    """(S, S, 3) ComfyUI picture with ``caption`` in a strip below it."""
    return torch.cat([picture, caption_strip(caption, picture.shape[1]).to(picture)], dim=0)


class IllusionScore(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VisualAnagramsIllusionScore",
            display_name="Illusion Score",
            category=CATEGORY,
            description="Scores a batch of candidate illusions with the Visual Anagrams paper's metrics, alignment "
            "(every view shows its prompt) and concealment (no view shows another's), and passes on the best "
            "top_k, best first. Most samples are not good illusions: draw several candidates and keep the best. "
            f"{SCORES_EXPLAINED}",
            inputs=[
                ClipScorer.Input("clip", tooltip="From the CLIP Loader (illusion scoring)."),
                io.Image.Input(
                    "images",
                    tooltip="The candidates: a batch of square illusions (a sampler's output). Scored as they are, "
                    "at CLIP's own size; a noise-aware (GLIDE) CLIP scores them as clean pictures (timestep 0).",
                ),
                Views.Input("views", tooltip="The views the candidates were made with, in prompt order."),
                Prompts.Input(
                    "prompts",
                    tooltip="The prompts the candidates were made with (the Anagram Prompt Encoder's output); CLIP "
                    "reads them as the sampler did, style included.",
                ),
                io.Combo.Input(
                    "rank_by",
                    options=list(RANK_BY),
                    default="both",
                    tooltip="both: the mean of a candidate's places in the alignment and the concealment rankings. "
                    "alignment: the worst view's match with its prompt first. concealment: how surely CLIP tells "
                    "the views apart.",
                ),
                io.Int.Input(
                    "top_k",
                    default=2,
                    min=1,
                    max=MAX_TOP_K,
                    tooltip="How many of the best candidates to pass on (more than the batch holds: all of them, "
                    "ranked).",
                ),
                io.Float.Input(
                    "temperature",
                    default=PAPER_TEMPERATURE,
                    min=MIN_TEMPERATURE,
                    max=1.0,
                    step=0.001,
                    tooltip=f"The softmax temperature of concealment: the paper's is CLIP's own, {PAPER_TEMPERATURE} "
                    "(OpenAI's CLIPs learned it). Higher flattens the softmax (scores closer to 1/N); it does not "
                    "change alignment.",
                ),
            ],
            outputs=[
                io.Image.Output(display_name="best", tooltip="The top_k candidates, best first."),
                io.Image.Output(
                    display_name="scored",
                    tooltip="The same candidates, each with a caption below: its place, its number in the batch "
                    "(cand., from 1), A and C.",
                ),
                io.String.Output(
                    display_name="report",
                    tooltip="Every candidate, best first: place, candidate (from 1), A, C and each view's S_ii, "
                    "with the definitions.",
                ),
                io.Float.Output(
                    display_name="alignment", is_output_list=True, tooltip="A of the top_k candidates, best first."
                ),
                io.Float.Output(
                    display_name="concealment", is_output_list=True, tooltip="C of the top_k candidates, best first."
                ),
                io.Int.Output(
                    display_name="candidate",
                    is_output_list=True,
                    tooltip="The top_k candidates' places in the input batch (from 1), best first.",
                ),
            ],
        )

    @classmethod
    def execute(cls, clip, images, views, prompts, rank_by, top_k, temperature) -> io.NodeOutput:
        label = node_label(cls)
        check_sockets(cls, clip=clip, images=images, views=views, prompts=prompts)
        _check_settings(label, rank_by, top_k, temperature)
        pixels = _check_inputs(cls, images, views, prompts)
        count = pixels.shape[0]
        try:
            scores = score_illusions(clip.get(), pixels, list(views), list(prompts.texts), temperature=temperature)
        except SamplingInputError as error:
            raise ValueError(f"{label}: {error.input_name}: {error.problem}") from error
        except out_of_memory_errors() as error:
            raise out_of_memory(
                f"{label}: out of memory scoring {count} candidates under {len(views)} views: score fewer "
                "candidates at once, or load the CLIP in fp16 (or a smaller CLIP).",
                error,
            ) from error
        order = rank_candidates(scores, rank_by)
        if top_k > count:
            logger.info("%s: top_k %d is more than the %d candidates: passing on all of them", label, top_k, count)
        best = order[:top_k]
        captions = [
            # Short words, so that at Stage I's 64 px the strip's three lines still hold both scores.
            f"#{place} cand. {k + 1}  A={float(scores.alignment[k]):.3f}  C={float(scores.concealment[k]):.3f}"
            for place, k in enumerate(best, start=1)
        ]
        return io.NodeOutput(
            images[best],
            torch.stack([_captioned(images[k], caption) for k, caption in zip(best, captions, strict=True)]),
            _report(scores, order, list(views), list(prompts.texts), rank_by),
            [float(scores.alignment[k]) for k in best],
            [float(scores.concealment[k]) for k in best],
            [k + 1 for k in best],
        )
