"""The two samplers the benchmarks compare, run the same way over any IF-shaped UNet.

- :func:`run_ours`: this pack's ``sample_stage_1`` / ``sample_stage_2``, K candidates and N views in one
  batched UNet call per step.
- :func:`run_published`: the published per-view loop as ``tests/paper_reference.py`` restates it
  (``paper_stage_1`` / ``paper_stage_2``), one candidate per run, as the paper's ``generate.py`` samples.

Both see the same inputs: random prompt embeddings as wide as the UNet's text input, one negative embedding
shared by every view (IF's empty negative prompt encodes to the same tensor for each), the same views and,
at Stage II, random 64 px images to refine. Guidance 10 and Stage II noise level 50, the published defaults.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pack import import_submodule  # noqa: E402
from paper_reference import PAPER_VIEWS, paper_stage_1, paper_stage_2  # noqa: E402
from tiny_models import MAX_PROMPT_TOKENS, if_image_noising_scheduler, if_scheduler  # noqa: E402

sampling = import_submodule("sampling")
views = import_submodule("views")

#: Anagram views for an N-view illusion: the first N. Each shows the UNet a different image, so no UNet row is
#: shared and both samplers compute 2N rows per candidate and step.
ANAGRAM_VIEWS = ("identity", "rotate_cw", "flip", "negate")
GUIDANCE_SCALE = 10.0
NOISE_LEVEL = 50
STAGE_1_SIZE = 64  # what Stage II refines


def text_width(unet) -> int:
    """The width of the text embeddings the UNet takes (T5-XXL's 4096 for IF)."""
    return unet.config.encoder_hid_dim or unet.config.cross_attention_dim


def prompt_embeddings(num_views: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive (N, 77, width), negative (1, 77, width)): one prompt per view, one negative for all."""
    generator = torch.Generator().manual_seed(1)
    positive = torch.randn(num_views, MAX_PROMPT_TOKENS, width, generator=generator)
    negative = torch.randn(1, MAX_PROMPT_TOKENS, width, generator=generator)
    return positive, negative


def low_res_images(count: int) -> torch.Tensor:
    """Stage II's input: ``count`` random 64 px images in [-1, 1]."""
    return torch.rand(count, 3, STAGE_1_SIZE, STAGE_1_SIZE, generator=torch.Generator().manual_seed(2)) * 2 - 1


def reduction_for(view_names: Sequence[str]) -> str:
    """Factorized views add their components ("sum"); anagram views average ("mean")."""
    return "sum" if all(views.make_view(name).reduction == "sum" for name in view_names) else "mean"


def run_ours(
    unet,
    stage: int,
    view_names: Sequence[str],
    candidates: int,
    steps: int,
    *,
    share_unet_rows: bool = True,
    callback=None,
):
    """One run of this pack's sampler: ``candidates`` illusions at once, ``steps`` steps."""
    positive, negative = prompt_embeddings(len(view_names), text_width(unet))
    embeddings = sampling.PromptEmbeddings(positive, negative)
    view_list = [views.make_view(name) for name in view_names]
    common = dict(
        num_inference_steps=steps,
        guidance_scale=GUIDANCE_SCALE,
        reduction=reduction_for(view_names),
        share_unet_rows=share_unet_rows,
        callback=callback,
    )
    if stage == 1:
        return sampling.sample_stage_1(
            unet, if_scheduler(), view_list, embeddings, num_candidates=candidates, **common
        ).images
    return sampling.sample_stage_2(
        unet,
        if_scheduler(),
        if_image_noising_scheduler(),
        low_res_images(candidates),
        view_list,
        embeddings,
        noise_level=NOISE_LEVEL,
        **common,
    ).images


class PublishedPipeline:
    """What the published loop touches on a diffusers IF pipeline, around any UNet."""

    def __init__(self, unet):
        self.unet = unet
        self.scheduler = if_scheduler()
        self.image_noising_scheduler = if_image_noising_scheduler()

    def prepare_intermediate_images(self, batch, channels, height, width, dtype, device, generator):
        # As diffusers' IF pipelines: drawn on the CPU from the CPU generator, then moved.
        return torch.randn((batch, channels, height, width), generator=generator, dtype=dtype).to(device)

    def preprocess_image(self, image, num_images_per_prompt, device):
        return image.to(device=device, dtype=self.unet.dtype)


def run_published(pipe: PublishedPipeline, stage: int, view_names: Sequence[str], seed: int, steps: int):
    """One run of the published loop: one candidate (seed ``seed``), ``steps`` steps."""
    positive, negative = prompt_embeddings(len(view_names), text_width(pipe.unet))
    # The published pipeline encodes prompts in the UNet's dtype, one negative per view.
    positive = positive.to(pipe.unet.dtype)
    negative = negative.to(pipe.unet.dtype).expand_as(positive)
    paper_views = [PAPER_VIEWS[name]() for name in view_names]
    reduction = reduction_for(view_names)
    generator = torch.manual_seed(seed)  # as generate.py
    if stage == 1:
        return paper_stage_1(pipe, positive, negative, paper_views, steps, GUIDANCE_SCALE, generator, reduction)
    image = low_res_images(1)
    return paper_stage_2(
        pipe, image, positive, negative, paper_views, steps, GUIDANCE_SCALE, NOISE_LEVEL, generator, reduction
    )
