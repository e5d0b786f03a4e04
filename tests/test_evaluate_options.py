"""demo/evaluate.py's Anagram-MTL options: ``sample`` hands them to the Stage I sampler, and
--compare-mtl's table has a row per pairing, a column per variant and a mean that leaves the
trivial pairing out. The sampler and the scoring are stubbed: no model runs here."""

from __future__ import annotations

from types import SimpleNamespace

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
