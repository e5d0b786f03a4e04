"""Noise variance rectification (Xu et al., *Diffusion-based Visual Anagram as Multi-task Learning*,
WACV 2025; github.com/Pixtella/Anagram-MTL, ``noise_vector_rectification``).

A weighted mean of the views' noise estimates is not unit-variance noise: if each estimate
``eps_i`` is, and two estimates correlate by ``rho_ij``, then ``sum_i a_i eps_i`` has variance

    s^2 = sum_i a_i^2 + 2 sum_{i<j} rho_ij a_i a_j,

less than 1 whenever the views disagree. MTL estimates ``rho_ij`` as ``mean(eps_i * eps_j)``
over the whole estimate (every channel and pixel, per image) and divides the mean by ``s``.
The learned variance channels are combined with the plain weights, without that factor.

With one view ``s = 1``: the mean is returned unchanged. With two identical views the factor
is ``1 / sqrt((1 + mean(eps^2)) / 2)``, not 1: MTL's estimate of the correlation assumes each
estimate has a second moment of exactly 1, which a real estimate has only approximately.
"""

from __future__ import annotations

import torch

#: ``s^2`` is clamped from below, so estimates that cancel out (it can reach 0 or, with the
#: estimate ``mean(eps_i * eps_j)``, below it) give a large but finite gain instead of inf or NaN.
MIN_COMBINED_VARIANCE = 1e-4


def rectified_mean(noise: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """MTL's rectified combination of per-view noise estimates.

    ``noise`` is (V, K, C, H, W): V views' estimates for K images, already guided and mapped
    back through each view's inverse. ``weights`` (V,) sum to 1, or (V, K) per image (balancing), each
    image's summing to 1. Returns (K, C, H, W): ``sum_i (weights_i * c_k) noise_i[k]``, with ``c_k`` the
    rectification factor of image k (applied to the weights first, as MTL does, so the sums round as MTL's).
    """
    views = noise.shape[0]
    # fp32 at least: correlations of fp16 / bf16 estimates lose too much in the sums.
    work = torch.promote_types(noise.dtype, torch.float32)
    alpha = weights.to(work)
    if alpha.dim() == 1:
        alpha = alpha[:, None].expand(views, noise.shape[1])  # (V, K): the same weights for every image
    # s^2 summed in MTL's order (each view's alpha^2, then its pairs), so it rounds as MTL's does.
    variance = torch.zeros(noise.shape[1], device=noise.device, dtype=work)  # (K,)
    for i in range(views):
        variance += alpha[i] ** 2
        for j in range(i + 1, views):
            # mean(eps_i * eps_j) per image: MTL's estimate of the correlation.
            rho = (noise[i].to(work) * noise[j].to(work)).flatten(1).mean(1)
            variance += 2 * rho * alpha[i] * alpha[j]
    gain = 1 / variance.clamp_min(MIN_COMBINED_VARIANCE) ** 0.5  # (K,)
    scaled = (alpha * gain[None, :]).to(noise.dtype)  # (V, K)
    return (noise * scaled.view(*scaled.shape, *([1] * (noise.dim() - 2)))).sum(0)
