"""Self-checks of tests/mtl_reference.py: where MTL's loop must reduce to the published one, and that
its anti-segregation step acts on the image without changing the shared UNet."""

import torch

from mtl_reference import mtl_concept_spans, mtl_stage_1
from paper_reference import PAPER_VIEWS, paper_stage_1

PROMPTS = ["an oil painting of a horse", "an oil painting of a deer"]
STEPS = 3
GUIDANCE = 7.0


def _views(*names):
    return [PAPER_VIEWS[name]() for name in names]


def test_concept_spans_are_the_last_words_tokens(stage_1_pipe):
    spans = mtl_concept_spans(stage_1_pipe.tokenizer, PROMPTS)
    ids = stage_1_pipe.tokenizer(PROMPTS[0])["input_ids"]
    assert spans == [(5, 6), (5, 6)]
    assert stage_1_pipe.tokenizer.convert_ids_to_tokens(ids[5:6]) == ["\u2581horse"]


def test_unrectified_uniform_mix_is_the_published_mean(stage_1_pipe, encode):
    positive, negative = encode(PROMPTS)
    views = _views("identity", "flip")
    expected = paper_stage_1(stage_1_pipe, positive, negative, views, STEPS, GUIDANCE, torch.manual_seed(3))
    actual = mtl_stage_1(stage_1_pipe, positive, negative, views, STEPS, GUIDANCE, torch.manual_seed(3), rectify=False)
    assert torch.equal(actual, expected)


def test_rectifying_one_view_changes_nothing(stage_1_pipe, encode):
    positive, negative = encode(PROMPTS[:1])
    views = _views("identity")
    expected = paper_stage_1(stage_1_pipe, positive, negative, views, STEPS, GUIDANCE, torch.manual_seed(4))
    actual = mtl_stage_1(stage_1_pipe, positive, negative, views, STEPS, GUIDANCE, torch.manual_seed(4))
    assert torch.equal(actual, expected)


def test_anti_segregation_moves_the_image_only_with_a_step(stage_1_pipe, encode):
    positive, negative = encode(PROMPTS)
    views = _views("identity", "rotate_cw")
    spans = mtl_concept_spans(stage_1_pipe.tokenizer, PROMPTS)
    probe = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    unet_before = stage_1_pipe.unet(probe, 500, encoder_hidden_states=positive, return_dict=False)[0]

    def run(**options):
        return mtl_stage_1(stage_1_pipe, positive, negative, views, STEPS, GUIDANCE, torch.manual_seed(5), **options)

    plain = run()
    # One anti-segregation step (after the first denoising step) keeps this quick on a CPU.
    assert torch.equal(run(concept_spans=spans, anti_segregation_steps=1, step_size=0.0), plain)
    assert not torch.equal(run(concept_spans=spans, anti_segregation_steps=1), plain)

    unet_after = stage_1_pipe.unet(probe, 500, encoder_hidden_states=positive, return_dict=False)[0]
    assert torch.equal(unet_after, unet_before)
    assert all(parameter.grad is None for parameter in stage_1_pipe.unet.parameters())
    processors = {type(processor).__name__ for processor in stage_1_pipe.unet.attn_processors.values()}
    assert processors == {"AttnAddedKVProcessor2_0"}


def test_balancing_with_equal_similarities_is_the_uniform_mix(stage_1_pipe, encode):
    """The reference's balancing weighs views by their similarity only: equal ones give MTL's uniform mix."""
    import numpy as np

    positive, negative = encode(PROMPTS)
    views = _views("identity", "flip")
    seen = []

    def similarity(images, t):
        seen.append((images.clone(), int(t)))
        return np.full((2, 2), 0.3, dtype=np.float32)

    uniform = mtl_stage_1(stage_1_pipe, positive, negative, views, STEPS, GUIDANCE, torch.manual_seed(6))
    balanced = mtl_stage_1(
        stage_1_pipe, positive, negative, views, STEPS, GUIDANCE, torch.manual_seed(6), similarity=similarity
    )
    assert torch.equal(balanced, uniform)
    # MTL's input to its CLIP: every view of the noisy image, mapped by / 2 + 0.5, once per step.
    assert len(seen) == STEPS and seen[0][0].shape == (2, 3, 64, 64)
