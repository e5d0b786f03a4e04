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


# -- --ranking and --balancing: a CLIP judges, the classifier grades ---------------------------------------


class DigitReader:
    """Stands in for both judges of pictures whose top half's grey level encodes a digit (d / 10): the classifier
    reads that digit, the CLIP embeds it one-hot and each prompt one-hot by its digit word."""

    temperature = 0.01
    source = "digit reader"

    @staticmethod
    def read(images):
        return (images[:, :, :32].mean((1, 2, 3)) * 10).round().long()

    def predict(self, images):
        return self.read(images).numpy()

    def held_out_accuracy(self, split):
        return 1.0

    def image_embeddings(self, images, timesteps=None):
        return torch.nn.functional.one_hot(self.read(images), 10).float()

    def text_embeddings(self, texts):
        words = [evaluate.digits.DIGIT_WORDS.index(text.split()[-1]) for text in texts]
        return torch.nn.functional.one_hot(torch.tensor(words), 10).float()


def halves(top: int, bottom: int) -> torch.Tensor:
    """A picture reading ``top`` as it is and ``bottom`` turned 180 degrees (for :class:`DigitReader`)."""
    picture = torch.full((3, 64, 64), top / 10)
    picture[:, 32:] = bottom / 10
    return picture


def test_compare_ranking_grades_the_candidates_the_clip_ranks_first(monkeypatch, capsys):
    # Three runs of four candidates of 2 / rotate 180 -> 7: the illusion (2 up, 7 turned) is candidate 3 of run 0
    # and candidate 1 of run 1; run 2 has none. The others read 2 both ways, so only a ranking that scores each
    # view against its own prompt puts the illusion first (ties would go to candidate 0).
    good, bad = halves(2, 7), halves(2, 2)
    runs = [[bad, bad, bad, good], [bad, good, bad, bad], [bad, bad, bad, bad]]
    trivial = halves(6, 9)  # the trivial pairing: every candidate right
    batches = {(2, 7): torch.stack([p for run in runs for p in run]), (6, 9): trivial.expand(12, 3, 64, 64)}
    asked = []

    def fake_sample(model, view_names, prompts, *, seeds, steps, guidance, **options):
        asked.append((view_names, prompts, seeds))
        first, second = (evaluate.digits.DIGIT_WORDS.index(p.split()[-1]) for p in prompts)
        return batches[(first, second)]

    monkeypatch.setattr(evaluate, "sample", fake_sample)
    reader = DigitReader()
    pairings = [("rotate_180", 2, 7), ("rotate_180", 6, 9)]
    evaluate.compare_ranking(None, reader, reader, pairings, seeds=3, candidates=4, steps=30, guidance=4.0)

    assert asked[0] == (["identity", "rotate_180"], ["the digit two", "the digit seven"], 12)
    out = capsys.readouterr().out
    assert "3 runs (seeds 0..2) of 4 candidates each, 30 steps, guidance 4.0; CLIP digit reader" in out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0] == (
        "| pairing | all candidates | top 1 by both | top 1 by alignment | top 1 by concealment | top 2 by both "
        "| top 2 by alignment | top 2 by concealment | best of 4 |"
    )
    # all: 2 of 12; top 1: 2 of 3 runs; top 2: 2 of 6 picks; best of 4: 2 of 3 runs.
    assert table[2] == "| 2 / rotate 180 → 7 | 17% | 67% | 67% | 67% | 33% | 33% | 33% | 67% |"
    assert table[3] == "| 6 / rotate 180 → 9 (trivial) | 100% | 100% | 100% | 100% | 100% | 100% | 100% | 100% |"
    assert table[4] == (
        "| **mean over the non-trivial pairings** | **17%** | **67%** | **67%** | **67%** | **33%** | **33%** "
        "| **33%** | **67%** |"
    )
    assert len(table) == 5


def test_sample_balances_the_views_against_the_prompts_with_the_clip(monkeypatch):
    calls = []

    def fake_stage_1(unet, scheduler, views, embeddings, **options):
        calls.append(options)
        return SimpleNamespace(images=torch.zeros(options["num_candidates"], 3, 64, 64))

    monkeypatch.setattr(sampling, "sample_stage_1", fake_stage_1)
    model = SimpleNamespace(unet=None, scheduler=None, encode=lambda prompts: prompts)
    scorer = DigitReader()

    evaluate.sample(model, ["identity", "flip"], ["the digit two", "the digit five"], seeds=2)
    evaluate.sample(model, ["identity", "flip"], ["the digit two", "the digit five"], seeds=2, balancing_clip=scorer)

    assert calls[0]["balancing"] is None
    balancing = calls[1]["balancing"]
    assert isinstance(balancing, import_submodule("sampling.balancing").ViewBalancing)
    assert balancing.scorer is scorer and balancing.texts == ("the digit two", "the digit five")


def test_compare_balancing_samples_without_then_with_the_clip(monkeypatch, capsys):
    calls = []

    def fake_success(model, classifier, view, first, second, *, seeds, steps, guidance, **options):
        calls.append(options)
        rate = 1.0 if (view, first, second) in evaluate.TRIVIAL else 0.25 + 0.5 * ("balancing_clip" in options)
        return rate, [rate, rate], torch.zeros(seeds, 3, 64, 64)

    monkeypatch.setattr(evaluate, "illusion_success", fake_success)
    scorer = DigitReader()
    pairings = [("flip", 2, 5), ("rotate_180", 6, 9)]
    evaluate.compare_balancing(None, None, scorer, pairings, seeds=4, steps=30, guidance=4.0)

    assert calls == [{}, {"balancing_clip": scorer}] * 2
    out = capsys.readouterr().out
    assert "balancing by the CLIP digit reader" in out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0] == "| pairing | balancing off | balancing on |"
    assert table[2] == "| 2 / flip → 5 | 25% | 75% |"
    assert table[3] == "| 6 / rotate 180 → 9 (trivial) | 100% | 100% |"
    assert table[4] == "| **mean over the non-trivial pairings** | **25%** | **75%** |"
    assert table[5].startswith("| time per illusion | ") and len(table) == 6


@pytest.mark.parametrize(
    "argv",
    [
        ["--clip", "clip-folder"],
        ["--candidates", "4"],
        ["--balancing", "--candidates", "4"],
        ["--ranking", "--balancing"],
        ["--ranking", "--compare-mtl"],
        ["--balancing", "--from-picture"],
        ["--ranking", "--candidates", "1"],
    ],
)
def test_the_clip_options_are_checked_before_anything_loads(argv):
    with pytest.raises(SystemExit):
        evaluate.main(argv)


# -- the digits CLIP, trained for a few steps, through the real loader and the real demo model -----------------


@pytest.fixture(scope="module")
def digits_clip_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits-clip")
    evaluate.digits_clip.train(folder, steps=3, per_digit=2, negatives=4, log=lambda line: None)
    return folder


def test_the_digits_clip_folder_loads_with_the_pack_loader(digits_clip_folder):
    scorer = import_submodule("sampling.clip_models").load_clip(digits_clip_folder, device="cpu")
    prompts = list(evaluate.digits_clip.PROMPTS)

    tokens = scorer.tokenizer(prompts).input_ids
    assert all(len(ids) == 5 for ids in tokens)  # start, "the", "digit", the digit's word, end
    assert scorer.tokenizer.batch_decode(tokens, skip_special_tokens=True) == prompts
    assert scorer.image_size == 64 and abs(scorer.temperature - 0.01) < 1e-6
    assert scorer.image_mean != import_submodule("sampling.clip_models").OPENAI_CLIP_MEAN  # its own normalisation
    assert scorer.text_embeddings(prompts).shape == (10, 64)
    assert evaluate.digits_clip.zero_shot(scorer, torch.zeros(3, 3, 64, 64)).shape == (3,)


def run_main(monkeypatch, argv):
    monkeypatch.setattr(evaluate.digits, "classifier", DigitReader)  # no SVM fit: these tests check the plumbing
    return evaluate.main(argv)


@pytest.mark.slow  # the demo model samples (a few seconds)
def test_main_ranking_samples_scores_and_prints_the_table(monkeypatch, capsys, digits_clip_folder):
    argv = ["--ranking", "--clip", str(digits_clip_folder), "--pairing", "flip:2:5", "--seeds", "2"]
    assert run_main(monkeypatch, [*argv, "--candidates", "3", "--steps", "2"]) == 0

    out = capsys.readouterr().out
    assert f"CLIP: {digits_clip_folder}: zero-shot" in out
    assert "2 runs (seeds 0..1) of 3 candidates each, 2 steps" in out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0].startswith("| pairing | all candidates | top 1 by both |") and table[0].endswith("best of 3 |")
    assert table[2].startswith("| 2 / flip → 5 | ") and len(table) == 4  # and the mean


@pytest.mark.slow  # the demo model samples (a few seconds)
def test_main_balancing_weighs_every_step_of_the_balanced_run(monkeypatch, capsys, digits_clip_folder):
    bound = import_submodule("sampling.balancing").BoundBalancing
    weighed = []
    original = bound.weights
    monkeypatch.setattr(bound, "weights", lambda self, *args: weighed.append(args[-1]) or original(self, *args))
    argv = ["--balancing", "--clip", str(digits_clip_folder), "--pairing", "flip:2:5", "--seeds", "2"]
    assert run_main(monkeypatch, [*argv, "--steps", "3"]) == 0

    assert weighed == [0, 1, 2]  # the balanced run's three steps, none of the plain run's
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert table[0] == "| pairing | balancing off | balancing on |"
    assert table[2].startswith("| 2 / flip → 5 | ") and table[-1].startswith("| time per illusion | ")


def test_main_trains_the_digits_clip_when_its_folder_is_missing(monkeypatch, capsys, tmp_path, digits_clip_folder):
    import shutil

    trained = []

    def fake_train(folder, log):
        trained.append(folder)
        shutil.copytree(digits_clip_folder, folder)
        return {"seconds": 1.0}

    received = {}
    monkeypatch.setattr(evaluate.digits_clip, "train", fake_train)
    monkeypatch.setattr(evaluate, "load_demo", lambda path: SimpleNamespace(unet=torch.nn.Linear(1, 1)))
    monkeypatch.setattr(evaluate, "compare_balancing", lambda *args, **kwargs: received.update(args=args))
    folder = tmp_path / "missing"

    assert run_main(monkeypatch, ["--balancing", "--clip", str(folder)]) == 0

    assert trained == [folder]
    assert f"no CLIP in {folder}: training the digits CLIP there first" in capsys.readouterr().out
    assert received["args"][2].source == str(folder)  # the scorer handed on is the folder's CLIP


def test_sample_passes_an_if_schedule_name_to_stage_1(monkeypatch):
    calls = []

    def fake_stage_1(unet, scheduler, views, embeddings, **options):
        calls.append(options)
        return SimpleNamespace(images=torch.zeros(options["num_candidates"], 3, 64, 64))

    monkeypatch.setattr(sampling, "sample_stage_1", fake_stage_1)
    model = SimpleNamespace(unet=None, scheduler=None, encode=lambda prompts: prompts)
    evaluate.sample(model, ["identity", "flip"], ["a", "b"], seeds=2, steps=15)
    evaluate.sample(model, ["identity", "flip"], ["a", "b"], seeds=2, timesteps="smart27")
    assert (calls[0]["num_inference_steps"], calls[0]["timesteps"]) == (15, None)
    assert calls[1]["timesteps"] == "smart27"


def test_compare_schedules_runs_every_setting_and_names_the_cheapest_within_two_points(monkeypatch, capsys):
    seen = []

    # Success grows with the steps up to 20, where it reaches the reference's 0.6 minus one point.
    def fake_success(model, classifier, view, first, second, *, seeds, steps, guidance, timesteps=None, **options):
        seen.append(timesteps or steps)
        evaluations = evaluate.schedule_steps(timesteps or steps)
        rate = (
            1.0
            if (view, first, second) in evaluate.TRIVIAL
            else min(0.6, 0.4 + evaluations / 100) - (0.01 if evaluations in (20, 27) else 0.0)
        )
        return rate, [rate, rate], torch.zeros(seeds, 3, 64, 64)

    monkeypatch.setattr(evaluate, "illusion_success", fake_success)
    pairings = [("flip", 2, 5), ("rotate_180", 6, 9)]
    evaluate.compare_schedules(None, None, pairings, seeds=4, steps=30, guidance=4.0)

    assert seen == [*evaluate.SCHEDULES] * len(pairings)
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0] == "| pairing | 10 steps | 15 steps | 20 steps | 30 steps | 50 steps | fast27 | smart27 | smart50 |"
    assert table[-1] == "| UNet evaluations per illusion | 10 | 15 | 20 | 30 | 50 | 27 | 27 | 50 |"
    assert "| **mean over the non-trivial pairings** | **50%** | **55%** | **59%** | **60%** |" in out
    assert "cheapest within 2% of 30 steps (60.0%): 20 steps (59.0%, 20 UNet evaluations)" in out


def test_cheapest_equal_prefers_fewer_evaluations_then_better_success():
    # 15 steps is 2.5 points below 30: not equal. fast27 and smart27 cost the same: the better one wins.
    means = {10: 0.40, 15: 0.575, "fast27": 0.59, 30: 0.60, "smart27": 0.61}
    assert evaluate.cheapest_equal(means, 30) == "smart27"
    # Exactly two points below still counts.
    assert evaluate.cheapest_equal({15: 0.58, 30: 0.60}, 30) == 15
