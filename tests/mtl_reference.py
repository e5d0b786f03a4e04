"""An independent, deliberately plain re-statement of Anagram-MTL's sampling loops.

github.com/Pixtella/Anagram-MTL (Xu et al., *Diffusion-based Visual Anagram as Multi-task
Learning*, WACV 2025): ``visual_anagrams/samplers_mtl.py`` ``sample_stage_1`` / ``sample_stage_2``,
``mtl.py`` ``noise_vector_rectification``, ``sepen.py`` ``anti_seg_loss`` and ``attn_utils.py``
(``register_attention_control``, ``AttentionStore``, ``aggregate_viewed_attention``), restated step
by step in the style of ``paper_reference.py``: one unbatched image, Python loops over views and
view pairs, diffusers pipeline objects, and nothing from this pack.

Noise-vector *balancing* (``mtl.py`` ``noise_vector_balancing`` / ``calc_alignment_noise_aware``): with
``similarity`` given, every step's weights are ``diag(S) ** (-1 - i / steps)`` normalised, S the
similarity matrix of each view of the noisy sample, passed as MTL passes it (``viewed / 2 + 0.5``), at
timestep t. ``similarity(images, t)`` stands in for GLIDE's noise-aware CLIP (MTL hard-codes ``i / 30``
for its 30 steps; here ``steps``). Without it, fixed ``weights`` (``None``: uniform) are used.

Kept as MTL has it, although it looks accidental:

* the anti-segregation attention maps are mapped back with each view's ``inverse_view`` applied
  to a (1, res, res) map, so the paper's negate view (which negates the first three channels)
  negates the whole map;
* concept spans are found on the prompt text exactly as given, while IF encodes the
  lower-cased, stripped text.

Differences from MTL that change a result only by rounding: MTL swaps every attention layer's
forward for an explicit-softmax one for the whole run; here only the anti-segregation pass of
the layers it reads (down and up blocks) computes attention that way, the denoising passes use
the UNet's own processors. MTL takes the gradient with ``loss.backward()`` and an SGD step
(lr 5); here ``torch.autograd.grad`` gives the same gradient without filling the shared UNet's
``.grad`` fields. (Rounding is not negligible over a run: IF's early steps divide the noise
estimate by sqrt(alpha_bar), so float32 ulps in the estimate reach about 1e-5 after five steps.)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from diffusers.utils.torch_utils import randn_tensor


def mtl_concept_spans(tokenizer, prompts: list[str]) -> list[tuple[int, int]]:
    """MTL's concept_idxs: for each prompt, the token span [start, end) of its last word (split on ' '),
    found by tokenizing the word alone (dropping its final </s> token) and searching the prompt's tokens."""
    spans = []
    for prompt in prompts:
        concept = prompt.split(" ")[-1]
        concept_ids = tokenizer(concept)["input_ids"][:-1]
        prompt_ids = tokenizer(prompt)["input_ids"]
        length = len(concept_ids)
        # MTL's search range stops one short of the end, which only excludes the final </s>.
        for start in range(len(prompt_ids) - length):
            if prompt_ids[start : start + length] == concept_ids:
                spans.append((start, start + length))
                break
        else:
            # MTL appends nothing and fails later with an IndexError.
            raise ValueError(f"the last word {concept!r} is not a token span of {prompt!r}")
    return spans


def _mtl_balancing_weights(similarity, viewed, t, step, steps):
    """MTL's noise_vector_balancing: alpha = diag(S) ** (-1 - step / steps) from the viewed noisy images."""
    sim_mat = similarity(viewed / 2.0 + 0.5, t)
    diag = np.diag(np.asarray(sim_mat))
    return torch.tensor(np.power(diag, -1 - step / steps))


def _mtl_combine(noise_pred, views, guidance_scale, noise_channels, rectify, weights):
    """Guided, inverse-viewed estimates -> MTL's weighted (and optionally rectified) combination."""
    uncond, cond = noise_pred.chunk(2)
    uncond = torch.stack([view.inverse_view(pred) for pred, view in zip(uncond, views, strict=True)])
    cond = torch.stack([view.inverse_view(pred) for pred, view in zip(cond, views, strict=True)])
    uncond, _ = uncond.split(noise_channels, dim=1)
    cond, variance = cond.split(noise_channels, dim=1)
    noise = uncond + guidance_scale * (cond - uncond)

    count = len(views)
    weights = torch.ones(count) if weights is None else torch.as_tensor(weights)
    alpha = weights.to(noise.dtype)
    alpha = alpha / alpha.sum()

    scale = 1.0
    if rectify:
        # Variance of sum_i alpha_i eps_i for unit-variance eps_i correlated by rho_ij.
        combined_var_of_noise = 0.0
        for i in range(count):
            combined_var_of_noise = combined_var_of_noise + alpha[i] ** 2
            for j in range(i + 1, count):
                rho = (noise[i] * noise[j]).mean()
                combined_var_of_noise = combined_var_of_noise + 2 * rho * alpha[i] * alpha[j]
        scale = 1 / combined_var_of_noise**0.5
    # MTL scales the weights (alpha_ = alpha * c), then sums; the variance keeps the plain weights.
    combined_noise = sum((alpha[i] * scale) * noise[i] for i in range(count))
    combined_variance = sum(alpha[i] * variance[i] for i in range(count))
    return torch.cat([combined_noise[None], combined_variance[None]], dim=1)


class _CapturingAttention:
    """AttnAddedKVProcessor2_0's computation with an explicit softmax (as MTL's patched forward),
    recording the conditional half's probabilities summed over heads: (views, queries, keys)."""

    def __init__(self, captured: list):
        self.captured = captured

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None):
        residual = hidden_states
        hidden_states = hidden_states.view(hidden_states.shape[0], hidden_states.shape[1], -1).transpose(1, 2)
        batch_size, sequence_length, _ = hidden_states.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size, out_dim=4)

        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.head_to_batch_dim(attn.to_q(hidden_states), out_dim=4)
        text_keys = attn.head_to_batch_dim(attn.add_k_proj(encoder_hidden_states), out_dim=4)
        text_values = attn.head_to_batch_dim(attn.add_v_proj(encoder_hidden_states), out_dim=4)
        if attn.only_cross_attention:
            keys, values = text_keys, text_values
        else:
            # Keys are the text tokens first, then the image's own tokens.
            keys = torch.cat([text_keys, attn.head_to_batch_dim(attn.to_k(hidden_states), out_dim=4)], dim=2)
            values = torch.cat([text_values, attn.head_to_batch_dim(attn.to_v(hidden_states), out_dim=4)], dim=2)

        scores = query @ keys.transpose(-2, -1) * query.shape[-1] ** -0.5
        if attention_mask is not None:
            scores = scores + attention_mask
        probabilities = torch.softmax(scores, dim=-1)  # (batch, heads, queries, keys)
        # The CFG batch is [neg..., pos...]: MTL's store keeps the second (conditional) half.
        self.captured.append(probabilities[batch_size // 2 :].sum(dim=1))

        hidden_states = probabilities @ values
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, residual.shape[1])
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        hidden_states = hidden_states.transpose(-1, -2).reshape(residual.shape)
        return hidden_states + residual


def _down_and_up_attention_layers(unet):
    """MTL registers every ``Attention`` under the UNet's down/up/mid children and reads down and up."""
    blocks = [*unet.down_blocks, *unet.up_blocks]
    return [module for block in blocks for module in block.modules() if isinstance(module, Attention)]


def _concept_attention_maps(unet, model_input, timestep, embeds, views, concept_spans, attention_size):
    """(N, res, res): each view's attention to its concept tokens, mapped back by its inverse view,
    summed over the down/up attention layers whose query count is attention_size ** 2."""
    layers = _down_and_up_attention_layers(unet)
    captured = []
    original_processors = [layer.processor for layer in layers]
    try:
        for layer in layers:
            layer.processor = _CapturingAttention(captured)
        unet(model_input, timestep, encoder_hidden_states=embeds, return_dict=False)
    finally:
        for layer, processor in zip(layers, original_processors, strict=True):
            layer.processor = processor

    res = attention_size
    per_layer = []
    for probabilities in captured:  # (N, queries, keys) per layer, in call order
        if probabilities.shape[1] != res * res:
            continue
        inverted = []
        for index, (view, (start, end)) in enumerate(zip(views, concept_spans, strict=True)):
            concept_map = probabilities[index, :, start:end].sum(dim=-1).view(res, res)
            inverted.append(view.inverse_view(concept_map[None])[0])
        per_layer.append(torch.stack(inverted))
    if not per_layer:
        raise ValueError(f"no down/up attention layer runs at {res}x{res}")
    return torch.stack(per_layer).sum(dim=0)


def _anti_segregation_loss(maps):
    """sepen.anti_seg_loss: mean over view pairs of |0.5 - (N-1)*0.05 - overlap(a_i, a_j)|."""
    count = maps.shape[0]
    flat = maps.view(count, -1)
    target = 0.5 - (count - 1) * 0.05
    pair_losses = []
    for i in range(count):
        for j in range(i + 1, count):
            overlap = torch.minimum(flat[i], flat[j]).sum() / (flat[i] + flat[j]).sum()
            pair_losses.append(torch.abs(target - overlap))
    return sum(pair_losses) / len(pair_losses)


def _anti_segregation_step(unet, scheduler, images, timestep, embeds, views, concept_spans, step_size, attention_size):
    """One SGD step on x_{t-1} against the anti-segregation loss of the UNet's attention at timestep."""
    with torch.enable_grad():
        images = images.detach().requires_grad_(True)
        viewed = torch.stack([view.view(images[0]) for view in views])
        model_input = scheduler.scale_model_input(torch.cat([viewed] * 2), timestep)
        maps = _concept_attention_maps(unet, model_input, timestep, embeds, views, concept_spans, attention_size)
        loss = _anti_segregation_loss(maps)
        (gradient,) = torch.autograd.grad(loss, images)
    return (images - step_size * gradient).detach()


@torch.no_grad()
def mtl_stage_1(
    pipe,
    prompt_embeds,
    negative_prompt_embeds,
    views,
    steps,
    guidance_scale,
    generator,
    *,
    rectify=True,
    weights=None,
    similarity=None,
    concept_spans=None,
    anti_segregation_steps=26,
    step_size=5.0,
    attention_size=32,
):
    device = torch.device("cpu")
    size = pipe.unet.config.sample_size
    embeds = torch.cat([negative_prompt_embeds, prompt_embeds])
    pipe.scheduler.set_timesteps(steps, device=device)
    timesteps = pipe.scheduler.timesteps
    images = pipe.prepare_intermediate_images(
        1, pipe.unet.config.in_channels, size, size, embeds.dtype, device, generator
    )
    for i, t in enumerate(timesteps):
        viewed = torch.stack([view.view(images[0]) for view in views])
        model_input = pipe.scheduler.scale_model_input(torch.cat([viewed] * 2), t)
        noise_pred = pipe.unet(model_input, t, encoder_hidden_states=embeds, return_dict=False)[0]
        if similarity is not None:
            weights = _mtl_balancing_weights(similarity, viewed, t, i, steps)
        noise_pred = _mtl_combine(noise_pred, views, guidance_scale, model_input.shape[1], rectify, weights)
        images = pipe.scheduler.step(noise_pred, t, images, generator=generator, return_dict=False)[0]
        # MTL: `i <= 25` with timesteps[i + 1] (it indexes past the end when steps <= 26; here that step
        # is skipped). Its loss needs a view pair (one view divides by zero), so one view skips it too.
        if concept_spans is not None and i < anti_segregation_steps and i + 1 < len(timesteps) and len(views) > 1:
            images = _anti_segregation_step(
                pipe.unet,
                pipe.scheduler,
                images,
                timesteps[i + 1],
                embeds,
                views,
                concept_spans,
                step_size,
                attention_size,
            )
    return images


@torch.no_grad()
def mtl_stage_2(
    pipe,
    image,
    prompt_embeds,
    negative_prompt_embeds,
    views,
    steps,
    guidance_scale,
    noise_level,
    generator,
    *,
    rectify=True,
    weights=None,
    similarity=None,
):
    device = torch.device("cpu")
    size = pipe.unet.config.sample_size
    embeds = torch.cat([negative_prompt_embeds, prompt_embeds])
    pipe.scheduler.set_timesteps(steps, device=device)
    images = pipe.prepare_intermediate_images(
        1, pipe.unet.config.in_channels // 2, size, size, embeds.dtype, device, generator
    )
    image = pipe.preprocess_image(image, 1, device)
    upscaled = F.interpolate(image, (size, size), mode="bilinear", align_corners=True)
    levels = torch.tensor([noise_level] * upscaled.shape[0], device=device)
    noise = randn_tensor(upscaled.shape, generator=generator, device=device, dtype=upscaled.dtype)
    upscaled = pipe.image_noising_scheduler.add_noise(upscaled, noise, timesteps=levels)
    levels = torch.cat([levels] * len(views) * 2)
    for i, t in enumerate(pipe.scheduler.timesteps):
        model_input = torch.cat([images, upscaled], dim=1)
        viewed = torch.stack([view.view(model_input[0]) for view in views])
        model_input = pipe.scheduler.scale_model_input(torch.cat([viewed] * 2), t)
        noise_pred = pipe.unet(model_input, t, encoder_hidden_states=embeds, class_labels=levels, return_dict=False)[0]
        if similarity is not None:
            # MTL scores the noisy image's channels of the viewed UNet input.
            weights = _mtl_balancing_weights(similarity, viewed[:, :3], t, i, steps)
        noise_pred = _mtl_combine(noise_pred, views, guidance_scale, model_input.shape[1] // 2, rectify, weights)
        images = pipe.scheduler.step(noise_pred, t, images, generator=generator, return_dict=False)[0]
    return images
