"""The sampling core on the tiny IF models: seed parity with the published loop,
candidates, one UNet call per step, cancellation and input errors."""

from __future__ import annotations

import contextlib

import pytest
import torch

from pack import import_submodule
from paper_reference import PAPER_VIEWS, paper_stage_1, paper_stage_2

sampling = import_submodule("sampling")
views = import_submodule("views")

STAGE_1_STEPS = 4
STAGE_2_STEPS = 3
GUIDANCE = 10.0
PARITY_TOLERANCE = 1e-5
# Where the UNet batch differs in size from the reference's, conv and matmul
# kernels round differently (~2e-6 per call on CPU), amplified by guidance.
BATCH_CHANGE_TOLERANCE = 1e-4

VIEW_SETS = {
    "flip": ["identity", "flip"],
    "rotate_cw": ["identity", "rotate_cw"],
    "negate": ["identity", "negate"],
    "three_views": ["identity", "rotate_ccw", "flip"],
}
PROMPTS = ["an oil painting of a snowy mountain village", "an oil painting of a horse", "an oil painting of a deer"]


def embeddings_for(encode, count):
    positive, negative = encode(PROMPTS[:count])
    return sampling.PromptEmbeddings(positive=positive, negative=negative)


@contextlib.contextmanager
def counting_unet_calls(unet):
    """Count forward calls (and the batch size of each) without changing results."""
    calls = []
    original = unet.forward

    def counted(sample, *args, **kwargs):
        calls.append(sample.shape[0])
        return original(sample, *args, **kwargs)

    unet.forward = counted
    try:
        yield calls
    finally:
        del unet.forward


def run_stage_1(pipe, names, embeddings, **kwargs):
    options = dict(num_inference_steps=STAGE_1_STEPS, guidance_scale=GUIDANCE)
    options.update(kwargs)
    return sampling.sample_stage_1(
        pipe.unet, pipe.scheduler, [views.make_view(n) for n in names], embeddings, **options
    )


def run_stage_2(pipe, image, names, embeddings, **kwargs):
    options = dict(num_inference_steps=STAGE_2_STEPS, guidance_scale=GUIDANCE, noise_level=50)
    options.update(kwargs)
    return sampling.sample_stage_2(
        pipe.unet,
        pipe.scheduler,
        pipe.image_noising_scheduler,
        image,
        [views.make_view(n) for n in names],
        embeddings,
        **options,
    )


# -- seed parity with the published code --------------------------------------------------------


# The quick run keeps one view set (flip); the full run checks them all.
@pytest.mark.parametrize(
    "case", [case if case == "flip" else pytest.param(case, marks=pytest.mark.slow) for case in sorted(VIEW_SETS)]
)
def test_stage_1_and_2_match_the_published_loop(case, stage_1_pipe, stage_2_pipe, encode):
    names = VIEW_SETS[case]
    positive, negative = encode(PROMPTS[: len(names)])
    paper_views = [PAPER_VIEWS[n]() for n in names]
    seed = 3

    generator = torch.manual_seed(seed)
    expected_1 = paper_stage_1(stage_1_pipe, positive, negative, paper_views, STAGE_1_STEPS, GUIDANCE, generator)
    expected_2 = paper_stage_2(
        stage_2_pipe, expected_1, positive, negative, paper_views, STAGE_2_STEPS, GUIDANCE, 50, generator
    )

    embeddings = sampling.PromptEmbeddings(positive, negative)
    ours_1 = run_stage_1(stage_1_pipe, names, embeddings, seed=seed)
    ours_2 = run_stage_2(stage_2_pipe, ours_1.images, names, embeddings, generators=ours_1.generators)

    assert ours_1.images.shape == (1, 3, 64, 64)
    assert ours_2.images.shape == (1, 3, 256, 256)
    assert (ours_1.images - expected_1).abs().max() <= PARITY_TOLERANCE
    assert (ours_2.images - expected_2).abs().max() <= PARITY_TOLERANCE
    # The images are not trivially equal: different seeds give different results.
    other = run_stage_1(stage_1_pipe, names, embeddings, seed=seed + 1)
    assert (other.images - expected_1).abs().max() > 0.1


@pytest.mark.parametrize("reduction", ["sum", "alternate"])
def test_other_reductions_match_the_published_loop(reduction, stage_1_pipe, encode):
    names = VIEW_SETS["three_views"]
    positive, negative = encode(PROMPTS)
    expected = paper_stage_1(
        stage_1_pipe,
        positive,
        negative,
        [PAPER_VIEWS[n]() for n in names],
        STAGE_1_STEPS,
        GUIDANCE,
        torch.manual_seed(11),
        reduction=reduction,
    )
    ours = run_stage_1(stage_1_pipe, names, sampling.PromptEmbeddings(positive, negative), seed=11, reduction=reduction)
    # "alternate" sends only the active view through the UNet (a smaller batch, so
    # float rounding inside the UNet differs by ~1e-6 per call, times guidance 10).
    tolerance = BATCH_CHANGE_TOLERANCE if reduction == "alternate" else PARITY_TOLERANCE
    assert (ours.images - expected).abs().max() <= tolerance


@pytest.mark.slow  # several seconds on a 2-core CPU: the quick run leaves it to the full run
def test_if_timestep_schedule_matches_the_published_loop_with_that_list(stage_1_pipe, encode):
    names = VIEW_SETS["flip"]
    positive, negative = encode(PROMPTS[:2])
    schedule = sampling.if_timestep_schedule("fast27")
    assert len(schedule) == 27
    expected = paper_stage_1(
        stage_1_pipe,
        positive,
        negative,
        [PAPER_VIEWS[n]() for n in names],
        None,
        GUIDANCE,
        torch.manual_seed(0),
        timesteps=schedule,
    )
    ours = run_stage_1(stage_1_pipe, names, sampling.PromptEmbeddings(positive, negative), seed=0, timesteps="fast27")
    assert (ours.images - expected).abs().max() <= PARITY_TOLERANCE


# -- candidates ---------------------------------------------------------------------------------


@pytest.mark.slow  # several seconds on a 2-core CPU: the quick run leaves it to the full run
def test_candidate_k_matches_a_single_run_with_seed_plus_k(stage_1_pipe, stage_2_pipe, encode):
    names = VIEW_SETS["rotate_cw"]
    embeddings = embeddings_for(encode, 2)
    batch_1 = run_stage_1(stage_1_pipe, names, embeddings, seed=20, num_candidates=3)
    batch_2 = run_stage_2(stage_2_pipe, batch_1.images[:2], names, embeddings, generators=batch_1.generators[:2])
    assert batch_1.images.shape == (3, 3, 64, 64)
    assert batch_2.images.shape == (2, 3, 256, 256)
    for k in range(3):
        single_1 = run_stage_1(stage_1_pipe, names, embeddings, seed=20 + k)
        assert (batch_1.images[k : k + 1] - single_1.images).abs().max() <= BATCH_CHANGE_TOLERANCE
        if k < 2:
            single_2 = run_stage_2(stage_2_pipe, single_1.images, names, embeddings, generators=single_1.generators)
            assert (batch_2.images[k : k + 1] - single_2.images).abs().max() <= BATCH_CHANGE_TOLERANCE
    assert not torch.allclose(batch_1.images[0], batch_1.images[1])


def test_runs_are_deterministic(stage_1_pipe, encode):
    embeddings = embeddings_for(encode, 2)
    first = run_stage_1(stage_1_pipe, VIEW_SETS["negate"], embeddings, seed=7, num_candidates=2)
    second = run_stage_1(stage_1_pipe, VIEW_SETS["negate"], embeddings, seed=7, num_candidates=2)
    assert torch.equal(first.images, second.images)


def test_the_callers_scheduler_is_left_untouched(stage_1_pipe, encode):
    stage_1_pipe.scheduler.set_timesteps(7)
    run_stage_1(stage_1_pipe, VIEW_SETS["flip"], embeddings_for(encode, 2))
    assert len(stage_1_pipe.scheduler.timesteps) == 7


# -- one UNet call per step ---------------------------------------------------------------------


@pytest.mark.slow  # several seconds on a 2-core CPU: the quick run leaves it to the full run
def test_one_unet_call_per_step_for_all_views_candidates_and_guidance(stage_1_pipe, stage_2_pipe, encode):
    names = VIEW_SETS["three_views"]
    embeddings = embeddings_for(encode, 3)
    with counting_unet_calls(stage_1_pipe.unet) as calls:
        result = run_stage_1(stage_1_pipe, names, embeddings, num_candidates=2)
    assert calls == [2 * 3 * 2] * STAGE_1_STEPS
    with counting_unet_calls(stage_2_pipe.unet) as calls:
        run_stage_2(stage_2_pipe, result.images, names, embeddings)
    assert calls == [2 * 3 * 2] * STAGE_2_STEPS


@pytest.mark.slow  # several seconds on a 2-core CPU: the quick run leaves it to the full run
def test_max_batch_size_splits_the_call_without_changing_the_result(stage_1_pipe, encode):
    names = VIEW_SETS["three_views"]
    embeddings = embeddings_for(encode, 3)
    whole = run_stage_1(stage_1_pipe, names, embeddings, num_candidates=2)
    with counting_unet_calls(stage_1_pipe.unet) as calls:
        split = run_stage_1(stage_1_pipe, names, embeddings, num_candidates=2, max_batch_size=5)
    assert calls == [5, 5, 2] * STAGE_1_STEPS
    assert (whole.images - split.images).abs().max() <= BATCH_CHANGE_TOLERANCE


def test_alternate_sends_only_the_active_view_through_the_unet(stage_1_pipe, encode):
    with counting_unet_calls(stage_1_pipe.unet) as calls:
        run_stage_1(
            stage_1_pipe, VIEW_SETS["three_views"], embeddings_for(encode, 3), num_candidates=2, reduction="alternate"
        )
    assert calls == [2 * 2] * STAGE_1_STEPS


# -- weights, callback, cancellation ------------------------------------------------------------


def test_view_weights_change_the_mix_and_equal_weights_do_not(stage_1_pipe, encode):
    names = VIEW_SETS["flip"]
    embeddings = embeddings_for(encode, 2)
    plain = run_stage_1(stage_1_pipe, names, embeddings)
    equal = run_stage_1(stage_1_pipe, names, embeddings, view_weights=[2.0, 2.0])
    tilted = run_stage_1(stage_1_pipe, names, embeddings, view_weights=[3.0, 1.0])
    assert (plain.images - equal.images).abs().max() <= PARITY_TOLERANCE
    assert (plain.images - tilted.images).abs().max() > 1e-3


def test_callback_sees_every_step_with_a_preview(stage_1_pipe, encode):
    seen = []
    run_stage_1(
        stage_1_pipe,
        VIEW_SETS["flip"],
        embeddings_for(encode, 2),
        num_candidates=2,
        callback=lambda info: seen.append(info),
    )
    assert [info.step for info in seen] == list(range(1, STAGE_1_STEPS + 1))
    assert all(info.total == STAGE_1_STEPS for info in seen)
    assert seen[0].timestep > seen[-1].timestep
    assert seen[-1].predicted_clean.shape == (2, 3, 64, 64)
    assert seen[-1].predicted_clean.abs().max() <= 1.5  # IF's dynamic thresholding bound


def test_callback_can_stop_the_run(stage_1_pipe, encode):
    with counting_unet_calls(stage_1_pipe.unet) as calls:
        with pytest.raises(sampling.SamplingCancelled) as stopped:
            run_stage_1(
                stage_1_pipe, VIEW_SETS["flip"], embeddings_for(encode, 2), callback=lambda info: info.step == 2
            )
    assert stopped.value.step == 2
    assert len(calls) == 2


def test_an_exception_from_the_callback_propagates(stage_1_pipe, encode):
    class Interrupted(Exception):
        pass

    def interrupt(info):
        raise Interrupted

    with pytest.raises(Interrupted):
        run_stage_1(stage_1_pipe, VIEW_SETS["flip"], embeddings_for(encode, 2), callback=interrupt)


# -- dtypes -------------------------------------------------------------------------------------


def test_bfloat16_runs_and_stays_close_to_float32(stage_1_pipe, encode):
    import copy

    names = VIEW_SETS["negate"]
    embeddings = embeddings_for(encode, 2)
    unet_bf16 = copy.deepcopy(stage_1_pipe.unet).to(torch.bfloat16)
    full = run_stage_1(stage_1_pipe, names, embeddings, num_inference_steps=2)
    half = sampling.sample_stage_1(
        unet_bf16, stage_1_pipe.scheduler, [views.make_view(n) for n in names], embeddings, num_inference_steps=2
    )
    assert half.images.dtype == torch.bfloat16
    assert torch.isfinite(half.images.float()).all()
    assert (half.images.float() - full.images).abs().mean() < 0.1


# -- input errors, all before the first step ----------------------------------------------------


def _bad_stage_1(pipe, encode, **overrides):
    embeddings = embeddings_for(encode, 2)
    args = dict(views=[views.make_view("identity"), views.make_view("flip")], embeddings=embeddings)
    args.update(overrides)
    return sampling.sample_stage_1(
        pipe.unet, pipe.scheduler, args.pop("views"), args.pop("embeddings"), num_inference_steps=2, **args
    )


@pytest.mark.parametrize(
    "overrides, input_name, fragment",
    [
        (lambda e: dict(views=[views.make_view("identity")] * 3), "prompt embeddings", "2 prompts for 3 views"),
        (lambda e: dict(views=[]), "views", "1 to 8 views"),
        (lambda e: dict(views=[views.make_view("identity")] * 9), "views", "1 to 8 views"),
        (
            lambda e: dict(embeddings=sampling.PromptEmbeddings(e.positive[..., :16], e.negative[..., :16])),
            "prompt embeddings",
            "takes 32",
        ),
        (
            lambda e: dict(embeddings=sampling.PromptEmbeddings(e.positive, e.negative[:, :10])),
            "negative embeddings",
            "does not match",
        ),
        (lambda e: dict(reduction="median"), "reduction", "mean, sum, alternate"),
        (lambda e: dict(view_weights=[1.0]), "view weights", "1 weights for 2 views"),
        (lambda e: dict(view_weights=[1.0, -1.0]), "view weights", "non-negative"),
        (lambda e: dict(num_candidates=0), "candidates", "at least 1"),
        (lambda e: dict(guidance_scale=float("nan")), "guidance scale", "finite"),
        (
            lambda e: dict(views=[views.make_view("identity"), views.make_view("patch_permute", patches_per_side=7)]),
            "views",
            "64 px",
        ),
        (lambda e: dict(timesteps=[10, 500]), "timesteps", "decreasing"),
        (lambda e: dict(timesteps="smart9000"), "timesteps", "fast27"),
    ],
)
def test_stage_1_input_errors_are_raised_before_sampling(overrides, input_name, fragment, stage_1_pipe, encode):
    embeddings = embeddings_for(encode, 2)
    with counting_unet_calls(stage_1_pipe.unet) as calls:
        with pytest.raises(sampling.SamplingInputError) as error:
            _bad_stage_1(stage_1_pipe, encode, **overrides(embeddings))
    assert error.value.input_name == input_name
    assert fragment in str(error.value)
    assert calls == []


def test_stage_models_swapped_are_named(stage_1_pipe, stage_2_pipe, encode):
    embeddings = embeddings_for(encode, 2)
    two_views = [views.make_view("identity"), views.make_view("flip")]
    with pytest.raises(sampling.SamplingInputError, match="Stage II .*model"):
        sampling.sample_stage_1(stage_2_pipe.unet, stage_2_pipe.scheduler, two_views, embeddings)
    with pytest.raises(sampling.SamplingInputError, match="Stage I model"):
        sampling.sample_stage_2(
            stage_1_pipe.unet,
            stage_1_pipe.scheduler,
            stage_2_pipe.image_noising_scheduler,
            torch.zeros(1, 3, 64, 64),
            two_views,
            embeddings,
        )


@pytest.mark.parametrize(
    "image, noise_level, fragment",
    [
        (torch.zeros(1, 3, 256, 256), 50, "give it the Stage I output"),
        (torch.zeros(1, 3, 64, 32), 50, "square RGB"),
        (torch.zeros(1, 4, 64, 64), 50, "3 channels"),
        (torch.zeros(1, 1, 64, 64), 50, "1 colour channel,"),
        (torch.zeros(0, 3, 64, 64), 50, "the batch holds no images"),
        (
            torch.zeros(2, 3, 64, 64).index_fill_(0, torch.tensor([1]), float("nan")),
            50,
            r"12288 pixel values are NaN or infinite \(image 2 of 2\)",
        ),
        (torch.full((1, 3, 64, 64), float("-inf")), 50, "NaN or infinite"),
        (torch.zeros(1, 3, 64, 64), 1000, "noise level"),
    ],
)
def test_stage_2_input_errors_are_raised_before_sampling(image, noise_level, fragment, stage_2_pipe, encode):
    embeddings = embeddings_for(encode, 2)
    with counting_unet_calls(stage_2_pipe.unet) as calls:
        with pytest.raises(sampling.SamplingInputError, match=fragment):
            run_stage_2(stage_2_pipe, image, VIEW_SETS["flip"], embeddings, noise_level=noise_level)
    assert calls == []
