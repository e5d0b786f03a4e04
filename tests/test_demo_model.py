"""The embedded demo model (demo/IF-I-digits): it loads with the pack's own code and draws digits that a
classifier reads as the prompt, and illusions that read as prompt i in view i.

The classifier (demo/digits.py) is an SVM on scikit-learn's digits, the data set
the model was trained on; it scores ~99% on the held-out digits, so it can judge
the samples. The thresholds are the issue's targets (90% of plain samples read as
their prompt; the illusion read right in both views for at least half the seeds),
checked over a handful of seeds to keep the file under a minute. Sampling is
seeded on the CPU, so the numbers are the same on every run of the same torch
build; demo/README.md has them over 20 seeds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import digits  # demo/digits.py (pyproject's pythonpath)
import evaluate  # demo/evaluate.py
from pack import import_submodule

loading = import_submodule("sampling.loading")
MODEL_DIR = evaluate.MODEL_DIR

#: The demo workflow's illusion (scripts/build_workflows.py): a 2 that reads as a 5 upside down.
ILLUSION = ("flip", 2, 5)
PLAIN_SEEDS = 3
ILLUSION_SEEDS = 8


@pytest.fixture(scope="module")
def model():
    return evaluate.load_demo()


@pytest.fixture(scope="module")
def classifier():
    return digits.classifier()


def test_the_folder_is_a_small_safetensors_stage_i_with_its_t5():
    assert loading.detect_stage(MODEL_DIR) == 1
    index = json.loads((MODEL_DIR / "model_index.json").read_text())
    assert index["_class_name"] == "IFPipeline"
    files = [path for path in MODEL_DIR.rglob("*") if path.is_file()]
    weights = [path for path in files if path.suffix == ".safetensors"]
    assert sorted(path.parent.name for path in weights) == ["text_encoder", "unet"]
    assert not [path for path in files if path.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    assert sum(path.stat().st_size for path in files) < 10_000_000  # a few MB in the repository


@pytest.mark.slow  # minutes of sampling (or an SVM fit) on a 2-core CPU
def test_it_loads_through_the_packs_loaders(model):
    assert model.stage.stage == 1 and model.stage.dtype == torch.float32
    assert model.unet.config.out_channels == 6 and model.unet.config.sample_size == 64
    assert model.scheduler.config.variance_type == "learned_range"
    assert model.t5.embedding_dim == model.unet.config.encoder_hid_dim
    assert model.stage.pipeline.text_encoder is None  # T5 comes from the T5 loader, as for IF


@pytest.mark.slow  # minutes of sampling (or an SVM fit) on a 2-core CPU
def test_the_classifier_reads_held_out_digits(classifier):
    assert classifier.held_out_accuracy() >= 0.95


@pytest.mark.slow  # minutes of sampling (or an SVM fit) on a 2-core CPU
def test_plain_samples_read_as_their_prompt(model, classifier):
    results = evaluate.plain_accuracy(model, classifier, seeds=PLAIN_SEEDS)
    rates = {digit: rate for digit, (rate, _) in results.items()}
    assert np.mean(list(rates.values())) >= 0.9, rates
    assert min(rates.values()) >= 1 / PLAIN_SEEDS, rates  # every digit drawn right at least once


@pytest.mark.slow  # minutes of sampling (or an SVM fit) on a 2-core CPU
def test_the_illusion_reads_as_prompt_i_in_view_i(model, classifier):
    view, first, second = ILLUSION
    success, per_view, _ = evaluate.illusion_success(model, classifier, view, first, second, seeds=ILLUSION_SEEDS)
    assert success >= 0.5, (success, per_view)
