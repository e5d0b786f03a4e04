"""The real-size architectures the benchmarks build (benchmarks/real_size_models.py), checked on the meta
device: parameter counts against the model cards, and the structural facts the pack's loader relies on.
Nothing is allocated; the module takes a few seconds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from transformers import T5EncoderModel

from pack import import_submodule

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the benchmarks are scripts
import real_size_models  # noqa: E402

model_folders = import_submodule("sampling.model_folders")
if_models = import_submodule("sampling.if_models")

#: Stage I widths move in steps of 64 (every level's channels split into 64-channel heads), Stage II's in 32.
WIDTH_STEP = {1: 64, 2: 32}


def _width(architecture) -> int:
    return architecture.config["block_out_channels"][0]


def _count_at_width(stage: int, width: int) -> int:
    config = real_size_models.stage_1_config(width) if stage == 1 else real_size_models.stage_2_config(width)
    return real_size_models.config_parameter_count(config)


@pytest.mark.parametrize("name", list(real_size_models.REFERENCE_ARCHITECTURES))
def test_the_published_layouts_count_what_their_cards_say(name):
    """IF-I-XL and IF-II-L, whose configs are published, round to their cards' figures (4.3B: 4,304.7M;
    1.2B: 1,243.3M): the layouts the M architectures scale are the real ones."""
    architecture = real_size_models.REFERENCE_ARCHITECTURES[name]
    counted, card = real_size_models.parameter_count(name), architecture.card_parameters
    unit = card // int(str(card).rstrip("0"))  # the card's last significant digit: 4.3B -> 0.1B
    assert abs(counted - card) <= unit / 2, (name, counted, card)


def test_the_stage_1_layout_matches_if_i_xl_s_published_file_size():
    """IF-I-XL's fp16 UNet file is 8.61 GB (huggingface.co/ckpt/IF-I-XL-v1.0-16bit and ara77/ifxl, copies of
    DeepFloyd's unet/diffusion_pytorch_model.fp16.safetensors): 4.3025 to 4.3075 billion 2-byte parameters."""
    counted = real_size_models.parameter_count("IF-I-XL")
    assert 8.605e9 <= 2 * counted < 8.615e9, counted


def test_the_stage_2_depths_match_diffusers_conversion_of_if_ii():
    """diffusers' scripts/convert_if.py (verify_param_count) splits an IF-II UNet's input blocks at 1:4, 4:7,
    7:11, 11:17 and 17:: each level's ResNets plus its downsampler (none on the last level)."""
    depths = real_size_models.stage_2_config(160)["layers_per_block"]
    starts = [1]
    for depth in depths[:-1]:
        starts.append(starts[-1] + depth + 1)
    assert starts == [1, 4, 7, 11, 17]
    assert len(depths) == 5


@pytest.mark.parametrize("name", list(real_size_models.ARCHITECTURES))
def test_each_m_architecture_is_the_legal_width_nearest_its_card(name):
    """The M configs are unpublished: each is its family's layout at the legal width whose count is nearest the
    card. Counted: IF-I-M 371.6M (card 400M, -7.1 %), IF-II-M 482.5M (card 450M, +7.2 %), both within 10 %."""
    architecture = real_size_models.ARCHITECTURES[name]
    width, step, card = _width(architecture), WIDTH_STEP[architecture.stage], architecture.card_parameters
    counted = real_size_models.parameter_count(name)
    assert counted == _count_at_width(architecture.stage, width)  # the config is the family's layout
    assert abs(counted - card) <= 0.10 * card, (name, counted, card)
    for neighbour in (width - step, width + step):
        assert abs(_count_at_width(architecture.stage, neighbour) - card) > abs(counted - card), neighbour


@pytest.mark.parametrize("name", [*real_size_models.ARCHITECTURES, *real_size_models.REFERENCE_ARCHITECTURES])
def test_configs_have_what_the_loader_needs(name):
    architecture = real_size_models.ARCHITECTURES.get(name) or real_size_models.REFERENCE_ARCHITECTURES[name]
    config = architecture.config
    assert architecture.hub_id in if_models.HUB_IDS[architecture.stage]
    assert config["out_channels"] == 6  # noise + learned-range variance
    assert config["encoder_hid_dim"] == 4096  # T5-XXL's width
    assert config["addition_embed_type"] == "text"
    if architecture.stage == 1:
        assert (config["in_channels"], config["sample_size"], config.get("class_embed_type")) == (3, 64, None)
    else:
        assert (config["in_channels"], config["sample_size"], config["class_embed_type"]) == (6, 256, "timestep")
    # The pack tells the stages apart by these configs, as it does for a downloaded folder.
    assert model_folders.stage_from_configs(None, config, False) == architecture.stage


def test_t5_xxl_counts_its_4_76_billion_encoder_parameters():
    """4,762,310,656: the 32128 x 4096 embedding, 24 layers of attention (4 x 4096^2), gated feed-forward
    (3 x 4096 x 10240) and two layer norms, the relative position bias (32 buckets x 64 heads), the final norm."""
    c = real_size_models.T5_XXL_CONFIG
    d, ff = c["d_model"], c["d_ff"]
    layer = 4 * d * d + 3 * d * ff + 2 * d
    expected = c["vocab_size"] * d + c["num_layers"] * layer + c["relative_attention_num_buckets"] * c["num_heads"] + d
    counted = real_size_models.t5_parameter_count()
    assert counted == expected == 4_762_310_656
    assert abs(counted - if_models.T5_XXL_PARAMETER_COUNT) <= 0.01 * if_models.T5_XXL_PARAMETER_COUNT


def test_every_t5_tensor_has_an_initial_value_rule():
    """The random T5 folder takes minutes to write: a tensor without a rule must fail here, not there."""
    with torch.device("meta"):
        names = [name for name, _ in T5EncoderModel(real_size_models.t5_config()).named_parameters()]
    generator = torch.Generator().manual_seed(0)
    for name in names:
        values = real_size_models._t5_initial_values(name, (2, 2), torch.bfloat16, generator)
        assert values.dtype == torch.bfloat16 and torch.isfinite(values).all(), name
