"""Anti-segregation (Xu et al., *Diffusion-based Visual Anagram as Multi-task Learning*, WACV 2025;
github.com/Pixtella/Anagram-MTL, ``sepen.py``, ``attn_utils.py``, ``samplers_mtl.py``).

Averaging the views' noise estimates lets each prompt's subject settle in a region of its own:
a deer on the left, a waterfall on the right, instead of one picture that reads as both. MTL
counters this in Stage I's early steps. After the scheduler step gives ``x_{t-1}``, the UNet
looks at each view of ``x_{t-1}`` (at the next timestep, with that view's prompt); the cross-
attention every pixel pays to the prompt's *concept word* is read from the attention layers
of the down and up blocks at one resolution (IF-I: 32 px), summed over heads and layers, and
mapped back through the view's inverse. For each pair of views the overlap of their maps,
``sum(min(a_i, a_j)) / sum(a_i + a_j)`` (at most 1/2), is pulled towards a target
(``0.5 - 0.05 * (views - 1)``): the loss is the mean ``|target - overlap|`` over the pairs,
and ``x_{t-1}`` takes one gradient step of size 5 against it.

The attention is recorded by processors installed on this UNet's attention layers for the
one extra call and restored after it: no diffusers class is changed, and no other model (nor
this one outside the call) sees a difference. Each image (candidate) is refined on its own;
its views go through the UNet in one batch, or, with ``max_batch_size`` smaller than the
number of views, one chunk at a time (the maps first, then each chunk's gradient), so memory
stays bounded by one chunk's backward pass.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from .errors import SamplingInputError

#: MTL reads the attention layers of these parts of the UNet (not the middle block).
BLOCK_PREFIXES = {"down": "down_blocks.", "up": "up_blocks.", "mid": "mid_block."}


@dataclass(frozen=True)
class AntiSegregation:
    """Anti-segregation's settings; the defaults are Anagram-MTL's.

    ``steps``: refine after each of the first ``steps`` denoising steps (MTL: 26 of 30, its
    ``i <= 25``; never after the last step, which has no next timestep). ``step_size``: the
    gradient step (MTL: SGD with learning rate 5). ``attention_size``: the side, in pixels, of
    the attention maps read; None takes the largest size at which the chosen blocks attend
    (32 for IF-I, MTL's choice). ``target`` and ``target_per_extra_view`` give the overlap
    target ``target - target_per_extra_view * (views - 1)``.
    """

    step_size: float = 5.0
    steps: int = 26
    attention_size: int | None = None
    target: float = 0.5
    target_per_extra_view: float = 0.05
    blocks: tuple[str, ...] = ("down", "up")

    def overlap_target(self, num_views: int) -> float:
        return self.target - self.target_per_extra_view * (num_views - 1)

    def applies_after(self, step_index: int, total_steps: int) -> bool:
        return step_index < self.steps and step_index + 1 < total_steps

    def check(self) -> None:
        if not math.isfinite(self.step_size) or self.step_size < 0:
            raise SamplingInputError(
                "anti-segregation", f"step size must be a finite number >= 0, got {self.step_size}"
            )
        if self.steps < 0:
            raise SamplingInputError("anti-segregation", f"steps must be >= 0, got {self.steps}")
        if self.attention_size is not None and self.attention_size < 1:
            raise SamplingInputError(
                "anti-segregation", f"attention size must be a positive number of pixels, got {self.attention_size}"
            )
        unknown = [block for block in self.blocks if block not in BLOCK_PREFIXES]
        if unknown or not self.blocks:
            raise SamplingInputError(
                "anti-segregation", f"blocks must be some of {', '.join(BLOCK_PREFIXES)}, got {list(self.blocks)}"
            )


def overlap_loss(maps: torch.Tensor, target: float) -> torch.Tensor:
    """MTL's anti-segregation loss of one image's per-view concept maps (V, S, S), V >= 2."""
    flat = maps.flatten(1)
    first, second = torch.triu_indices(len(flat), len(flat), offset=1, device=flat.device)
    shared = torch.minimum(flat[first], flat[second]).sum(1)
    overlap = shared / (flat[first] + flat[second]).sum(1)
    return (target - overlap).abs().mean()


class ConceptAttentionRecorder:
    """An attention processor for IF's layers that also records how much each query pixel attends
    to its prompt's concept tokens.

    It computes what diffusers' ``AttnAddedKVProcessor2_0`` computes (IF's attention: the keys are the
    text tokens, projected by ``add_k_proj``, followed by the image's own tokens) with the softmax
    written out, as MTL's own processor does, and appends ``(layer name, concept attention (B, L))``
    to ``records``.
    """

    def __init__(self, name: str, records: list, token_mask: torch.Tensor):
        self.name = name
        self.records = records
        self.token_mask = token_mask  # (B, T): 1 on each row's concept tokens

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        residual = hidden_states
        batch, channels = hidden_states.shape[:2]
        hidden_states = hidden_states.view(batch, channels, -1).transpose(1, 2)
        pixels = hidden_states.shape[1]
        attention_mask = attn.prepare_attention_mask(attention_mask, pixels, batch, out_dim=4)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        # (B, heads, tokens, head_dim); keys and values: the text tokens, then the image's own.
        query = attn.head_to_batch_dim(attn.to_q(hidden_states), out_dim=4)
        key = attn.head_to_batch_dim(attn.add_k_proj(encoder_hidden_states), out_dim=4)
        value = attn.head_to_batch_dim(attn.add_v_proj(encoder_hidden_states), out_dim=4)
        if not attn.only_cross_attention:
            key = torch.cat([key, attn.head_to_batch_dim(attn.to_k(hidden_states), out_dim=4)], dim=2)
            value = torch.cat([value, attn.head_to_batch_dim(attn.to_v(hidden_states), out_dim=4)], dim=2)
        # Scaled dot-product attention written out, as MTL's processor computes it, to keep the weights.
        scores = query @ key.transpose(-2, -1) * query.shape[-1] ** -0.5
        if attention_mask is not None:
            scores = scores + attention_mask
        probabilities = scores.softmax(dim=-1)  # (B, heads, L, T [+ L])

        tokens = self.token_mask.shape[1]
        per_image = probabilities.sum(1)[..., :tokens]  # (B, L, T)
        concept = (per_image * self.token_mask[:, None, :].to(per_image.dtype)).sum(-1)
        self.records.append((self.name, concept))

        hidden_states = (probabilities @ value).transpose(1, 2).reshape(batch, -1, residual.shape[1])
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        return hidden_states.transpose(-1, -2).reshape(residual.shape) + residual


def attention_layers(unet, blocks: Sequence[str]) -> dict[str, torch.nn.Module]:
    """The attention modules of ``blocks`` ("down", "up", "mid"), by name."""
    prefixes = tuple(BLOCK_PREFIXES[block] for block in blocks)
    return {
        name: module
        for name, module in unet.named_modules()
        if name.startswith(prefixes) and hasattr(module, "set_processor") and hasattr(module, "processor")
    }


def attention_sizes(unet, blocks: Sequence[str]) -> list[int]:
    """The sides, in pixels, of the square maps at which ``blocks`` cross-attend, from the UNet's config.

    In diffusers' UNet2DConditionModel every down block but the last halves the size, so down block
    ``b`` runs at ``sample_size / 2**b``, up block ``b`` at ``sample_size / 2**(n - 1 - b)`` and the
    middle block at the smallest size. A block attends when its type has "Attn" in its name.
    """
    config = unet.config
    size, count = config.sample_size, len(config.down_block_types)
    sizes = set()
    if "down" in blocks:
        sizes |= {size // 2**b for b, kind in enumerate(config.down_block_types) if "Attn" in kind}
    if "up" in blocks:
        sizes |= {size // 2 ** (count - 1 - b) for b, kind in enumerate(config.up_block_types) if "Attn" in kind}
    if "mid" in blocks and config.mid_block_type and "Attn" in config.mid_block_type:
        sizes.add(size // 2 ** (count - 1))
    return sorted(sizes)


def attention_size(unet, settings: AntiSegregation) -> int:
    """The attention size anti-segregation reads: the one asked for, or the largest the blocks attend at."""
    sizes = attention_sizes(unet, settings.blocks)
    if not sizes:
        raise SamplingInputError(
            "anti-segregation",
            f"this UNet's {' / '.join(settings.blocks)} blocks have no cross-attention to read; turn it off",
        )
    wanted = settings.attention_size
    if wanted is None:
        return sizes[-1]
    if wanted not in sizes:
        raise SamplingInputError(
            "anti-segregation",
            f"attention size {wanted} px: this UNet's {' / '.join(settings.blocks)} blocks attend at "
            f"{', '.join(f'{s} px' for s in sizes)}; pick one of those (or 0 for the largest)",
        )
    return wanted


def readable_attention_layers(unet, blocks: Sequence[str]) -> dict[str, torch.nn.Module]:
    """The attention modules of ``blocks`` a recorder can read (IF's), or an error naming the problem."""
    layers = attention_layers(unet, blocks)
    if not layers:
        raise SamplingInputError(
            "anti-segregation", f"this UNet has no attention layers in its {' / '.join(blocks)} blocks to read"
        )
    plain = [name for name, module in layers.items() if getattr(module, "add_k_proj", None) is None]
    if plain:
        raise SamplingInputError(
            "anti-segregation",
            f"it reads DeepFloyd IF's attention (text keys through add_k_proj); layer {plain[0]} of this UNet is "
            "another kind. Turn anti-segregation off for this model",
        )
    return layers


@contextlib.contextmanager
def recording_concept_attention(layers: dict[str, torch.nn.Module], token_mask: torch.Tensor) -> Iterator[list]:
    """Record concept attention in ``layers`` for the calls made inside; the processors are restored after."""
    records: list = []
    originals = {name: module.processor for name, module in layers.items()}
    try:
        for name, module in layers.items():
            module.set_processor(ConceptAttentionRecorder(name, records, token_mask))
        yield records
    finally:
        for name, module in layers.items():
            module.set_processor(originals[name])


class AntiSegregationStep:
    """Refines ``x_{t-1}`` of every candidate once, as MTL does after an early denoising step."""

    def __init__(
        self,
        settings: AntiSegregation,
        unet,
        scheduler,
        views: Sequence,
        positive: torch.Tensor,
        concept_spans: Sequence[tuple[int, int]],
        *,
        max_batch_size: int | None,
        device: torch.device,
        dtype: torch.dtype,
    ):
        self.settings = settings
        self.unet = unet
        self.scheduler = scheduler
        self.views = list(views)
        self.chunk = max_batch_size or len(self.views)
        self.target = settings.overlap_target(len(self.views))
        self.size = attention_size(unet, settings)
        # Found (and checked) once: every early step of every candidate records the same layers.
        self.layers = readable_attention_layers(unet, settings.blocks)
        if any(parameter.is_inference() for parameter in unet.parameters()):
            raise SamplingInputError(
                "model",
                "anti-segregation takes gradients through the UNet, and its weights were made under "
                "torch.inference_mode(), which autograd refuses: load the model outside inference mode "
                "(load_if_stage does)",
            )
        # A copy made here, outside inference mode (see stages._autograd_off): the prompts may have
        # been encoded inside it, and autograd saves these for the backward pass.
        self.hidden_states = positive.to(device=device, dtype=dtype).clone()
        self.token_mask = torch.zeros(positive.shape[:2], device=device)
        for row, (start, end) in enumerate(concept_spans):
            self.token_mask[row, start:end] = 1.0

    def __call__(self, sample: torch.Tensor, next_timestep: torch.Tensor) -> torch.Tensor:
        """``sample`` (K, C, H, W) after one step of size ``step_size`` down each candidate's loss gradient."""
        with torch.enable_grad():
            refined = [self._refine(sample[k : k + 1].clone(), next_timestep) for k in range(sample.shape[0])]
        return torch.cat(refined)

    def _refine(self, image: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        image.requires_grad_(True)
        if self.chunk >= len(self.views):
            loss = overlap_loss(self._concept_maps(image, timestep, range(len(self.views))), self.target)
            (gradient,) = torch.autograd.grad(loss, image)
        else:
            gradient = self._chunked_gradient(image, timestep)
        return (image - self.settings.step_size * gradient).detach()

    def _chunked_gradient(self, image: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """The same gradient, one chunk of views in the UNet at a time: d loss / d maps first (the
        maps are small), then each chunk's maps backpropagated with their share of it."""
        chunks = [
            range(start, min(start + self.chunk, len(self.views))) for start in range(0, len(self.views), self.chunk)
        ]
        with torch.no_grad():
            maps = torch.cat([self._concept_maps(image, timestep, rows) for rows in chunks])
        maps.requires_grad_(True)
        (map_gradient,) = torch.autograd.grad(overlap_loss(maps, self.target), maps)
        gradient = torch.zeros_like(image)
        for rows in chunks:
            chunk_maps = self._concept_maps(image, timestep, rows)
            (part,) = torch.autograd.grad(chunk_maps, image, grad_outputs=map_gradient[rows.start : rows.stop])
            gradient += part
        return gradient

    def _concept_maps(self, image: torch.Tensor, timestep: torch.Tensor, rows: range) -> torch.Tensor:
        """Each view's concept attention map (len(rows), S, S), in the picture's own frame."""
        viewed = torch.cat([self.views[n].view(image) for n in rows])
        unet_input = self.scheduler.scale_model_input(viewed, timestep)
        token_mask = self.token_mask[rows.start : rows.stop]
        with recording_concept_attention(self.layers, token_mask) as records:
            self.unet(unet_input, timestep, encoder_hidden_states=self.hidden_states[rows.start : rows.stop])
        # The loss in fp32 at least (fp16 sums of attention lose too much), float64 kept.
        work = torch.promote_types(image.dtype, torch.float32)
        chosen = [concept.to(work) for _, concept in records if concept.shape[1] == self.size**2]
        if not chosen:
            raise SamplingInputError(
                "anti-segregation", f"no attention layer of this UNet ran at {self.size} px; turn anti-segregation off"
            )
        maps = sum(chosen).view(len(rows), 1, self.size, self.size)
        return torch.cat([self.views[n].inverse(maps[i : i + 1]) for i, n in enumerate(rows)])[:, 0]
