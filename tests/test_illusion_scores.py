"""The paper's illusion scores (alignment, concealment) by hand, the ranking, and the CLIP loader on a tiny
random CLIP in the transformers layout (tests/tiny_clip.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from pack import import_submodule
from tiny_clip import write_tiny_clip

sampling = import_submodule("sampling")
views = import_submodule("views")
scores = import_submodule("sampling.illusion_scores")
clip_models = import_submodule("sampling.clip_models")


def scores_of(similarities, temperature=0.1):
    similarities = torch.as_tensor(similarities, dtype=torch.float32)
    return scores.IllusionScores(
        similarities=similarities,
        alignment=scores.alignment_scores(similarities),
        concealment=scores.concealment_scores(similarities, temperature),
        temperature=temperature,
    )


# -- the metrics by hand -------------------------------------------------------------------------------------


def test_alignment_and_concealment_by_hand():
    # One candidate, two views: view 1 shows prompt 1 best, view 2 prompt 2 (less clearly).
    s = [[0.30, 0.10], [0.20, 0.25]]
    result = scores_of([s], temperature=0.1)
    assert result.alignment.tolist() == pytest.approx([0.25])
    over_prompts = [math.exp(3.0) / (math.exp(3.0) + math.exp(1.0)), math.exp(2.5) / (math.exp(2.0) + math.exp(2.5))]
    over_views = [math.exp(3.0) / (math.exp(3.0) + math.exp(2.0)), math.exp(2.5) / (math.exp(1.0) + math.exp(2.5))]
    expected = (sum(over_prompts) + sum(over_views)) / 4
    assert result.concealment.tolist() == pytest.approx([expected], abs=1e-6)  # 0.7630


def test_concealment_is_one_for_a_perfect_illusion_and_one_over_n_for_an_undecided_one():
    perfect = torch.eye(3) * 0.3
    undecided = torch.full((3, 3), 0.3)
    result = scores_of(torch.stack([perfect, undecided]), temperature=0.01)
    assert result.concealment.tolist() == pytest.approx([1.0, 1 / 3], abs=1e-6)
    assert result.alignment.tolist() == pytest.approx([0.3, 0.3])


def test_the_temperature_must_be_positive():
    with pytest.raises(sampling.SamplingInputError, match="positive"):
        scores.concealment_scores(torch.zeros(1, 2, 2), 0.0)


# -- ranking -------------------------------------------------------------------------------------------------------


def test_ranking_orders_by_each_score_and_by_both():
    result = scores.IllusionScores(
        similarities=torch.zeros(4, 2, 2),  # ranking reads the two scores only
        alignment=torch.tensor([0.10, 0.30, 0.20, 0.25]),
        concealment=torch.tensor([0.99, 0.55, 0.98, 0.985]),
        temperature=0.01,
    )
    assert scores.rank_candidates(result, "alignment") == [1, 3, 2, 0]
    assert scores.rank_candidates(result, "concealment") == [0, 3, 2, 1]
    # both: places (alignment, concealment): 0: (3, 0), 1: (0, 3), 2: (2, 2), 3: (1, 1) -> sums 3, 3, 4, 2;
    # candidates 0 and 1 tie and go by alignment.
    assert scores.rank_candidates(result, "both") == [3, 1, 0, 2]


def test_candidates_with_broken_scores_rank_last():
    similarities = torch.tensor([[[0.2, 0.0], [0.0, 0.2]], [[float("nan"), 0.0], [0.0, 0.3]], [[0.1, 0.0], [0.0, 0.1]]])
    result = scores_of(similarities)
    for by in scores.RANK_BY:
        assert scores.rank_candidates(result, by)[-1] == 1


def test_an_unknown_ranking_is_refused():
    with pytest.raises(sampling.SamplingInputError, match="both, alignment, concealment"):
        scores.rank_candidates(scores_of(torch.zeros(1, 2, 2)), "beauty")


# -- with a real (tiny) CLIP --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip_folder(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def clip(tiny_clip_folder):
    return clip_models.load_clip(tiny_clip_folder, device="cpu")


def test_score_matrix_is_each_view_of_each_candidate_against_each_prompt(clip):
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    chosen = [views.make_view("identity"), views.make_view("rotate_cw"), views.make_view("negate")]
    texts = ["an oil painting of a deer", "a waterfall", "a rabbit"]
    result = scores.score_illusions(clip, images, chosen, texts)
    assert result.similarities.shape == (3, 3, 3)
    text = clip.text_embeddings(texts)
    for k in range(3):
        for i, view in enumerate(chosen):
            image = clip.image_embeddings(view.preview(images[k : k + 1]))[0]
            for j in range(3):
                assert result.similarities[k, i, j].item() == pytest.approx(float(image @ text[j]), abs=1e-5)
    assert result.temperature == pytest.approx(clip.temperature)
    assert torch.equal(result.alignment, scores.alignment_scores(result.similarities))


def test_hybrid_views_are_scored_as_a_person_sees_them(clip):
    """A factorized view's preview (the picture from afar) is what CLIP judges, not its component alone."""
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    low, high = views.make_view("low_pass"), views.make_view("high_pass")
    result = scores.score_illusions(clip, images, [low, high], ["a deer", "a rabbit"])
    seen = clip.image_embeddings(low.preview(images))[0] @ clip.text_embeddings(["a deer"])[0]
    assert result.similarities[0, 0, 0].item() == pytest.approx(float(seen), abs=1e-5)


def test_one_prompt_per_view(clip):
    with pytest.raises(sampling.SamplingInputError, match="one prompt per view"):
        scores.score_illusions(clip, torch.zeros(1, 3, 64, 64), [views.make_view("identity")], ["a", "b"])


def test_embeddings_are_unit_norm_and_pictures_prepared_as_clips_processor_does(clip, tiny_clip_folder):
    from transformers import CLIPImageProcessor

    text = clip.text_embeddings(["a deer", "a waterfall"])
    assert text.shape == (2, 16) and torch.allclose(text.norm(dim=-1), torch.ones(2))
    # At the model's own size the preparation is the processor's normalisation exactly.
    picture = torch.rand(1, 3, clip.image_size, clip.image_size, generator=torch.Generator().manual_seed(2))
    processor = CLIPImageProcessor.from_pretrained(str(tiny_clip_folder))
    expected = processor(images=picture, do_rescale=False, return_tensors="pt").pixel_values
    assert (clip.prepare(picture * 2 - 1) - expected).abs().max() <= 1e-5
    # Larger pictures are resized to it (bicubic, antialiased).
    large = F.interpolate(picture, scale_factor=2, mode="nearest") * 2 - 1
    assert clip.prepare(large).shape == (1, 3, clip.image_size, clip.image_size)


def test_temperature_is_clips_own(tiny_clip_folder, tmp_path):
    folder = write_tiny_clip(tmp_path / "sharp", logit_scale=math.log(100.0))
    assert clip_models.load_clip(folder, device="cpu").temperature == pytest.approx(0.01)


def test_released_clip_says_so(tiny_clip_folder):
    loaded = clip_models.load_clip(tiny_clip_folder, device="cpu")
    loaded.release()
    with pytest.raises(sampling.ModelLoadError, match="released"):
        loaded.text_embeddings(["a deer"])


# -- the loader's refusals -----------------------------------------------------------------------------------------


def copy_folder(source, target, skip=()):
    target.mkdir()
    for path in source.iterdir():
        if path.name not in skip:
            (target / path.name).write_bytes(path.read_bytes())
    return target


def test_refuses_pickled_weights(tiny_clip_folder, tmp_path):
    folder = copy_folder(tiny_clip_folder, tmp_path / "pickled", skip={"model.safetensors"})
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(sampling.ModelLoadError, match="pickled files .*safetensors"):
        clip_models.load_clip(folder, device="cpu")


def test_refuses_a_vision_only_clip(tiny_clip_folder, tmp_path):
    folder = copy_folder(tiny_clip_folder, tmp_path / "vision")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "clip_vision_model"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(sampling.ModelLoadError, match="not a CLIP with both image and text towers"):
        clip_models.load_clip(folder, device="cpu")


def test_refuses_an_open_clip_checkpoint(tmp_path):
    folder = tmp_path / "open-clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text("{}")
    with pytest.raises(sampling.ModelLoadError, match="open_clip checkpoint"):
        clip_models.load_clip(folder, device="cpu")


def test_refuses_a_folder_without_tokenizer(tiny_clip_folder, tmp_path):
    folder = copy_folder(tiny_clip_folder, tmp_path / "no-tokenizer", skip={"vocab.json", "tokenizer.json"})
    with pytest.raises(sampling.ModelLoadError, match="no CLIP tokenizer"):
        clip_models.load_clip(folder, device="cpu")


def test_refuses_a_truncated_weights_file(tiny_clip_folder, tmp_path):
    folder = copy_folder(tiny_clip_folder, tmp_path / "truncated")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(sampling.ModelLoadError, match="model.safetensors"):
        clip_models.load_clip(folder, device="cpu")


def test_a_missing_folder_says_where_clips_go(tmp_path):
    with pytest.raises(sampling.ModelLoadError, match="does not exist.*clip_vision"):
        clip_models.load_clip(tmp_path / "nothing", device="cpu")


def test_an_uncached_hub_id_offline_names_the_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(sampling.ModelLoadError, match="openai/clip-vit-base-patch32"):
        clip_models.load_clip("openai/clip-vit-base-patch32", device="cpu")
