"""Noise-vector balancing (Xu et al., *Diffusion-based Visual Anagram as Multi-task Learning*, WACV 2025;
github.com/Pixtella/Anagram-MTL, ``noise_vector_balancing``).

A plain mean lets one prompt dominate: the view that already shows its prompt keeps pulling while the
weaker one fades. MTL measures, at every step, how well each view already matches its prompt with CLIP,
``s_i = S_ii``, and weighs the views' noise estimates by

    alpha_i = s_i ** -(1 + step / T) / sum_j s_j ** -(1 + step / T)

(``step`` counts from 0, ``T`` is the number of steps): the weaker view weighs more, and more so as the
picture settles. The weights replace the plain mean's ``1/N`` (and feed the rectification factor when
that is on, as in MTL's loop); the learned variances are mixed with the same weights.

What CLIP looks at each step:

* **noise-aware CLIP** (GLIDE's, trained on noisy pictures; MTL's choice): each view of the noisy sample
  x_t at its timestep. MTL passes ``view(x_t) / 2 + 0.5`` to an encoder that expects [-1, 1] pictures;
  this module passes the same, so the weights are MTL's.
* **standard CLIP** (trained on clean pictures only, so it cannot judge x_t): each view of the clean
  estimate ``x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)``, eps the views' estimates combined with the
  plain weights at this step, clamped to [-1, 1] and shown as a person sees it (``View.preview``).

Guard rails MTL lacks: a cosine similarity can be 0 or negative, and a negative number to a fractional
power is NaN (MTL's weights then poison the step). Similarities are clamped to :data:`MIN_SIMILARITY`
first, and a candidate whose similarities are not numbers at all keeps the plain weights for the step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..views.base import NOISE_CHANNELS
from .errors import SamplingInputError

#: The smallest similarity the rule sees (see the module's guard rails).
MIN_SIMILARITY = 1e-3


def balancing_weights(
    similarities: torch.Tensor, step: int, total_steps: int, base: torch.Tensor | None = None
) -> torch.Tensor:
    """MTL's weights (V, K) from each view's similarity with its own prompt (V, K) at ``step`` of ``total_steps``.

    ``base`` (V,): the user's view weights, multiplied in before normalising (MTL has none: uniform).
    Each candidate's weights sum to 1.
    """
    similarities = similarities.double()
    uniform = torch.ones_like(similarities) if base is None else base.double().view(-1, 1).expand_as(similarities)
    alpha = similarities.clamp_min(MIN_SIMILARITY).pow(-(1.0 + step / total_steps)) * uniform
    broken = ~torch.isfinite(similarities).all(0)  # (K,) candidates with a NaN or inf similarity
    alpha[:, broken] = uniform[:, broken]
    return alpha / alpha.sum(0, keepdim=True)


class ViewBalancing:
    """The sampler option: balance the views with ``scorer`` (the pack's CLIP interface) against ``texts``,
    one text per view, as the prompts read (style included)."""

    def __init__(self, scorer, texts: Sequence[str]):
        self.scorer = scorer
        self.texts = tuple(texts)

    def check(self, num_views: int, reduction: str) -> None:
        if len(self.texts) != num_views:
            raise SamplingInputError(
                "balancing", f"{len(self.texts)} prompt texts for {num_views} views: give one text per view"
            )
        if reduction != "mean":
            raise SamplingInputError(
                "balancing",
                f"balancing weighs the views of a mean, not reduction '{reduction}': pick reduction 'mean' "
                "or turn balancing off",
            )

    def bind(self, views: Sequence, scheduler, *, total_steps: int, first_step: int, base_weights) -> BoundBalancing:
        """This option for one run: text embeddings made once, the schedule's length known."""
        return BoundBalancing(self.scorer, self.texts, views, scheduler, total_steps, first_step, base_weights)


class BoundBalancing:
    """Per-step weights for one run (see the module docstring for what the scorer sees)."""

    def __init__(self, scorer, texts, views, scheduler, total_steps: int, first_step: int, base_weights):
        self.scorer = scorer
        self.views = list(views)
        self.text = scorer.text_embeddings(list(texts))  # (V, D)
        self.alphas_cumprod = scheduler.alphas_cumprod
        self.total_steps = total_steps
        self.first_step = first_step
        self.base = base_weights  # (V,) or None
        # The plain mix's weights for the clean estimate, made once per run rather than at every step.
        self._plain_mix = (
            None if base_weights is None else (base_weights / base_weights.sum()).float().view(-1, 1, 1, 1, 1)
        )

    def weights(self, sample: torch.Tensor, estimates: torch.Tensor, timestep, step_index: int) -> torch.Tensor:
        """(V, K) weights for this step: ``sample`` x_t (K, C, S, S), ``estimates`` the views' guided estimates
        mapped back (V, K, C_out, S, S), ``step_index`` the step's place in the visited steps."""
        similarities = self.similarities(sample, estimates, timestep)
        weights = balancing_weights(similarities, self.first_step + step_index, self.total_steps, self.base)
        return weights.to(device=estimates.device, dtype=estimates.dtype)

    @torch.no_grad()
    def similarities(self, sample: torch.Tensor, estimates: torch.Tensor, timestep) -> torch.Tensor:
        """(V, K): each view of the picture against its own prompt."""
        num_views, num_candidates = estimates.shape[:2]
        if self.scorer.noise_aware:
            # MTL's input: the viewed noisy sample mapped as if it were in [-1, 1] (see the module docstring).
            pictures = torch.cat([view.view(sample) / 2 + 0.5 for view in self.views])
            timesteps = torch.full((pictures.shape[0],), int(timestep), dtype=torch.long)
        else:
            clean = self._clean_estimate(sample, estimates, timestep)
            pictures = torch.cat([view.preview(clean) for view in self.views])
            timesteps = None
        image = self.scorer.image_embeddings(pictures, timesteps).view(num_views, num_candidates, -1)
        return (image * self.text.to(image.device)[:, None, :]).sum(-1)

    def _clean_estimate(self, sample: torch.Tensor, estimates: torch.Tensor, timestep) -> torch.Tensor:
        noise = estimates[:, :, :NOISE_CHANNELS].float()
        noise = noise.mean(0) if self._plain_mix is None else (noise * self._plain_mix).sum(0)
        alpha_bar = self.alphas_cumprod[int(timestep)].float()
        clean = (sample.float() - (1 - alpha_bar).sqrt() * noise) / alpha_bar.sqrt()
        return clean.clamp(-1, 1)
