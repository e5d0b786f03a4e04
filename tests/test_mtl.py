"""Anagram-MTL's noise variance rectification and anti-segregation, on the tiny IF models:
faithful to a plain restatement of the published loop (tests/mtl_reference.py), exact where
they must reduce to the plain sampler, isolated from every other use of the UNet, and refused
with a clear message where they cannot apply."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from mtl_reference import mtl_concept_spans, mtl_stage_1, mtl_stage_2
from pack import import_submodule
from paper_reference import PAPER_VIEWS, paper_stage_1

sampling = import_submodule("sampling")
views = import_submodule("views")
rectification = import_submodule("sampling.rectification")
anti_segregation = import_submodule("sampling.anti_segregation")
text = import_submodule("sampling.text")

# Three Stage I steps: two anti-segregation updates (never after the last step). In fp32, IF's early steps
# amplify rounding (the reference's UNet batches differ from ours): measured 7e-6 after 3 steps, 1.6e-5
# after 4; in float64 both loops agree to 3e-14 (test_float64_runs_agree_to_rounding).
STAGE_1_STEPS = 3
STAGE_2_STEPS = 3
GUIDANCE = 10.0
FAITHFUL = 1e-5  # fp32
FAITHFUL_FLOAT64 = 1e-12
PROMPTS = ["an oil painting of a snowy mountain village", "an oil painting of a horse", "an oil painting of a deer"]
VIEW_SETS = {2: ["identity", "flip"], 3: ["identity", "rotate_ccw", "flip"]}


def embeddings_for(stage_1_pipe, encode, count):
    positive, negative = encode(PROMPTS[:count])
    spans = tuple(text.concept_token_span(stage_1_pipe.tokenizer, prompt) for prompt in PROMPTS[:count])
    return sampling.PromptEmbeddings(positive, negative, concept_spans=spans)


def run_stage_1(pipe, names, embeddings, **kwargs):
    options = dict(num_inference_steps=STAGE_1_STEPS, guidance_scale=GUIDANCE)
    options.update(kwargs)
    return sampling.sample_stage_1(
        pipe.unet, pipe.scheduler, [views.make_view(n) for n in names], embeddings, **options
    )


def mtl_run(pipe, embeddings, names, seed, steps=STAGE_1_STEPS, **options):
    """The restated MTL Stage I loop, with the paper's own views, as its conti_runner seeds it."""
    views_ = [PAPER_VIEWS[n]() for n in names]
    generator = torch.manual_seed(seed)
    return mtl_stage_1(pipe, embeddings.positive, embeddings.negative, views_, steps, GUIDANCE, generator, **options)


def down_and_up_layers(unet):
    return anti_segregation.readable_attention_layers(unet, ("down", "up"))


def unet_output(unet, seed=0):
    """One plain UNet call on fixed inputs, to see whether anything about the UNet changed."""
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(2, 3, 64, 64, generator=generator)
    states = torch.randn(2, 77, unet.config.encoder_hid_dim, generator=generator)
    with torch.no_grad():
        return unet(sample, 500, encoder_hidden_states=states).sample


# -- faithfulness: the pack against the restated MTL loop ---------------------------------------


def test_concept_spans_are_mtls_last_word_spans(stage_1_pipe):
    ours = [text.concept_token_span(stage_1_pipe.tokenizer, prompt) for prompt in PROMPTS]
    assert ours == mtl_concept_spans(stage_1_pipe.tokenizer, PROMPTS)
    assert len({span for span in ours}) > 1 or ours[0][1] > ours[0][0]


@pytest.mark.parametrize("count", [2, 3])
def test_rectified_stage_1_and_2_match_mtl(count, stage_1_pipe, stage_2_pipe, encode):
    names = VIEW_SETS[count]
    embeddings = embeddings_for(stage_1_pipe, encode, count)
    paper_views = [PAPER_VIEWS[n]() for n in names]
    generator = torch.manual_seed(5)
    expected_1 = mtl_stage_1(
        stage_1_pipe, embeddings.positive, embeddings.negative, paper_views, STAGE_1_STEPS, GUIDANCE, generator
    )
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
    )
    ours_1 = run_stage_1(stage_1_pipe, names, embeddings, seed=5, rectify=True)
    # Stage II refines the reference's Stage I image: its own differences (rectified estimates are
    # rescaled, so rounding grows faster) would otherwise hide Stage II's.
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
    )
    assert (ours_1.images - expected_1).abs().max() <= FAITHFUL
    assert (ours_2.images - expected_2).abs().max() <= FAITHFUL
    # Rectification is not a no-op here: the plain loop gives another picture.
    plain = paper_stage_1(
        stage_1_pipe,
        embeddings.positive,
        embeddings.negative,
        paper_views,
        STAGE_1_STEPS,
        GUIDANCE,
        torch.manual_seed(5),
    )
    assert (plain - expected_1).abs().max() > 1e-2


def test_rectification_with_view_weights_matches_mtl(stage_1_pipe, encode):
    names, weights = VIEW_SETS[3], [3.0, 1.0, 2.0]
    embeddings = embeddings_for(stage_1_pipe, encode, 3)
    expected = mtl_run(stage_1_pipe, embeddings, names, 2, weights=weights)
    ours = run_stage_1(stage_1_pipe, names, embeddings, seed=2, rectify=True, view_weights=weights)
    assert (ours.images - expected).abs().max() <= FAITHFUL


@pytest.mark.parametrize("count", [2, 3])
@pytest.mark.parametrize("rectify", [False, True], ids=["anti_segregation", "both"])
def test_anti_segregation_matches_mtl(count, rectify, stage_1_pipe, encode):
    names = VIEW_SETS[count]
    embeddings = embeddings_for(stage_1_pipe, encode, count)
    spans = list(embeddings.concept_spans)
    expected = mtl_run(stage_1_pipe, embeddings, names, 7, rectify=rectify, concept_spans=spans)
    settings = sampling.AntiSegregation()
    ours = run_stage_1(stage_1_pipe, names, embeddings, seed=7, rectify=rectify, anti_segregation=settings)
    assert (ours.images - expected).abs().max() <= FAITHFUL
    # The update did something: without it the picture differs by more than the bound.
    without = run_stage_1(stage_1_pipe, names, embeddings, seed=7, rectify=rectify)
    assert (without.images - expected).abs().max() > 10 * FAITHFUL


@pytest.fixture(scope="module")
def float64_pipe(stage_1_pipe):
    pipe = copy.deepcopy(stage_1_pipe)
    pipe.unet.to(torch.float64)
    return pipe


@pytest.mark.parametrize("count", [2, 3])
def test_float64_runs_agree_to_rounding(count, float64_pipe, stage_1_pipe, encode):
    """Both techniques at once, four steps, in float64: the same formulas, not merely close ones."""
    names = VIEW_SETS[count]
    embeddings = embeddings_for(stage_1_pipe, encode, count)
    embeddings = sampling.PromptEmbeddings(
        embeddings.positive.double(), embeddings.negative.double(), concept_spans=embeddings.concept_spans
    )
    expected = mtl_run(float64_pipe, embeddings, names, 7, steps=4, concept_spans=list(embeddings.concept_spans))
    ours = run_stage_1(
        float64_pipe,
        names,
        embeddings,
        seed=7,
        num_inference_steps=4,
        rectify=True,
        anti_segregation=sampling.AntiSegregation(),
    )
    assert ours.images.dtype == torch.float64
    assert (ours.images - expected).abs().max() <= FAITHFUL_FLOAT64


# -- exact reductions ---------------------------------------------------------------------------


def test_rectify_with_one_view_is_the_plain_sampler_bit_for_bit(stage_1_pipe, encode):
    embeddings = embeddings_for(stage_1_pipe, encode, 1)
    plain = run_stage_1(stage_1_pipe, ["identity"], embeddings, seed=4)
    rectified = run_stage_1(stage_1_pipe, ["identity"], embeddings, seed=4, rectify=True)
    assert torch.equal(plain.images, rectified.images)


def test_rectified_mean_is_the_published_formula():
    generator = torch.Generator().manual_seed(0)
    shared = torch.randn(2, 3, 8, 8, generator=generator)
    noise = torch.stack([shared + 0.5 * torch.randn(2, 3, 8, 8, generator=generator) for _ in range(3)])
    weights = torch.tensor([0.5, 0.3, 0.2])
    result = rectification.rectified_mean(noise, weights)
    for k in range(2):
        denominator = sum(w * w for w in weights.tolist())
        for i in range(3):
            for j in range(i + 1, 3):
                rho = (noise[i, k] * noise[j, k]).mean().item()
                denominator += 2 * rho * weights[i].item() * weights[j].item()
        expected = sum(weights[i] * noise[i, k] for i in range(3)) / denominator**0.5
        assert torch.allclose(result[k], expected, atol=1e-6)


def test_identical_views_are_rescaled_by_their_second_moment_as_mtl_does():
    """With two identical estimates MTL's factor is 1/sqrt((1 + mean(eps^2)) / 2): exactly 1 only
    for an estimate whose second moment is exactly 1 (the README says so)."""
    estimate = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 1.3
    result = rectification.rectified_mean(torch.stack([estimate, estimate]), torch.tensor([0.5, 0.5]))
    moment = (estimate * estimate).mean()
    assert torch.allclose(result, estimate / ((1 + moment) / 2).sqrt(), atol=1e-6)
    unit = estimate / moment.sqrt()
    assert torch.allclose(rectification.rectified_mean(torch.stack([unit, unit]), torch.tensor([0.5, 0.5])), unit)


def test_cancelling_estimates_give_a_finite_gain():
    estimate = torch.ones(1, 3, 4, 4)
    result = rectification.rectified_mean(torch.stack([estimate, -estimate]), torch.tensor([0.5, 0.5]))
    assert torch.isfinite(result).all()


def test_anti_segregation_with_step_zero_changes_nothing(stage_1_pipe, encode):
    embeddings = embeddings_for(stage_1_pipe, encode, 2)
    plain = run_stage_1(stage_1_pipe, VIEW_SETS[2], embeddings, seed=1)
    still = run_stage_1(
        stage_1_pipe, VIEW_SETS[2], embeddings, seed=1, anti_segregation=sampling.AntiSegregation(step_size=0.0)
    )
    assert torch.equal(plain.images, still.images)


# -- candidates, memory, isolation --------------------------------------------------------------


def test_anti_segregation_candidate_k_matches_the_single_run_with_seed_plus_k(stage_1_pipe, encode):
    embeddings = embeddings_for(stage_1_pipe, encode, 2)
    settings = sampling.AntiSegregation()
    batch = run_stage_1(stage_1_pipe, VIEW_SETS[2], embeddings, seed=10, num_candidates=3, anti_segregation=settings)
    single = run_stage_1(stage_1_pipe, VIEW_SETS[2], embeddings, seed=12, anti_segregation=settings)
    assert (batch.images[2:] - single.images).abs().max() <= 1e-4


@contextlib.contextmanager
def recording_batch_sizes(unet):
    sizes = []
    original = unet.forward

    def counted(sample, *args, **kwargs):
        sizes.append((sample.shape[0], torch.is_grad_enabled()))
        return original(sample, *args, **kwargs)

    unet.forward = counted
    try:
        yield sizes
    finally:
        del unet.forward


def test_anti_segregation_takes_one_view_at_a_time_when_the_batch_is_capped(stage_1_pipe, encode):
    embeddings = embeddings_for(stage_1_pipe, encode, 3)
    settings = sampling.AntiSegregation(steps=2)
    whole = run_stage_1(stage_1_pipe, VIEW_SETS[3], embeddings, seed=3, anti_segregation=settings)
    with recording_batch_sizes(stage_1_pipe.unet) as sizes:
        capped = run_stage_1(
            stage_1_pipe, VIEW_SETS[3], embeddings, seed=3, anti_segregation=settings, max_batch_size=1
        )
    assert {size for size, _ in sizes} == {1}
    # The gradient passes: 2 refined steps x 3 views, each with gradients on.
    assert sum(1 for _, grad in sizes if grad) == 2 * 3
    # The same gradient, put together chunk by chunk (batch-size rounding apart).
    assert (capped.images - whole.images).abs().max() <= 1e-4


def test_anti_segregation_leaves_the_unet_and_other_models_as_they_were(stage_1_pipe, encode, tiny_models):
    from diffusers import UNet2DConditionModel
    from diffusers.models import attention_processor

    unet = stage_1_pipe.unet
    other = UNet2DConditionModel.from_pretrained(tiny_models.stage_1, subfolder="unet")
    processors_before = dict(unet.attn_processors)
    class_call_before = attention_processor.AttnAddedKVProcessor2_0.__call__
    attention_forward_before = attention_processor.Attention.forward
    outputs_before = unet_output(unet), unet_output(other)

    embeddings = embeddings_for(stage_1_pipe, encode, 2)
    run_stage_1(stage_1_pipe, VIEW_SETS[2], embeddings, anti_segregation=sampling.AntiSegregation())

    assert unet.attn_processors == processors_before
    assert attention_processor.AttnAddedKVProcessor2_0.__call__ is class_call_before
    assert attention_processor.Attention.forward is attention_forward_before
    assert torch.equal(unet_output(unet), outputs_before[0])
    assert torch.equal(unet_output(other), outputs_before[1])
    assert all(parameter.grad is None for parameter in unet.parameters())


def test_processors_are_restored_when_the_recorded_call_fails(stage_1_pipe):
    unet = stage_1_pipe.unet
    before = dict(unet.attn_processors)
    mask = torch.zeros(1, 77)
    with pytest.raises(RuntimeError, match="boom"):
        with anti_segregation.recording_concept_attention(down_and_up_layers(unet), mask):
            raise RuntimeError("boom")
    assert unet.attn_processors == before


def test_the_recorder_computes_the_layers_own_output(stage_1_pipe):
    """Recording must not change what the UNet computes (explicit softmax vs SDPA: rounding only)."""
    unet = stage_1_pipe.unet
    plain = unet_output(unet)
    with anti_segregation.recording_concept_attention(down_and_up_layers(unet), torch.zeros(2, 77)) as records:
        recorded = unet_output(unet)
    assert records and all(concept.shape[0] == 2 for _, concept in records)
    assert (recorded - plain).abs().max() <= 1e-5


def test_anti_segregation_runs_inside_a_callers_inference_mode(tiny_models):
    """ComfyUI runs nodes inside torch.inference_mode(); the pack's loaders make weights autograd accepts."""
    with torch.inference_mode():
        loaded = sampling.load_if_stage(str(tiny_models.stage_1), 1, device=torch.device("cpu"), dtype="fp32")
        t5 = sampling.load_t5(str(tiny_models.stage_1), precision="fp32", device=torch.device("cpu"))
        embeddings = sampling.encode_prompts(t5, ["a horse", "a deer"], style="an oil painting of")
        result = sampling.sample_stage_1(
            loaded.pipeline.unet,
            loaded.pipeline.scheduler,
            [views.make_view("identity"), views.make_view("flip")],
            embeddings,
            num_inference_steps=2,
            anti_segregation=sampling.AntiSegregation(),
        )
    assert torch.isfinite(result.images).all()


# -- clear refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "overrides", "input_name", "fragment"),
    [
        (["identity", "negate"], {}, "anti-segregation", "changes colours or frequencies"),
        (["low_pass", "high_pass"], {"reduction": "sum"}, "anti-segregation", "changes colours or frequencies"),
        (["identity"], {}, "anti-segregation", "2 or more views"),
        (["identity", "flip"], {"settings": {"attention_size": 16}}, "anti-segregation", "attend at 32 px"),
        (["identity", "flip"], {"settings": {"step_size": float("nan")}}, "anti-segregation", "step size"),
        (["identity", "flip"], {"settings": {"blocks": ("side",)}}, "anti-segregation", "blocks must be"),
        (["identity", "flip"], {"spans": None}, "prompt embeddings", "concept-word tokens"),
        (["identity", "flip"], {"spans": ((5, 6), None)}, "concept words", "past IF's first 77 tokens"),
    ],
)
def test_anti_segregation_refuses_what_it_cannot_do(names, overrides, input_name, fragment, stage_1_pipe, encode):
    positive, negative = encode(PROMPTS[: len(names)])
    spans = overrides.get("spans", tuple((5, 6) for _ in names))
    embeddings = sampling.PromptEmbeddings(positive, negative, concept_spans=spans)
    settings = sampling.AntiSegregation(**overrides.get("settings", {}))
    with pytest.raises(sampling.SamplingInputError, match=fragment) as raised:
        run_stage_1(
            stage_1_pipe, names, embeddings, anti_segregation=settings, reduction=overrides.get("reduction", "mean")
        )
    assert raised.value.input_name == input_name


@pytest.mark.parametrize("reduction", ["sum", "alternate"])
def test_rectify_needs_the_mean(reduction, stage_1_pipe, encode):
    embeddings = embeddings_for(stage_1_pipe, encode, 2)
    with pytest.raises(sampling.SamplingInputError, match="reduction") as raised:
        run_stage_1(stage_1_pipe, VIEW_SETS[2], embeddings, rectify=True, reduction=reduction)
    assert raised.value.input_name == "rectify"


def test_a_named_concept_word_must_be_in_its_prompt(stage_1_pipe):
    assert text.concept_token_span(stage_1_pipe.tokenizer, "an oil painting of a horse", "painting") == (2, 3)
    with pytest.raises(sampling.SamplingInputError, match="'deer' is not a word of prompt 2") as raised:
        text.concept_token_span(stage_1_pipe.tokenizer, "an oil painting of a horse", "deer", prompt_number=2)
    assert raised.value.input_name == "concept words"
