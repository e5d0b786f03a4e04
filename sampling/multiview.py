"""The multi-view noise estimate at the heart of Visual Anagrams.

At each step every view ``v_n`` shows the UNet ``v_n(x_t)`` with prompt ``n``;
the guided estimates are mapped back through ``v_n.inverse`` and combined
(Geng, Park & Owens, CVPR 2024). :class:`MultiViewDenoiser` does this for K
candidates at once with a single UNet call per step: the batch is laid out as

    [uncond(view 0, cand 0..K-1), ..., uncond(view N-1, ...),
     cond(view 0, cand 0..K-1),   ..., cond(view N-1, ...)]

which for K = 1 is exactly the published code's ``[neg_0..neg_N-1, pos_0..pos_N-1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

# IF predicts 3 noise channels, then (optionally) 3 variance channels; the views know it too, so it has one home.
from ..views.base import NOISE_CHANNELS
from .rectification import rectified_mean

REDUCTIONS = ("mean", "sum", "alternate")


@dataclass(frozen=True)
class PromptEmbeddings:
    """Text embeddings for a multi-view run, one prompt per view, in view order.

    ``positive`` is (N, L, D). ``negative`` is (N, L, D) or (1, L, D), the
    latter shared by every view (IF's usual empty negative prompt).
    ``concept_spans`` (anti-segregation) gives, per prompt, the tokens ``[start, end)``
    of its concept word, or None where the word was cut off with the prompt's end.
    """

    positive: torch.Tensor
    negative: torch.Tensor
    concept_spans: tuple[tuple[int, int] | None, ...] | None = None

    @property
    def num_prompts(self) -> int:
        return self.positive.shape[0]


class MultiViewDenoiser:
    """Guided, view-combined noise estimates for K candidates, one UNet call per step.

    ``condition`` (Stage II) is the noise-augmented upsampled low-resolution
    image, concatenated to the noisy sample on the channel axis; views act on
    every channel alike, so each view of the constant condition is computed
    once here instead of once per step.
    """

    def __init__(
        self,
        unet,
        views: Sequence,
        embeddings: PromptEmbeddings,
        *,
        num_candidates: int,
        guidance_scale: float,
        reduction: str,
        view_weights: Sequence[float] | None,
        max_batch_size: int | None,
        device: torch.device,
        dtype: torch.dtype,
        rectify: bool = False,
        balancing=None,
        condition: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
    ):
        self.unet = unet
        self.views = list(views)
        self.num_views = len(self.views)
        self.num_candidates = num_candidates
        self.guidance_scale = guidance_scale
        self.reduction = reduction
        self.max_batch_size = max_batch_size
        self.weights = (
            None
            if view_weights is None
            else torch.tensor(list(view_weights), device=device, dtype=dtype).view(-1, 1, 1, 1, 1)
        )
        # MTL's rectified mean weighs the views with weights that sum to 1 (uniform without view weights).
        self._rectify_weights = None
        if rectify:
            raw = torch.ones(self.num_views, dtype=dtype) if view_weights is None else torch.tensor(list(view_weights))
            raw = raw.to(device=device, dtype=dtype)
            self._rectify_weights = raw / raw.sum()

        positive = embeddings.positive.to(device=device, dtype=dtype)
        negative = embeddings.negative.to(device=device, dtype=dtype).expand_as(positive)
        # Row order of the UNet batch: view-major, candidates inside each view.
        self._hidden_states = torch.cat(
            [negative.repeat_interleave(num_candidates, 0), positive.repeat_interleave(num_candidates, 0)]
        )
        self._viewed_condition = (
            None if condition is None else torch.stack([view.view(condition) for view in self.views])
        )
        self._class_labels = class_labels
        self._unet_input: torch.Tensor | None = None
        self.balancing = balancing  # a BoundBalancing (MTL's per-step view weights) or None

    # -- one step ---------------------------------------------------------------------------
    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor, step_index: int) -> torch.Tensor:
        """The combined estimate (K, C_out, H, W) to hand to ``scheduler.step``."""
        if self.reduction == "alternate":
            # Only one view counts at this step, so only it goes through the UNet.
            active = [step_index % self.num_views]
        else:
            active = list(range(self.num_views))
        guided = self._guided_estimates(sample, timestep, active)  # (len(active), K, C_out, H, W)
        inverted = torch.stack([self.views[n].inverse(estimate) for n, estimate in zip(active, guided, strict=True)])
        if self.balancing is not None:
            return self._reduce(inverted, self.balancing.weights(sample, inverted, timestep, step_index))
        return self._reduce(inverted)

    def _guided_estimates(self, sample: torch.Tensor, timestep: torch.Tensor, active: list[int]) -> torch.Tensor:
        k = self.num_candidates
        rows = len(active) * k
        unet_input = self._input_buffer(sample, active)
        for slot, n in enumerate(active):
            unet_input[slot * k : (slot + 1) * k, : sample.shape[1]] = self.views[n].view(sample)
        # Classifier-free guidance: the conditional half sees the same viewed inputs.
        unet_input[rows:, : sample.shape[1]] = unet_input[:rows, : sample.shape[1]]

        output = self._unet(unet_input, timestep, self._batch_rows(active))
        uncond, cond = output[:rows], output[rows:]
        # uncond + g * (cond - uncond) on the noise channels, in place; the
        # variance channels keep the conditional estimate, as IF's pipeline does.
        guided_noise = cond[:, :NOISE_CHANNELS]
        guided_noise.sub_(uncond[:, :NOISE_CHANNELS]).mul_(self.guidance_scale).add_(uncond[:, :NOISE_CHANNELS])
        return cond.unflatten(0, (len(active), k))

    def _input_buffer(self, sample: torch.Tensor, active: list[int]) -> torch.Tensor:
        """The UNet input, reused across steps; the Stage II condition is written once."""
        k = self.num_candidates
        rows = 2 * len(active) * k
        condition_channels = 0 if self._viewed_condition is None else self._viewed_condition.shape[2]
        shape = (rows, sample.shape[1] + condition_channels, *sample.shape[2:])
        if self.reduction == "alternate" or self._unet_input is None:
            if self._unet_input is None or self._unet_input.shape != shape:
                self._unet_input = sample.new_empty(shape)
            if self._viewed_condition is not None:
                condition = self._viewed_condition[active].flatten(0, 1)
                self._unet_input[:, sample.shape[1] :] = torch.cat([condition, condition])
        return self._unet_input

    def _batch_rows(self, active: list[int]) -> slice | torch.Tensor:
        """Which rows of the full (all views) text/label batch the active views use."""
        if len(active) == self.num_views:
            return slice(None)
        k, total = self.num_candidates, self.num_views * self.num_candidates
        rows = [half * total + n * k + j for half in (0, 1) for n in active for j in range(k)]
        return torch.tensor(rows, device=self._hidden_states.device)

    def _unet(self, unet_input: torch.Tensor, timestep: torch.Tensor, rows) -> torch.Tensor:
        hidden_states = self._hidden_states[rows]
        class_labels = None if self._class_labels is None else self._class_labels[rows]
        chunk = self.max_batch_size or unet_input.shape[0]
        outputs = [
            self.unet(
                unet_input[start : start + chunk],
                timestep,
                encoder_hidden_states=hidden_states[start : start + chunk],
                class_labels=None if class_labels is None else class_labels[start : start + chunk],
                return_dict=False,
            )[0]
            for start in range(0, unet_input.shape[0], chunk)
        ]
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _reduce(self, inverted: torch.Tensor, balanced: torch.Tensor | None = None) -> torch.Tensor:
        """Combine per-view estimates (V, K, C_out, H, W) into one (K, C_out, H, W); ``balanced`` (V, K) are
        this step's balancing weights (each candidate's sum to 1), used instead of the fixed ones."""
        if self.reduction == "alternate":
            return inverted[0]
        noise, variance = inverted[:, :, :NOISE_CHANNELS], inverted[:, :, NOISE_CHANNELS:]
        if balanced is not None:
            per_view = balanced.view(*balanced.shape, 1, 1, 1)
            noise = rectified_mean(noise, balanced) if self._rectify_weights is not None else (noise * per_view).sum(0)
            variance = (variance * per_view).sum(0)
        elif self._rectify_weights is not None:
            noise = rectified_mean(noise, self._rectify_weights)
            variance = (variance * self._rectify_weights.view(-1, 1, 1, 1, 1)).sum(0)
        elif self.weights is None:
            # Factorized views ("sum") add their components; variances are always averaged.
            noise = noise.sum(0) if self.reduction == "sum" else noise.mean(0)
            variance = variance.mean(0)
        else:
            normalised = self.weights / self.weights.sum()
            noise = (noise * (self.weights if self.reduction == "sum" else normalised)).sum(0)
            variance = (variance * normalised).sum(0)
        return torch.cat([noise, variance], dim=1)
