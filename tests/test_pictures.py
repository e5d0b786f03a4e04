"""Illusions from a picture in the sampling core (sampling/pictures.py), on the tiny IF models:
image-to-image strength, inpainting, inverse problems with a reference, against diffusers' own IF
pipelines and a restatement of the published inverse-problem loop."""

from __future__ import annotations

import copy

import pytest
import torch
from test_sampling import (
    BATCH_CHANGE_TOLERANCE,
    PARITY_TOLERANCE,
    counting_unet_calls,
    embeddings_for,
    run_stage_1,
    run_stage_2,
)

from pack import import_submodule
from paper_reference import PAPER_VIEWS, paper_stage_1, paper_stage_2

sampling = import_submodule("sampling")
pictures = import_submodule("sampling.pictures")
views = import_submodule("views")

SIZE_1, SIZE_2 = 64, 256


def smooth_picture(size: int, seed: int, count: int = 1) -> torch.Tensor:
    """A picture-like tensor in [-1, 1]: smooth shapes, not white noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand((count, 3, 8, 8), generator=generator) * 2 - 1
    return torch.nn.functional.interpolate(coarse, (size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def centre_mask(size: int) -> torch.Tensor:
    """1 = repaint: the centre square; the border keeps the picture."""
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    return mask


def to_8bit(pixels: torch.Tensor) -> torch.Tensor:
    return ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.int16)


@pytest.fixture(scope="module")
def two(encode):
    return embeddings_for(encode, 2)


@pytest.fixture(scope="module")
def low_res():
    return smooth_picture(SIZE_1, seed=7, count=2)


# -- strength -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("steps", "strength", "expected"), [(30, 1.0, 30), (30, 0.5, 15), (100, 0.29, 28), (7, 0, 0)])
def test_strength_keeps_the_last_steps_as_diffusers_does(steps, strength, expected):
    assert pictures.steps_to_run(steps, strength) == expected


def test_strength_0_returns_the_start_image_without_calling_the_unet(stage_1_pipe, stage_2_pipe, two, low_res):
    start = smooth_picture(SIZE_1, seed=1)
    with counting_unet_calls(stage_1_pipe.unet) as calls:
        result = run_stage_1(stage_1_pipe, ["identity", "flip"], two, num_candidates=2, start_image=start, strength=0)
    assert calls == []
    assert torch.equal(result.images, start.expand(2, -1, -1, -1))
    start_2 = smooth_picture(SIZE_2, seed=2, count=2)
    with counting_unet_calls(stage_2_pipe.unet) as calls:
        result = run_stage_2(stage_2_pipe, low_res, ["identity", "flip"], two, start_image=start_2, strength=0)
    assert calls == []
    assert torch.equal(result.images, start_2)


@pytest.mark.parametrize("timesteps", [None, [999, 700, 400, 100]])  # a step count, an explicit list
def test_strength_1_is_the_text_to_image_run_bit_for_bit(stage_1_pipe, two, timesteps):
    options = dict(num_candidates=2, seed=3, timesteps=timesteps)
    plain = run_stage_1(stage_1_pipe, ["identity", "flip"], two, **options)
    started = run_stage_1(
        stage_1_pipe, ["identity", "flip"], two, start_image=smooth_picture(SIZE_1, 1), strength=1.0, **options
    )
    assert torch.equal(plain.images, started.images)
    # An all-repaint mask at strength 1 keeps nothing of the picture: the same run again.
    masked = run_stage_1(
        stage_1_pipe,
        ["identity", "flip"],
        two,
        start_image=smooth_picture(SIZE_1, 1),
        mask=torch.ones(SIZE_1, SIZE_1),
        **options,
    )
    assert torch.equal(plain.images, masked.images)


def test_stage_2_strength_1_is_the_plain_run_bit_for_bit(stage_2_pipe, two, low_res):
    plain = run_stage_2(stage_2_pipe, low_res, ["identity", "flip"], two, seed=4)
    started = run_stage_2(
        stage_2_pipe, low_res, ["identity", "flip"], two, seed=4, start_image=smooth_picture(SIZE_2, 5), strength=1
    )
    assert torch.equal(plain.images, started.images)


def test_strength_runs_only_the_last_steps_of_a_named_schedule(stage_1_pipe, two):
    seen = []
    run_stage_1(
        stage_1_pipe,
        ["identity", "flip"],
        two,
        timesteps="fast27",
        start_image=smooth_picture(SIZE_1, 1),
        strength=0.3,
        callback=lambda info: seen.append((info.step, info.total, info.timestep)),
    )
    fast27 = sampling.if_timestep_schedule("fast27")
    assert [t for _, _, t in seen] == fast27[len(fast27) - int(27 * 0.3) :]
    assert [(step, total) for step, total, _ in seen] == [(k + 1, 8) for k in range(8)]


def test_a_lower_strength_stays_closer_to_the_start_image(stage_1_pipe, two):
    start = smooth_picture(SIZE_1, 1)
    distance = {}
    for strength in (0.25, 0.75):
        images = run_stage_1(
            stage_1_pipe, ["identity", "flip"], two, num_inference_steps=8, start_image=start, strength=strength
        ).images
        distance[strength] = (images - start).abs().mean().item()
    assert distance[0.25] < distance[0.75]


# -- parity with diffusers' own IF image pipelines (one identity view: their loop) ----------------


@pytest.mark.parametrize(
    ("pipeline", "inputs"),
    [
        ("IFImg2ImgPipeline", {"strength": 0.5}),
        ("IFInpaintingPipeline", {"strength": 0.6, "mask": centre_mask(SIZE_1), "inpainting": "clean"}),
    ],
)
def test_one_identity_view_matches_diffusers_if_image_pipelines(stage_1_pipe, encode, pipeline, inputs):
    import diffusers

    positive, negative = encode(["a photo of a deer"])
    start = smooth_picture(SIZE_1, 6)
    pipe = getattr(diffusers, pipeline)(**{**stage_1_pipe.components, "safety_checker": None, "watermarker": None})
    theirs = dict(inputs, mask_image=inputs["mask"]) if "mask" in inputs else inputs
    expected = pipe(
        image=start,
        prompt_embeds=positive,
        negative_prompt_embeds=negative,
        num_inference_steps=8,
        guidance_scale=7.0,
        generator=torch.manual_seed(11),
        output_type="pt",
        **{key: value for key, value in theirs.items() if key not in ("mask", "inpainting")},
    ).images
    ours = sampling.sample_stage_1(
        stage_1_pipe.unet,
        stage_1_pipe.scheduler,
        [views.make_view("identity")],
        sampling.PromptEmbeddings(positive=positive, negative=negative),
        seed=11,
        num_inference_steps=8,
        guidance_scale=7.0,
        start_image=start,
        **inputs,
    ).images
    assert (ours - expected).abs().max() <= PARITY_TOLERANCE


# -- inpainting ------------------------------------------------------------------------------------


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_outside_the_mask_the_result_is_the_picture(stage_1_pipe, stage_2_pipe, two, low_res, strength):
    start, mask = smooth_picture(SIZE_1, 8), centre_mask(SIZE_1)
    images = run_stage_1(
        stage_1_pipe, ["identity", "flip"], two, num_candidates=2, start_image=start, strength=strength, mask=mask
    ).images
    keep = (mask == 0).expand_as(images)
    assert torch.equal(images[keep], start.expand_as(images)[keep])
    assert (to_8bit(images) - to_8bit(start)).abs()[keep].max() == 0
    assert (images - start)[~keep].abs().mean() > 0.05  # the illusion is drawn inside

    start_2, mask_2 = smooth_picture(SIZE_2, 9), centre_mask(SIZE_2)
    images = run_stage_2(
        stage_2_pipe, low_res, ["identity", "flip"], two, start_image=start_2, strength=strength, mask=mask_2[0]
    ).images
    keep = (mask_2 == 0).expand_as(images)
    assert torch.equal(images[keep], start_2.expand_as(images)[keep])


@pytest.mark.parametrize("inpainting", ["renoised", "clean"])
def test_what_the_unet_sees_outside_the_mask(stage_1_pipe, two, inpainting):
    """'renoised': the start image noised to each step with the start noise (no extra draw); 'clean': the
    picture itself, as IF's inpainting pipeline shows it."""
    start, mask = smooth_picture(SIZE_1, 8), centre_mask(SIZE_1)
    seen = []
    hook = stage_1_pipe.unet.register_forward_pre_hook(
        lambda _module, args: seen.append((args[0][0].clone(), int(args[1])))
    )
    try:
        result = run_stage_1(
            stage_1_pipe, ["identity", "flip"], two, seed=3, start_image=start, mask=mask, inpainting=inpainting
        )
    finally:
        hook.remove()
    keep = (mask[0] == 0).expand(3, -1, -1)
    noise = torch.randn((1, 3, SIZE_1, SIZE_1), generator=torch.Generator().manual_seed(3))
    for unet_input, timestep in seen:
        if inpainting == "clean":
            expected = start[0]
        else:
            expected = stage_1_pipe.scheduler.add_noise(start, noise, torch.tensor([timestep]))[0]
        assert (unet_input[keep] - expected[keep]).abs().max() <= 1e-6
    assert torch.equal(result.images[0][keep], start[0][keep])


def test_a_soft_mask_is_binarised_at_one_half(stage_1_pipe, two):
    start = smooth_picture(SIZE_1, 8)
    hard = centre_mask(SIZE_1)
    soft = hard * 0.7 + (1 - hard) * 0.3  # the same mask, with values either side of 0.5
    options = dict(num_inference_steps=3, start_image=start, strength=0.7, seed=2)
    assert torch.equal(
        run_stage_1(stage_1_pipe, ["identity", "flip"], two, mask=hard, **options).images,
        run_stage_1(stage_1_pipe, ["identity", "flip"], two, mask=soft, **options).images,
    )


def test_an_empty_mask_returns_the_picture(stage_1_pipe, two):
    start = smooth_picture(SIZE_1, 8)
    images = run_stage_1(
        stage_1_pipe, ["identity", "flip"], two, start_image=start, mask=torch.zeros(1, SIZE_1, SIZE_1)
    ).images
    assert torch.equal(images, start)


# -- inverse problems --------------------------------------------------------------------------------


def test_the_fixed_grey_levels_are_the_references(stage_1_pipe, stage_2_pipe, two, low_res):
    reference = smooth_picture(SIZE_1, 10)
    images = run_stage_1(
        stage_1_pipe, ["grayscale", "color"], two, num_candidates=2, reference_image=reference, guidance_scale=10
    ).images
    grey = images.mean(1)
    assert (grey - reference.mean(1)).abs().max() <= 1e-5
    assert (images - reference).abs().mean() > 0.05  # the colour is the prompt's, not the reference's

    reference_2 = smooth_picture(SIZE_2, 11)
    images = run_stage_2(stage_2_pipe, low_res, ["grayscale", "color"], two, reference_image=reference_2).images
    assert (images.mean(1) - reference_2.mean(1)).abs().max() <= 1e-5


def test_the_published_loop_leaves_the_fixed_component_off_and_projection_fixes_it(stage_1_pipe, two):
    reference = smooth_picture(SIZE_1, 10)
    options = dict(reference_image=reference, seed=5)
    published = run_stage_1(stage_1_pipe, ["grayscale", "color"], two, project_reference=False, **options).images
    projected = run_stage_1(stage_1_pipe, ["grayscale", "color"], two, **options).images
    assert (published.mean(1) - reference.mean(1)).abs().max() > 1e-3
    assert (projected.mean(1) - reference.mean(1)).abs().max() <= 1e-5
    # Only the fixed component moves: the colour is the published loop's.
    colour = views.make_view("color")
    assert (colour.preview(projected) - colour.preview(published)).abs().max() <= 1e-6


def test_a_low_pass_reference_sets_the_far_away_reading(stage_1_pipe, two):
    """A Gaussian low-pass is not a projection (blurring twice is not blurring once), so the fixed
    component only comes close: measured 0.03 on a smooth reference; without the reference the low
    frequencies are the prompt's own, about 10x further off."""
    reference = smooth_picture(SIZE_1, 12)
    low = views.make_view("low_pass")
    with_reference = run_stage_1(stage_1_pipe, ["low_pass", "high_pass"], two, reference_image=reference).images
    without = run_stage_1(stage_1_pipe, ["low_pass", "high_pass"], two).images
    off = (low.preview(with_reference) - low.preview(reference)).abs().mean()
    assert off <= 0.05
    assert off * 4 < (low.preview(without) - low.preview(reference)).abs().mean()


def published_inverse_cascade(stage_1_pipe, stage_2_pipe, embeddings, pair, references, seed, steps):
    """The restated published loop: Stage I, then Stage II continuing its generator, as generate.py runs.
    ``steps``: (Stage I, Stage II); Stage II is skipped at 0."""
    generator = torch.manual_seed(seed)
    common = dict(guidance_scale=10.0, generator=generator, reduction="sum")
    paper_views = [PAPER_VIEWS[name]() for name in pair]
    low_res = paper_stage_1(
        stage_1_pipe, embeddings.positive, embeddings.negative, paper_views, steps[0], ref_im=references[0][0], **common
    )
    if not steps[1]:
        return low_res, None
    return low_res, paper_stage_2(
        stage_2_pipe,
        low_res,
        embeddings.positive,
        embeddings.negative,
        paper_views,
        steps[1],
        noise_level=50,
        ref_im=references[1][0],
        **common,
    )


def our_inverse_cascade(stage_1_pipe, stage_2_pipe, embeddings, pair, references, seed, steps, low_res):
    """Our Stage I, then our Stage II continuing its generators from ``low_res`` (the published Stage I's
    image, so that Stage II is compared on its own)."""
    common = dict(guidance_scale=10.0, reduction="sum", project_reference=False)
    stage_1 = sampling.sample_stage_1(
        stage_1_pipe.unet,
        stage_1_pipe.scheduler,
        [views.make_view(name) for name in pair],
        embeddings,
        seed=seed,
        num_inference_steps=steps[0],
        reference_image=references[0],
        **common,
    )
    if not steps[1]:
        return stage_1.images, None
    stage_2 = sampling.sample_stage_2(
        stage_2_pipe.unet,
        stage_2_pipe.scheduler,
        stage_2_pipe.image_noising_scheduler,
        low_res,
        [views.make_view(name) for name in pair],
        embeddings,
        generators=stage_1.generators,
        num_inference_steps=steps[1],
        noise_level=50,
        reference_image=references[1],
        **common,
    )
    return stage_1.images, stage_2.images


def test_the_inverse_problem_matches_the_published_loop_in_fp32(stage_1_pipe, stage_2_pipe, two):
    """Grey levels / colour, 3 Stage I and 2 Stage II steps. Longer runs and Gaussian bands differ by more
    than 1e-5 in fp32, with or without a reference (measured 1.7e-5 to 3.3e-5 after 4 Stage I steps; 1.7e-5
    after 3 Stage II steps): the pack guides the views' estimates before bringing them back, the published
    loop after, and IF's early steps amplify that rounding. The float64 test checks the formulas."""
    references = (smooth_picture(SIZE_1, 13), smooth_picture(SIZE_2, 14))
    pair, steps = ("grayscale", "color"), (3, 2)
    expected = published_inverse_cascade(stage_1_pipe, stage_2_pipe, two, pair, references, 21, steps)
    ours = our_inverse_cascade(stage_1_pipe, stage_2_pipe, two, pair, references, 21, steps, low_res=expected[0])
    for mine, theirs in zip(ours, expected, strict=True):
        assert (mine - theirs).abs().max() <= PARITY_TOLERANCE


@pytest.mark.slow  # float64 on the CPU
@pytest.mark.parametrize(
    ("pair", "steps"),
    # Gaussian bands at 256 px in float64 take minutes on two cores: their Stage II is left to the fp32 test's
    # grey levels, which go through the same Stage II code.
    [(("grayscale", "color"), (4, 2)), (("low_pass", "high_pass"), (4, 0))],
)
def test_the_inverse_problem_is_the_published_loop_in_float64(stage_1_pipe, stage_2_pipe, two, pair, steps):
    stage_1_pipe_64, stage_2_pipe_64 = copy.deepcopy(stage_1_pipe), copy.deepcopy(stage_2_pipe)
    stage_1_pipe_64.unet.to(torch.float64)
    stage_2_pipe_64.unet.to(torch.float64)
    embeddings = sampling.PromptEmbeddings(two.positive.double(), two.negative.double())
    references = (smooth_picture(SIZE_1, 13).double(), smooth_picture(SIZE_2, 14).double())
    expected = published_inverse_cascade(stage_1_pipe_64, stage_2_pipe_64, embeddings, pair, references, 21, steps)
    ours = our_inverse_cascade(
        stage_1_pipe_64, stage_2_pipe_64, embeddings, pair, references, 21, steps, low_res=expected[0]
    )
    for mine, theirs in zip(ours, expected, strict=True):
        if theirs is not None:
            assert mine.dtype == torch.float64
            assert (mine - theirs).abs().max() <= 1e-10


# -- candidates and seeds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "pictures_in"),
    [
        (["identity", "flip"], {"strength": 0.5, "start": True}),
        (["identity", "flip"], {"strength": 0.75, "start": True, "mask": True}),
        (["grayscale", "color"], {"reference": True}),
    ],
)
def test_candidate_k_matches_the_single_run_with_seed_plus_k(stage_1_pipe, two, names, pictures_in):
    start = smooth_picture(SIZE_1, 15, count=3)
    inputs = {}
    if pictures_in.get("start"):
        inputs.update(start_image=start, strength=pictures_in["strength"])
    if pictures_in.get("mask"):
        inputs["mask"] = centre_mask(SIZE_1)
    if pictures_in.get("reference"):
        inputs["reference_image"] = start
    batch = run_stage_1(stage_1_pipe, names, two, num_candidates=3, seed=30, **inputs)
    for k in range(3):
        single_inputs = {key: (value[k : k + 1] if value is start else value) for key, value in inputs.items()}
        single = run_stage_1(stage_1_pipe, names, two, seed=30 + k, **single_inputs)
        assert (batch.images[k : k + 1] - single.images).abs().max() <= BATCH_CHANGE_TOLERANCE
        assert torch.equal(batch.generators[k].get_state(), single.generators[0].get_state())


@pytest.mark.parametrize(("strength", "reference"), [(0.5, False), (1.0, True), (0.4, True), (0.0, False)])
def test_stage_1_generators_after_replays_picture_runs(stage_1_pipe, two, strength, reference):
    inputs = {"start_image": smooth_picture(SIZE_1, 16), "strength": strength}
    if reference:
        inputs["reference_image"] = smooth_picture(SIZE_1, 17)
    names = ["grayscale", "color"]
    ran = run_stage_1(stage_1_pipe, names, two, num_candidates=2, seed=40, **inputs)
    rebuilt = sampling.stage_1_generators_after(
        40,
        2,
        stage_1_pipe.scheduler,
        sample_shape=(3, SIZE_1, SIZE_1),
        num_inference_steps=4,
        strength=strength,
        reference=reference,
    )
    assert [g.get_state().tolist() for g in rebuilt] == [g.get_state().tolist() for g in ran.generators]


# -- refusals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "inputs", "input_name", "words"),
    [
        (["identity", "flip"], {"strength": 0.5}, "strength", "give a start image"),
        (["identity", "flip"], {"strength": 1.5, "start_image": "start"}, "strength", "[0, 1]"),
        (["identity", "flip"], {"strength": float("nan"), "start_image": "start"}, "strength", "number"),
        (["identity", "flip"], {"mask": torch.ones(1, 64, 64)}, "mask", "start image too"),
        (["identity", "flip"], {"start_image": torch.zeros(1, 3, 32, 32)}, "start image", "32x32"),
        (["identity", "flip"], {"start_image": torch.zeros(1, 4, 64, 64)}, "start image", "4 channels"),
        (["identity", "flip"], {"start_image": torch.zeros(3, 3, 64, 64)}, "start image", "3 pictures for 2"),
        (["identity", "flip"], {"start_image": torch.full((1, 3, 64, 64), float("nan"))}, "start image", "finite"),
        (
            ["identity", "flip"],
            {"start_image": "start", "mask": torch.ones(1, 1, 64, 32)},
            "mask",
            "32x64",
        ),
        (["identity", "flip"], {"reference_image": "start"}, "reference view", "identity"),
        (["grayscale", "color"], {"reference_image": "start", "reference_view": 2}, "reference view", "2 views"),
    ],
)
def test_bad_picture_inputs_are_refused_by_name(stage_1_pipe, two, names, inputs, input_name, words):
    inputs = {key: smooth_picture(SIZE_1, 1) if isinstance(value, str) else value for key, value in inputs.items()}
    with counting_unet_calls(stage_1_pipe.unet) as calls, pytest.raises(sampling.SamplingInputError) as raised:
        run_stage_1(stage_1_pipe, names, two, num_candidates=2, **inputs)
    assert raised.value.input_name == input_name
    assert words in raised.value.problem
    assert calls == []
