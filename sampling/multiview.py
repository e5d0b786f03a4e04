"""The multi-view noise estimate at the heart of Visual Anagrams.

At each step every view ``v_n`` shows the UNet ``v_n(x_t)`` with prompt ``n``;
the guided estimates are mapped back through ``v_n.inverse`` and combined
(Geng, Park & Owens, CVPR 2024). :class:`MultiViewDenoiser` does this for K
candidates at once with a single UNet call per step: the batch is laid out as

    [uncond(view 0, cand 0..K-1), ..., uncond(view N-1, ...),
     cond(view 0, cand 0..K-1),   ..., cond(view N-1, ...)]

which for K = 1 is exactly the published code's ``[neg_0..neg_N-1, pos_0..pos_N-1]``.

Rows that would compute the same thing are computed once (:class:`BatchPlan`): two
rows are the same when their views show the UNet the same tensor
(``View.unet_input_key``) and their prompt embeddings are equal. Factorized views all
show x_t itself and share the negative prompt, so their unconditional estimates
are one row: 2N·K rows per step become (N+1)·K. Identical views with identical
prompts share their conditional rows too. When nothing is shared the layout is the
one above, row for row.
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


@dataclass(frozen=True)
class BatchPlan:
    """Which UNet rows one step computes, for the views ``active``, and where each view's two estimates are.

    ``inputs`` are the views whose ``view`` is computed (one per distinct UNet input); ``rows`` are the UNet
    batch's rows, each (input slot, embedding index) and K candidates deep; ``uncond`` / ``cond`` give each
    active view's rows. Made once per set of active views.
    """

    inputs: tuple[int, ...]
    rows: tuple[tuple[int, int], ...]
    uncond: tuple[int, ...]
    cond: tuple[int, ...]

    @classmethod
    def build(cls, views: Sequence, active: Sequence[int], embedding_index, *, share: bool) -> BatchPlan:
        """``embedding_index(half, n)``: the index of view n's negative (half 0) or positive (half 1) embedding
        among the distinct embeddings. Without ``share`` every view gets rows of its own."""
        input_keys, inputs, rows = {}, [], {}
        placed: dict[int, list[int]] = {0: [], 1: []}
        for half in (0, 1):
            for n in active:
                input_key = views[n].unet_input_key() if share else n
                if input_key not in input_keys:
                    input_keys[input_key] = len(inputs)
                    inputs.append(n)
                row = (input_keys[input_key], embedding_index(half, n))
                key = row if share else (half, n)
                if key not in rows:
                    rows[key] = (len(rows), row)
                placed[half].append(rows[key][0])
        ordered = tuple(row for _, row in sorted(rows.values()))
        return cls(tuple(inputs), ordered, tuple(placed[0]), tuple(placed[1]))

    @property
    def in_published_layout(self) -> bool:
        """True when nothing is shared: the uncond rows of the views in order, then their cond rows."""
        count = len(self.uncond)
        return self.uncond == tuple(range(count)) and self.cond == tuple(range(count, 2 * count))


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
        share_rows: bool = True,
    ):
        """``class_labels`` (Stage II: the noise level) are per candidate, (K,). ``share_rows`` computes rows
        that would be the same once (:class:`BatchPlan`); off, every view gets rows of its own."""
        self.unet = unet
        self.views = list(views)
        self.num_views = len(self.views)
        self.num_candidates = num_candidates
        self.guidance_scale = guidance_scale
        self.reduction = reduction
        self.max_batch_size = max_batch_size
        self.share_rows = share_rows
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
        self._embeddings, self._embedding_index = _distinct_embeddings(negative, positive, share=share_rows)
        self._viewed_condition = (
            None if condition is None else torch.stack([view.view(condition) for view in self.views])
        )
        self._class_labels = class_labels
        # Per set of active views: its plan, and its rows' text embeddings and class labels.
        self._plans: dict[tuple[int, ...], tuple[BatchPlan, torch.Tensor, torch.Tensor | None]] = {}
        self._unet_input: torch.Tensor | None = None
        self._buffer_plan: BatchPlan | None = None
        self.balancing = balancing  # a BoundBalancing (MTL's per-step view weights) or None

    # -- one step ---------------------------------------------------------------------------
    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor, step_index: int) -> torch.Tensor:
        """The combined estimate (K, C_out, H, W) to hand to ``scheduler.step``."""
        if self.reduction == "alternate":
            # Only one view counts at this step, so only it goes through the UNet.
            active = (step_index % self.num_views,)
        else:
            active = tuple(range(self.num_views))
        guided = self._guided_estimates(sample, timestep, active)  # (len(active), K, C_out, H, W)
        inverted = torch.stack([self.views[n].inverse(estimate) for n, estimate in zip(active, guided, strict=True)])
        if self.balancing is not None:
            return self._reduce(inverted, self.balancing.weights(sample, inverted, timestep, step_index))
        return self._reduce(inverted)

    def plan(self, active: tuple[int, ...] | None = None) -> BatchPlan:
        """The UNet rows a step with the views ``active`` (default: all) computes."""
        return self._planned(tuple(range(self.num_views)) if active is None else tuple(active))[0]

    def _planned(self, active: tuple[int, ...]) -> tuple[BatchPlan, torch.Tensor, torch.Tensor | None]:
        """The plan for ``active`` with its rows' text embeddings and class labels, made once."""
        if active not in self._plans:
            plan = BatchPlan.build(
                self.views, active, lambda half, n: self._embedding_index[half, n], share=self.share_rows
            )
            k = self.num_candidates
            index = torch.tensor([embedding for _, embedding in plan.rows], device=self._embeddings.device)
            hidden_states = self._embeddings[index.repeat_interleave(k)]
            labels = None if self._class_labels is None else self._class_labels.repeat(len(plan.rows))
            self._plans[active] = (plan, hidden_states, labels)
        return self._plans[active]

    def _guided_estimates(self, sample: torch.Tensor, timestep: torch.Tensor, active: tuple[int, ...]) -> torch.Tensor:
        plan, hidden_states, class_labels = self._planned(active)
        k, channels = self.num_candidates, sample.shape[1]
        unet_input = self._input_buffer(sample, plan)
        first_row_of_input: dict[int, slice] = {}
        for row, (slot, _) in enumerate(plan.rows):
            rows = slice(row * k, (row + 1) * k)
            if slot in first_row_of_input:
                # The same view of the same sample (the other half of a guidance pair, or a shared input).
                unet_input[rows, :channels] = unet_input[first_row_of_input[slot], :channels]
            else:
                unet_input[rows, :channels] = self.views[plan.inputs[slot]].view(sample)
                first_row_of_input[slot] = rows

        output = self._unet(unet_input, timestep, hidden_states, class_labels).unflatten(0, (len(plan.rows), k))
        if plan.in_published_layout:
            active = len(plan.uncond)
            uncond, cond = output[:active], output[active:]
        else:
            # Gathered copies: a shared row stays intact for the other views reading it.
            uncond, cond = output[list(plan.uncond)], output[list(plan.cond)]
        # uncond + g * (cond - uncond) on the noise channels, in place; the
        # variance channels keep the conditional estimate, as IF's pipeline does.
        guided_noise = cond[:, :, :NOISE_CHANNELS]
        guided_noise.sub_(uncond[:, :, :NOISE_CHANNELS]).mul_(self.guidance_scale).add_(uncond[:, :, :NOISE_CHANNELS])
        return cond

    def _input_buffer(self, sample: torch.Tensor, plan: BatchPlan) -> torch.Tensor:
        """The UNet input, reused across steps; the Stage II condition is written when the plan changes."""
        k, channels = self.num_candidates, sample.shape[1]
        condition_channels = 0 if self._viewed_condition is None else self._viewed_condition.shape[2]
        shape = (len(plan.rows) * k, channels + condition_channels, *sample.shape[2:])
        if plan is not self._buffer_plan:
            if self._unet_input is None or self._unet_input.shape != shape:
                self._unet_input = sample.new_empty(shape)
            if self._viewed_condition is not None:
                for row, (slot, _) in enumerate(plan.rows):
                    self._unet_input[row * k : (row + 1) * k, channels:] = self._viewed_condition[plan.inputs[slot]]
            self._buffer_plan = plan
        return self._unet_input

    def _unet(self, unet_input: torch.Tensor, timestep: torch.Tensor, hidden_states, class_labels) -> torch.Tensor:
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


def _distinct_embeddings(
    negative: torch.Tensor, positive: torch.Tensor, *, share: bool
) -> tuple[torch.Tensor, dict[tuple[int, int], int]]:
    """The distinct prompt embeddings (E, L, D) and, for each (half, view) (half 0 negative, 1 positive), the
    index of its embedding. Equal means bit-equal: an empty negative shared by every view is one embedding."""
    table: list[torch.Tensor] = []
    index: dict[tuple[int, int], int] = {}
    for half, embeddings in enumerate((negative, positive)):
        for n, embedding in enumerate(embeddings):
            found = next((i for i, seen in enumerate(table) if share and torch.equal(seen, embedding)), None)
            if found is None:
                table.append(embedding)
                found = len(table) - 1
            index[half, n] = found
    return torch.stack(table), index
