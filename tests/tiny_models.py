"""Tiny DeepFloyd-IF-shaped models, built offline in about a second.

DeepFloyd's weights cannot be downloaded in tests, so every test that needs a
model builds these instead. They have the real architecture's *shape*:

* a T5 encoder + T5 tokenizer (IF encodes prompts with T5-XXL, 77 tokens),
* a Stage I UNet (3 -> 6 channels: noise + learned-range variance, text
  conditioning through ``addition_embed_type="text"``) at 64 px,
* a Stage II UNet (6 -> 6 channels: noisy 256 px image ++ upsampled Stage I
  image, noise level fed as ``class_labels``) at 256 px,
* IF's schedulers (DDPM, ``squaredcos_cap_v2``, ``learned_range``, dynamic
  thresholding) and Stage II's image-noising scheduler,

saved with ``save_pretrained`` in the same folder layout as the Hub repos, so
the real loading code is exercised. Weights are random but deterministic: the
same call always writes the same tensors.

Run ``python tests/tiny_models.py OUT_DIR`` to write them to a folder.
"""

from __future__ import annotations

import string
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DDPMScheduler, IFPipeline, IFSuperResolutionPipeline, UNet2DConditionModel
from transformers import T5Config, T5EncoderModel, T5Tokenizer

STAGE_1_SIZE = 64
STAGE_2_SIZE = 256
TEXT_DIM = 32  # T5-XXL has 4096; the UNets project it with encoder_hid_dim like IF does
MAX_PROMPT_TOKENS = 77  # IF's prompt length

# Words the tests and example workflows use; anything else falls back to
# letter pieces, so every prompt still encodes.
_WORDS = (
    "a an the of and with in on at oil painting photo watercolor lithograph drawing "
    "snowy mountain village horse people around campfire old man waterfall deer "
    "rabbit duck dog cat house kitchen teddy bear giraffe penguin lion tree forest "
    "flowers ship ocean city skull dolphin castle digit zero one two three four "
    "five six seven eight nine"
).split()


def _tokenizer_vocab() -> list[tuple[str, float]]:
    """A unigram vocabulary in T5's order: <pad>=0, </s>=1, <unk>=2, then pieces."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(f"\u2581{word}", -1.0) for word in _WORDS]
    pieces = string.ascii_lowercase + string.digits + string.punctuation
    vocab += [(f"\u2581{ch}", -5.0) for ch in pieces]
    vocab += [(ch, -6.0) for ch in pieces]
    return vocab


def build_tokenizer() -> T5Tokenizer:
    return T5Tokenizer(vocab=_tokenizer_vocab(), extra_ids=0, model_max_length=MAX_PROMPT_TOKENS)


def build_text_encoder(vocab_size: int) -> T5EncoderModel:
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=vocab_size,
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",  # T5 v1.1, as T5-XXL
        dropout_rate=0.0,
    )
    return T5EncoderModel(config).eval()


def if_scheduler() -> DDPMScheduler:
    """IF's sampling scheduler: DDPM with learned-range variance and dynamic thresholding."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        beta_start=0.0001,
        beta_end=0.02,
        thresholding=True,
        dynamic_thresholding_ratio=0.95,
        sample_max_value=1.5,
        prediction_type="epsilon",
        variance_type="learned_range",
    )


def if_image_noising_scheduler() -> DDPMScheduler:
    """Stage II's scheduler for noise-augmenting the upsampled Stage I image."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        beta_start=0.0001,
        beta_end=0.02,
    )


_UNET_COMMON = dict(
    out_channels=6,
    layers_per_block=1,
    cross_attention_dim=32,
    encoder_hid_dim=TEXT_DIM,
    attention_head_dim=8,
    addition_embed_type="text",
    addition_embed_type_num_heads=2,
    cross_attention_norm="group_norm",
    resnet_time_scale_shift="scale_shift",
    act_fn="gelu",
    norm_num_groups=8,
    mid_block_type="UNetMidBlock2DSimpleCrossAttn",
)


def build_stage_1_unet() -> UNet2DConditionModel:
    torch.manual_seed(1)
    # Attention runs at 32x32 tokens (one downsample), keeping CPU runs quick.
    return UNet2DConditionModel(
        sample_size=STAGE_1_SIZE,
        in_channels=3,
        block_out_channels=(16, 32),
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        **_UNET_COMMON,
    ).eval()


def build_stage_2_unet() -> UNet2DConditionModel:
    torch.manual_seed(2)
    # Three plain downsamples before attention: 256 -> 32 px tokens.
    return UNet2DConditionModel(
        sample_size=STAGE_2_SIZE,
        in_channels=6,
        block_out_channels=(8, 8, 16, 32),
        down_block_types=(
            "ResnetDownsampleBlock2D",
            "ResnetDownsampleBlock2D",
            "ResnetDownsampleBlock2D",
            "SimpleCrossAttnDownBlock2D",
        ),
        up_block_types=(
            "SimpleCrossAttnUpBlock2D",
            "ResnetUpsampleBlock2D",
            "ResnetUpsampleBlock2D",
            "ResnetUpsampleBlock2D",
        ),
        class_embed_type="timestep",  # Stage II is conditioned on the augmentation noise level
        mid_block_scale_factor=1.414,
        time_embedding_act_fn="gelu",
        **_UNET_COMMON,
    ).eval()


@dataclass(frozen=True)
class TinyModelPaths:
    root: Path
    stage_1: Path  # IF-I-like pipeline folder, with its own T5 + tokenizer (as on the Hub)
    stage_2: Path  # IF-II-like pipeline folder, without a text encoder
    text_encoder: Path  # T5 encoder + tokenizer on their own (text_encoder/ and tokenizer/)


def build_stage_1_pipeline() -> IFPipeline:
    tokenizer = build_tokenizer()
    return IFPipeline(
        tokenizer=tokenizer,
        text_encoder=build_text_encoder(len(tokenizer)),
        unet=build_stage_1_unet(),
        scheduler=if_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )


def build_stage_2_pipeline() -> IFSuperResolutionPipeline:
    return IFSuperResolutionPipeline(
        tokenizer=None,
        text_encoder=None,
        unet=build_stage_2_unet(),
        scheduler=if_scheduler(),
        image_noising_scheduler=if_image_noising_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )


def write_tiny_models(root: Path) -> TinyModelPaths:
    root = Path(root)
    paths = TinyModelPaths(
        root=root,
        stage_1=root / "tiny-IF-I",
        stage_2=root / "tiny-IF-II",
        text_encoder=root / "tiny-t5",
    )
    stage_1 = build_stage_1_pipeline()
    stage_1.save_pretrained(paths.stage_1, safe_serialization=True)
    build_stage_2_pipeline().save_pretrained(paths.stage_2, safe_serialization=True)
    stage_1.text_encoder.save_pretrained(paths.text_encoder / "text_encoder", safe_serialization=True)
    stage_1.tokenizer.save_pretrained(paths.text_encoder / "tokenizer")
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/tiny_models.py OUT_DIR")
    print(write_tiny_models(Path(sys.argv[1])))
