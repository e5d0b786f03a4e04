"""demo/evaluate.py's Anagram-MTL and picture options: ``sample`` hands them to the Stage I sampler,
--compare-mtl's table has a row per pairing, a column per variant and a mean that leaves the
trivial pairing out, and --from-picture compares text only with runs from real 2s (one per seed)
or one PNG at each strength. The sampler and the scoring are stubbed: no model runs here."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import evaluate  # demo/evaluate.py
from pack import import_submodule

sampling = import_submodule("sampling")


def test_sample_passes_rectify_and_anti_segregation_to_stage_1(monkeypatch):
    calls = []

    def fake_stage_1(unet, scheduler, views, embeddings, **options):
        calls.append(options)
        return SimpleNamespace(images=torch.zeros(options["num_candidates"], 3, 64, 64))

    monkeypatch.setattr(sampling, "sample_stage_1", fake_stage_1)
    model = SimpleNamespace(unet=None, scheduler=None, encode=lambda prompts: prompts)
    settings = sampling.AntiSegregation(step_size=20.0)

    evaluate.sample(model, ["identity", "flip"], ["a", "b"], seeds=2)
    evaluate.sample(model, ["identity", "flip"], ["a", "b"], seeds=2, rectify=True, anti_segregation=settings)

    assert (calls[0]["rectify"], calls[0]["anti_segregation"]) == (False, None)
    assert (calls[1]["rectify"], calls[1]["anti_segregation"]) == (True, settings)


def test_compare_mtl_prints_one_table_and_leaves_the_trivial_pairing_out_of_the_mean(monkeypatch, capsys):
    # Rates that tell the variants apart: 0.5 plus 0.25 per option the run was given.
    def fake_success(model, classifier, view, first, second, *, seeds, steps, guidance, **options):
        rate = 1.0 if (view, first, second) in evaluate.TRIVIAL else 0.5 + 0.25 * len(options)
        return rate, [rate, rate], torch.zeros(seeds, 3, 64, 64)

    monkeypatch.setattr(evaluate, "illusion_success", fake_success)
    pairings = [("flip", 2, 5), ("rotate_180", 6, 9)]
    settings = sampling.AntiSegregation()
    evaluate.compare_mtl(None, None, pairings, settings, seeds=4, steps=30, guidance=4.0)

    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert table[0] == "| pairing | baseline | rectify | anti-segregation | both |"
    assert table[2] == "| 2 / flip → 5 | 50% | 75% | 75% | 100% |"
    assert table[3] == "| 6 / rotate 180 → 9 (trivial) | 100% | 100% | 100% | 100% |"
    assert table[4] == "| **mean over the non-trivial pairings** | **50%** | **75%** | **75%** | **100%** |"
    assert table[5].startswith("| wall time | ") and len(table) == 6


def test_the_anti_segregation_overrides_need_compare_mtl():
    with pytest.raises(SystemExit):
        evaluate.main(["--anti-segregation-step", "20"])


def test_sample_passes_the_start_image_and_strength_to_stage_1(monkeypatch):
    calls = []

    def fake_stage_1(unet, scheduler, views, embeddings, **options):
        calls.append(options)
        return SimpleNamespace(images=torch.zeros(options["num_candidates"], 3, 64, 64))

    monkeypatch.setattr(sampling, "sample_stage_1", fake_stage_1)
    model = SimpleNamespace(unet=None, scheduler=None, encode=lambda prompts: prompts)
    start = torch.ones(2, 3, 64, 64)

    evaluate.sample(model, ["identity", "flip"], ["a", "b"], seeds=2)
    evaluate.sample(model, ["identity", "flip"], ["a", "b"], seeds=2, start_image=start, strength=0.7)

    assert (calls[0]["start_image"], calls[0]["strength"]) == (None, 1.0)
    assert calls[1]["start_image"] is start and calls[1]["strength"] == 0.7


def test_from_picture_starts_each_seed_from_its_own_held_out_two():
    start, source = evaluate.start_pictures(None, 3)
    split = evaluate.digits.load_split()
    twos = split.test_images[split.test_labels == 2]

    assert torch.equal(start, evaluate.digits.to_model(twos[:3]))  # seed s: the s-th test "2"
    assert not torch.equal(start[0], start[1]) and "s-th held-out test-split 2" in source
    with pytest.raises(ValueError, match="fewer than"):
        evaluate.start_pictures(None, len(twos) + 1)


def test_from_picture_reads_one_png_for_every_seed(tmp_path):
    picture = evaluate.digits.to_model(evaluate.digits.load_split().test_images[:1])
    path = tmp_path / "two.png"
    evaluate.digits.to_pil(picture)[0].save(path)

    start, source = evaluate.start_pictures(path, 20)

    assert start.shape == (1, 3, 64, 64) and source == str(path)
    assert (start - picture).abs().max() <= 1 / 127.5  # 8-bit rounding only
    evaluate.digits.to_pil(picture, scale=2)[0].save(path)
    with pytest.raises(ValueError, match="128x128 px"):
        evaluate.start_pictures(path, 20)


def test_compare_from_picture_runs_text_only_then_each_strength_and_prints_one_table(monkeypatch, capsys):
    calls = []

    # Rates that tell the runs apart: the strength (1 for the text-only run); the samples are blank paper.
    def fake_success(model, classifier, view, first, second, *, seeds, steps, guidance, **options):
        calls.append(((view, first, second), options))
        rate = options.get("strength", 1.0)
        return rate, [rate, rate / 2], torch.zeros(seeds, 3, 64, 64)

    monkeypatch.setattr(evaluate, "illusion_success", fake_success)
    reads_two = SimpleNamespace(predict=lambda images: np.full(len(images), 2))
    start = torch.full((4, 3, 64, 64), 0.5)
    evaluate.compare_from_picture(None, reads_two, start, [0.5, 0.9], source="real 2s", seeds=4, steps=30, guidance=4.0)

    assert [pairing for pairing, _ in calls] == [("flip", 2, 5)] * 3
    assert calls[0][1] == {}
    assert [(options["start_image"], options["strength"]) for _, options in calls[1:]] == [(start, 0.5), (start, 0.9)]
    out = capsys.readouterr().out
    assert "the start pictures as they are, real 2s: 0% read right in both views (as it is 100%, flip 0%)" in out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0] == (
        "| setting | success % (both views read) | view 1 read as 2 % | flip read as 5 % "
        "| mean \\|output − start\\| | seconds |"
    )
    assert table[2].startswith("| text only | 100 | 100 | 50 | 0.500 | ")
    assert table[3].startswith("| from the picture, strength 0.5 (15 of 30 steps) | 50 | 50 | 25 | 0.500 | ")
    assert table[4].startswith("| from the picture, strength 0.9 (27 of 30 steps) | 90 | 90 | 45 | 0.500 | ")
    assert len(table) == 5


def test_main_hands_the_start_pictures_and_default_strengths_to_the_comparison(monkeypatch):
    received = {}
    monkeypatch.setattr(evaluate.digits, "classifier", lambda: SimpleNamespace(held_out_accuracy=lambda split: 1.0))
    monkeypatch.setattr(evaluate, "load_demo", lambda path: SimpleNamespace(unet=torch.nn.Linear(1, 1)))
    monkeypatch.setattr(
        evaluate, "compare_from_picture", lambda *args, **kwargs: received.update(args=args, kwargs=kwargs)
    )

    assert evaluate.main(["--from-picture", "--seeds", "3"]) == 0

    _model, _classifier, start, strengths = received["args"]
    assert torch.equal(start, evaluate.start_pictures(None, 3)[0]) and tuple(strengths) == evaluate.STRENGTHS
    assert received["kwargs"]["seeds"] == 3 and received["kwargs"]["steps"] == evaluate.STEPS


@pytest.mark.parametrize(
    "argv",
    [
        ["--strengths", "0.5"],
        ["--picture", "two.png"],
        ["--from-picture", "--compare-mtl"],
        ["--from-picture", "--pairing", "flip:6:9"],
        ["--from-picture", "--strengths", "1.5"],
        ["--from-picture", "--seeds", "1000"],  # more seeds than held-out 2s
    ],
)
def test_the_from_picture_options_are_checked_before_anything_loads(argv):
    with pytest.raises(SystemExit):
        evaluate.main(argv)
