"""Anagram-MTL's noise-vector balancing: the weight rule by hand, its guard rails, faithfulness to the
restated MTL loop (tests/mtl_reference.py) on the tiny IF models, what a standard CLIP is shown, and
refusals."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtl_reference import mtl_stage_1, mtl_stage_2
from pack import import_submodule
from paper_reference import PAPER_VIEWS
from test_mtl import FAITHFUL, GUIDANCE, PROMPTS, STAGE_1_STEPS, STAGE_2_STEPS, VIEW_SETS, embeddings_for
from tiny_models import if_scheduler

sampling = import_submodule("sampling")
views = import_submodule("views")
balancing = import_submodule("sampling.balancing")

BALANCED_STAGE_2 = 3e-5  # fp32, see test_balanced_stage_1_and_2_match_mtl


class FakeClip:
    """A deterministic stand-in for a CLIP (the pack's scorer interface): embeddings from pooled pixels and
    the timestep, all near one common direction so similarities stay positive (as real CLIP scores of
    pictures and captions do) but differ between views, candidates and steps."""

    def __init__(self, *, noise_aware: bool, dim: int = 8, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.noise_aware = noise_aware
        self.image_size = 64
        self.temperature = 0.01
        self.device, self.dtype = torch.device("cpu"), torch.float32
        # float64 throughout, so a float64 run's weights are exact to float64 rounding on both sides.
        self.projection = torch.randn(3 * 4 * 4, dim, generator=generator, dtype=torch.float64)
        self.time_direction = torch.randn(dim, generator=generator, dtype=torch.float64)
        self.common = torch.full((dim,), 3.0, dtype=torch.float64)
        self.calls = []

    def text_embeddings(self, texts):
        rows = [
            torch.randn(
                len(self.common), generator=torch.Generator().manual_seed(sum(map(ord, t))), dtype=torch.float64
            )
            for t in texts
        ]
        return F.normalize(self.common + torch.stack(rows), dim=-1)

    def image_embeddings(self, images, timesteps=None):
        self.calls.append((images.clone(), None if timesteps is None else timesteps.clone()))
        features = F.adaptive_avg_pool2d(images.double(), 4).flatten(1) @ self.projection
        if timesteps is not None:
            features = features + (timesteps.double() / 1000)[:, None] * self.time_direction
        return F.normalize(self.common + features, dim=-1)

    def release(self):
        pass


def similarity_for(clip, texts):
    """The reference's stand-in for MTL's calc_alignment_noise_aware: the (N, N) matrix at timestep t."""

    def similarity(images, t):
        timesteps = torch.full((images.shape[0],), int(t))
        return (clip.image_embeddings(images, timesteps) @ clip.text_embeddings(texts).T).numpy()

    return similarity


# -- the rule ---------------------------------------------------------------------------------------------


def test_weights_follow_mtls_rule_on_a_hand_computed_case():
    similarities = torch.tensor([[0.2, 0.3], [0.4, 0.3]])  # (views, candidates)
    at_start = balancing.balancing_weights(similarities, step=0, total_steps=10)
    # step 0: alpha ~ 1 / s -> candidate 0: (5, 2.5) / 7.5; candidate 1: equal similarities, equal weights
    assert at_start[:, 0].tolist() == pytest.approx([2 / 3, 1 / 3])
    assert at_start[:, 1].tolist() == pytest.approx([0.5, 0.5])
    halfway = balancing.balancing_weights(similarities, step=5, total_steps=10)
    weaker, stronger = 0.2**-1.5, 0.4**-1.5
    assert halfway[:, 0].tolist() == pytest.approx([weaker / (weaker + stronger), stronger / (weaker + stronger)])
    # The weaker view weighs more, and more so as the steps go.
    assert halfway[0, 0] > at_start[0, 0] > 0.5


def test_user_view_weights_multiply_the_balanced_ones():
    similarities = torch.tensor([[0.2], [0.4]])
    weights = balancing.balancing_weights(similarities, step=0, total_steps=10, base=torch.tensor([1.0, 3.0]))
    assert weights[:, 0].tolist() == pytest.approx([5 / (5 + 7.5), 7.5 / (5 + 7.5)])


def test_nonpositive_and_nan_similarities_give_finite_weights():
    similarities = torch.tensor([[-0.3, 0.0, float("nan")], [0.5, 0.5, 0.5]])
    weights = balancing.balancing_weights(similarities, step=3, total_steps=10)
    assert torch.isfinite(weights).all()
    assert weights.sum(0).tolist() == pytest.approx([1.0, 1.0, 1.0])
    # A negative or zero similarity counts as the smallest one: its view weighs most.
    assert weights[0, 0] == weights[0, 1] > 0.99
    # A candidate with a NaN similarity keeps the plain weights for the step (MTL's rule gives NaN there).
    assert weights[:, 2].tolist() == [0.5, 0.5]
    with np.errstate(invalid="ignore"):
        assert math.isnan(np.power(np.float32(-0.3), -1 - 3 / 10))  # what MTL's code does with it


# -- faithful to MTL's loop ----------------------------------------------------------------------------------


def test_balanced_stage_1_and_2_match_mtl(stage_1_pipe, stage_2_pipe, encode):
    """fp32: within rounding. Balanced estimates are reweighted every step, so the two loops' different UNet
    batches round apart faster than plain ones: measured 6e-6 (Stage I, 3 steps), 1.9e-5 (Stage II)."""
    _check_balanced_run_matches_mtl(3, stage_1_pipe, stage_2_pipe, encode, (FAITHFUL, BALANCED_STAGE_2))


def test_balanced_float64_runs_agree_to_rounding(stage_1_pipe, encode):
    """The same formulas, not merely close ones (measured: both stages agree to 1e-12 in float64 too;
    Stage I alone here, as Stage II at 256 px in float64 is slow)."""
    pipe = copy.deepcopy(stage_1_pipe)
    pipe.unet.to(torch.float64)
    _check_balanced_run_matches_mtl(2, pipe, None, encode, (1e-12, None), dtype=torch.float64)


def _check_balanced_run_matches_mtl(count, stage_1_pipe, stage_2_pipe, encode, tolerances, dtype=torch.float32):
    names = VIEW_SETS[count]
    embeddings = embeddings_for(stage_1_pipe, encode, count)
    embeddings = sampling.PromptEmbeddings(embeddings.positive.to(dtype), embeddings.negative.to(dtype))
    texts = PROMPTS[:count]
    clip = FakeClip(noise_aware=True)
    similarity = similarity_for(clip, texts)
    paper_views = [PAPER_VIEWS[n]() for n in names]
    generator = torch.manual_seed(5)
    expected_1 = mtl_stage_1(
        stage_1_pipe,
        embeddings.positive,
        embeddings.negative,
        paper_views,
        STAGE_1_STEPS,
        GUIDANCE,
        generator,
        similarity=similarity,
    )
    option = balancing.ViewBalancing(clip, texts)
    ours_1 = sampling.sample_stage_1(
        stage_1_pipe.unet,
        stage_1_pipe.scheduler,
        [views.make_view(n) for n in names],
        embeddings,
        seed=5,
        num_inference_steps=STAGE_1_STEPS,
        guidance_scale=GUIDANCE,
        rectify=True,
        balancing=option,
    )
    assert ours_1.images.dtype == dtype
    assert (ours_1.images - expected_1).abs().max() <= tolerances[0]
    if stage_2_pipe is None:
        return
    expected_2 = mtl_stage_2(
        stage_2_pipe,
        expected_1,
        embeddings.positive,
        embeddings.negative,
        paper_views,
        STAGE_2_STEPS,
        GUIDANCE,
        50,
        generator,
        similarity=similarity,
    )
    ours_2 = sampling.sample_stage_2(
        stage_2_pipe.unet,
        stage_2_pipe.scheduler,
        stage_2_pipe.image_noising_scheduler,
        expected_1,
        [views.make_view(n) for n in names],
        embeddings,
        generators=ours_1.generators,
        num_inference_steps=STAGE_2_STEPS,
        guidance_scale=GUIDANCE,
        rectify=True,
        balancing=option,
    )
    assert (ours_2.images - expected_2).abs().max() <= tolerances[1]
    # Balancing is not a no-op: MTL's loop with uniform weights gives another picture.
    uniform = mtl_stage_1(
        stage_1_pipe,
        embeddings.positive,
        embeddings.negative,
        paper_views,
        STAGE_1_STEPS,
        GUIDANCE,
        torch.manual_seed(5),
    )
    assert (uniform - expected_1).abs().max() > 1e-4


def test_a_scorer_that_returns_nan_leaves_the_rectified_run_bit_for_bit(stage_1_pipe, encode):
    class BrokenClip(FakeClip):
        def image_embeddings(self, images, timesteps=None):
            return torch.full((images.shape[0], len(self.common)), float("nan"))

    names = VIEW_SETS[3]
    embeddings = embeddings_for(stage_1_pipe, encode, 3)

    def run(**options):
        return sampling.sample_stage_1(
            stage_1_pipe.unet,
            stage_1_pipe.scheduler,
            [views.make_view(n) for n in names],
            embeddings,
            num_candidates=2,
            num_inference_steps=STAGE_1_STEPS,
            guidance_scale=GUIDANCE,
            rectify=True,
            **options,
        ).images

    broken = balancing.ViewBalancing(BrokenClip(noise_aware=False), PROMPTS)
    assert torch.equal(run(balancing=broken), run())


# -- what the scorer sees --------------------------------------------------------------------------------------


def bound(clip, names, *, base=None, total_steps=10, first_step=0):
    view_list = [views.make_view(n) for n in names]
    option = balancing.ViewBalancing(clip, PROMPTS[: len(names)])
    return option.bind(
        view_list, if_scheduler(), total_steps=total_steps, first_step=first_step, base_weights=base
    ), view_list


def test_a_standard_clip_sees_each_view_of_the_clean_estimate():
    clip = FakeClip(noise_aware=False)
    balancer, view_list = bound(clip, ["identity", "flip"])
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 3, 64, 64, generator=generator)
    estimates = torch.randn(2, 2, 6, 64, 64, generator=generator)  # (views, candidates, noise + variance)
    timestep = 700
    balancer.similarities(sample, estimates, timestep)
    alpha_bar = if_scheduler().alphas_cumprod[timestep]
    clean = ((sample - (1 - alpha_bar).sqrt() * estimates[:, :, :3].mean(0)) / alpha_bar.sqrt()).clamp(-1, 1)
    (pictures, timesteps) = clip.calls[-1]
    assert timesteps is None
    expected = torch.cat([view.preview(clean) for view in view_list])
    assert (pictures - expected).abs().max() <= 1e-6


def test_a_noise_aware_clip_sees_mtls_input_at_the_timestep():
    clip = FakeClip(noise_aware=True)
    balancer, view_list = bound(clip, ["identity", "rotate_cw"])
    sample = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    balancer.similarities(sample, torch.zeros(2, 2, 6, 64, 64), 433)
    pictures, timesteps = clip.calls[-1]
    assert torch.equal(pictures, torch.cat([view.view(sample) / 2 + 0.5 for view in view_list]))
    assert timesteps.tolist() == [433] * 4


def test_each_candidate_gets_its_own_weights_and_the_exponent_counts_skipped_steps():
    clip = FakeClip(noise_aware=True)
    sample = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    estimates = torch.zeros(2, 2, 6, 64, 64)
    balancer, _ = bound(clip, ["identity", "flip"], total_steps=10, first_step=4)
    weights = balancer.weights(sample, estimates, 500, step_index=1)
    similarities = balancer.similarities(sample, estimates, 500)
    assert torch.allclose(weights, balancing.balancing_weights(similarities, 5, 10).float())
    assert weights.sum(0).tolist() == pytest.approx([1.0, 1.0])
    assert not torch.allclose(weights[:, 0], weights[:, 1])


# -- refusals ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["sum", "alternate"])
def test_balancing_needs_the_mean(reduction, stage_1_pipe, encode):
    embeddings = embeddings_for(stage_1_pipe, encode, 2)
    option = balancing.ViewBalancing(FakeClip(noise_aware=False), PROMPTS[:2])
    with pytest.raises(sampling.SamplingInputError, match="reduction 'mean'") as caught:
        sampling.sample_stage_1(
            stage_1_pipe.unet,
            stage_1_pipe.scheduler,
            [views.make_view("identity"), views.make_view("flip")],
            embeddings,
            num_inference_steps=2,
            reduction=reduction,
            balancing=option,
        )
    assert caught.value.input_name == "balancing"


def test_balancing_needs_one_text_per_view(stage_1_pipe, encode):
    embeddings = embeddings_for(stage_1_pipe, encode, 2)
    option = balancing.ViewBalancing(FakeClip(noise_aware=False), PROMPTS[:3])
    with pytest.raises(sampling.SamplingInputError, match="3 prompt texts for 2 views"):
        sampling.sample_stage_1(
            stage_1_pipe.unet,
            stage_1_pipe.scheduler,
            [views.make_view("identity"), views.make_view("flip")],
            embeddings,
            num_inference_steps=2,
            balancing=option,
        )
