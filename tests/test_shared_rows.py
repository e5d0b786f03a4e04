"""UNet rows computed once: factorized views share their unconditional estimate ((N+1)·K rows per step
instead of 2N·K), identical views with identical prompts share everything, and nothing else is shared.

Exactness: with ``max_batch_size`` = K every UNet chunk holds one row's K candidates, so a shared row and
the rows it replaces are computed by the same kernels on the same batch: the images are bit-identical.
With the whole batch in one call the batch size differs, and CPU kernels round differently by batch size,
so the images agree within fp32 rounding (amplified by guidance over the steps).
"""

from __future__ import annotations

import pytest
import torch
from test_sampling import (
    BATCH_CHANGE_TOLERANCE,
    GUIDANCE,
    PROMPTS,
    STAGE_1_STEPS,
    STAGE_2_STEPS,
    counting_unet_calls,
    embeddings_for,
    run_stage_1,
    run_stage_2,
)

from pack import import_submodule
from paper_reference import PAPER_VIEWS, paper_stage_1, paper_stage_2

sampling = import_submodule("sampling")
views = import_submodule("views")

CANDIDATES = 2
FACTORIZED = {
    2: ["low_pass", "high_pass"],
    3: ["triple_low_pass", "triple_medium_pass", "triple_high_pass"],
}


def rows_per_step(calls: list[int], steps: int) -> int:
    assert len(calls) % steps == 0
    per_step = [sum(calls[i * len(calls) // steps : (i + 1) * len(calls) // steps]) for i in range(steps)]
    assert len(set(per_step)) == 1, per_step
    return per_step[0]


@pytest.mark.parametrize("count", sorted(FACTORIZED))
def test_factorized_views_share_the_unconditional_row_bit_for_bit(count, stage_1_pipe, encode):
    names = FACTORIZED[count]
    embeddings = embeddings_for(encode, count)
    options = dict(num_candidates=CANDIDATES, reduction="sum", max_batch_size=CANDIDATES, seed=5)
    with counting_unet_calls(stage_1_pipe.unet) as calls:
        shared = run_stage_1(stage_1_pipe, names, embeddings, **options)
    assert rows_per_step(calls, STAGE_1_STEPS) == (count + 1) * CANDIDATES
    with counting_unet_calls(stage_1_pipe.unet) as calls:
        unshared = run_stage_1(stage_1_pipe, names, embeddings, share_unet_rows=False, **options)
    assert rows_per_step(calls, STAGE_1_STEPS) == 2 * count * CANDIDATES
    assert torch.equal(shared.images, unshared.images)


def test_factorized_sharing_in_one_call_agrees_within_fp32_rounding(stage_1_pipe, encode):
    embeddings = embeddings_for(encode, 2)
    options = dict(num_candidates=CANDIDATES, reduction="sum", seed=7)
    with counting_unet_calls(stage_1_pipe.unet) as calls:
        shared = run_stage_1(stage_1_pipe, FACTORIZED[2], embeddings, **options)
    assert calls == [3 * CANDIDATES] * STAGE_1_STEPS
    unshared = run_stage_1(stage_1_pipe, FACTORIZED[2], embeddings, share_unet_rows=False, **options)
    assert (shared.images - unshared.images).abs().max() <= BATCH_CHANGE_TOLERANCE
    # Not trivially equal: another seed is far away.
    other = run_stage_1(stage_1_pipe, FACTORIZED[2], embeddings, **{**options, "seed": 8})
    assert (other.images - shared.images).abs().max() > 0.1


def test_stage_2_shares_the_row_with_its_condition_and_noise_level(stage_1_pipe, stage_2_pipe, encode):
    names = FACTORIZED[2]
    embeddings = embeddings_for(encode, 2)
    low_res = run_stage_1(stage_1_pipe, names, embeddings, num_candidates=CANDIDATES, reduction="sum").images
    options = dict(reduction="sum", max_batch_size=CANDIDATES, seed=9)
    with counting_unet_calls(stage_2_pipe.unet) as calls:
        shared = run_stage_2(stage_2_pipe, low_res, names, embeddings, **options)
    assert rows_per_step(calls, STAGE_2_STEPS) == 3 * CANDIDATES
    unshared = run_stage_2(stage_2_pipe, low_res, names, embeddings, share_unet_rows=False, **options)
    assert torch.equal(shared.images, unshared.images)


@pytest.mark.parametrize("stage", [1, 2])
def test_shared_factorized_run_matches_the_published_loop(stage, stage_1_pipe, stage_2_pipe, encode):
    """The published loop (one row per view and half, N negative prompts) against ours with its row shared."""
    names = FACTORIZED[2]
    positive, negative = encode(PROMPTS[:2])
    paper_views = [PAPER_VIEWS[n]() for n in names]
    generator = torch.manual_seed(4)
    expected = paper_stage_1(stage_1_pipe, positive, negative, paper_views, STAGE_1_STEPS, GUIDANCE, generator, "sum")
    embeddings = sampling.PromptEmbeddings(positive, negative)
    with counting_unet_calls(stage_1_pipe.unet) as calls:
        ours = run_stage_1(stage_1_pipe, names, embeddings, seed=4, reduction="sum")
    assert calls == [3] * STAGE_1_STEPS  # the N negative prompts are bit-equal, so one row
    if stage == 2:
        # Both refine the published Stage I image with the same generator state, so only Stage II's rows differ.
        continued = torch.Generator().set_state(generator.get_state())
        ours = run_stage_2(stage_2_pipe, expected, names, embeddings, generators=[continued], reduction="sum")
        expected = paper_stage_2(
            stage_2_pipe, expected, positive, negative, paper_views, STAGE_2_STEPS, GUIDANCE, 50, generator, "sum"
        )
    assert (ours.images - expected).abs().max() <= BATCH_CHANGE_TOLERANCE


def test_anagram_views_share_nothing_and_keep_the_published_layout(stage_1_pipe, encode):
    names = ["identity", "flip", "rotate_cw"]
    embeddings = embeddings_for(encode, 3)
    with counting_unet_calls(stage_1_pipe.unet) as calls:
        shared = run_stage_1(stage_1_pipe, names, embeddings, num_candidates=CANDIDATES)
    assert calls == [2 * 3 * CANDIDATES] * STAGE_1_STEPS
    unshared = run_stage_1(stage_1_pipe, names, embeddings, num_candidates=CANDIDATES, share_unet_rows=False)
    assert torch.equal(shared.images, unshared.images)


def test_identical_views_with_identical_prompts_share_both_rows(stage_1_pipe, encode):
    positive, negative = encode([PROMPTS[0]])
    embeddings = sampling.PromptEmbeddings(positive.repeat(2, 1, 1), negative)
    options = dict(num_candidates=CANDIDATES, max_batch_size=CANDIDATES, seed=2)
    with counting_unet_calls(stage_1_pipe.unet) as calls:
        shared = run_stage_1(stage_1_pipe, ["flip", "flip"], embeddings, **options)
    assert rows_per_step(calls, STAGE_1_STEPS) == 2 * CANDIDATES
    unshared = run_stage_1(stage_1_pipe, ["flip", "flip"], embeddings, share_unet_rows=False, **options)
    assert torch.equal(shared.images, unshared.images)


def test_distinct_negative_prompts_are_not_shared(stage_1_pipe, encode):
    positive, negative = encode(PROMPTS[:2])
    other_negative, _ = encode(["blurry, low quality"])
    embeddings = sampling.PromptEmbeddings(positive, torch.cat([negative[:1], other_negative]))
    with counting_unet_calls(stage_1_pipe.unet) as calls:
        run_stage_1(stage_1_pipe, FACTORIZED[2], embeddings, num_candidates=CANDIDATES, reduction="sum")
    assert calls == [2 * 2 * CANDIDATES] * STAGE_1_STEPS


def test_same_view_with_other_parameters_is_another_input(stage_1_pipe, encode):
    """patch_permute with two seeds shows the UNet two different pictures: no row may be shared."""
    chain = [views.make_view("patch_permute", seed=1), views.make_view("patch_permute", seed=2)]
    assert chain[0].unet_input_key() != chain[1].unet_input_key()
    positive, negative = encode([PROMPTS[0]])
    embeddings = sampling.PromptEmbeddings(positive.repeat(2, 1, 1), negative)
    with counting_unet_calls(stage_1_pipe.unet) as calls:
        sampling.sample_stage_1(
            stage_1_pipe.unet, stage_1_pipe.scheduler, chain, embeddings, num_inference_steps=STAGE_1_STEPS
        )
    assert calls == [4] * STAGE_1_STEPS


def test_the_plan_of_a_factorized_step():
    """The batch layout itself: one unconditional row first, then each view's conditional row."""
    embeddings = sampling.PromptEmbeddings(torch.randn(3, 4, 8), torch.zeros(1, 4, 8))
    chain = [views.make_view(name) for name in FACTORIZED[3]]
    denoiser = sampling.MultiViewDenoiser(
        None,
        chain,
        embeddings,
        num_candidates=1,
        guidance_scale=GUIDANCE,
        reduction="sum",
        view_weights=None,
        max_batch_size=None,
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
    plan = denoiser.plan()
    assert plan.inputs == (0,)
    assert plan.rows == ((0, 0), (0, 1), (0, 2), (0, 3))
    assert plan.uncond == (0, 0, 0) and plan.cond == (1, 2, 3)
    assert not plan.in_published_layout
