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

import json
import shutil
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


# -- single-file T5 v1.1 encoders, as ComfyUI users keep them (models/text_encoders/t5xxl_*.safetensors) --------
#: The prefix checkpoints that bundle their text encoders put before T5's names (SD3's all-in-one files).
BUNDLED_T5_PREFIX = "text_encoders.t5xxl.transformer."
#: What each single file stores: the weights' dtype and how fp8 weights are scaled (see write_tiny_t5_files).
T5_FILE_VARIANTS = (
    "fp32",
    "fp16",
    "bf16",
    "fp16_with_embed_tokens",
    "bf16_embed_tokens_only",
    "fp16_bundled",
    "fp8_e4m3fn",
    "fp8_e5m2",
    "fp8_e4m3fn_scaled",
    "fp8_e4m3fn_comfy_quant",
)
_T5_LINEAR_NAMES = ("q", "k", "v", "o", "wi_0", "wi_1", "wo")


@dataclass(frozen=True)
class TinyT5Files:
    root: Path
    folder: Path  # text_encoder/ (the fp32 master, save_pretrained) + tokenizer/ (T5's real tokenizer files)
    tokenizer: Path
    files: dict  # variant -> the single .safetensors file
    rounded: dict  # fp8 variant -> a folder like ``folder`` holding the file's weights dequantized to fp32


def build_tiny_t5_v1_1() -> T5EncoderModel:
    """A T5 v1.1 encoder (gated GELU, 32 buckets) with T5's 32128 embedding rows, so T5's real tokenizer
    works with it, and a tiny width. Layer norm weights are drawn too (T5 initialises them to 1).

    Every weight is a bf16 value that fp16 holds exactly too (tiny ones are zeroed), so its fp32, fp16 and
    bf16 files hold the same network, as IF-I's text_encoder/ and Flux's t5xxl_fp16 hold the same T5."""
    torch.manual_seed(3)
    config = T5Config(
        vocab_size=32128,
        d_model=TEXT_DIM,  # the tiny UNets take TEXT_DIM-wide states: a tiny single file drives them
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6,
        dropout_rate=0.0,
    )
    model = T5EncoderModel(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "layer_norm" in name:
                parameter.uniform_(0.5, 1.5)
            rounded = parameter.to(torch.bfloat16).float()
            parameter.copy_(rounded.where(rounded.abs() >= 2.0**-14, 0.0))  # fp16's smallest normal
    return model


def write_tiny_t5_files(root: Path, tokenizer_dir: Path) -> TinyT5Files:
    """The tiny T5 v1.1 as a transformers folder and as one single file per :data:`T5_FILE_VARIANTS`.

    ``tokenizer_dir`` holds T5's tokenizer files (ComfyUI's comfy/text_encoders/t5_tokenizer); they are
    copied next to the folder's text_encoder/. The variants:

    - fp32 / fp16 / bf16: every tensor in that dtype, ``shared.weight`` only (Flux's t5xxl_fp16 layout);
    - fp16_with_embed_tokens: also the tied ``encoder.embed_tokens.weight``; bf16_embed_tokens_only: only it;
    - fp16_bundled: under ``text_encoders.t5xxl.transformer.``, beside a tensor of another model;
    - fp8_e4m3fn / fp8_e5m2: every tensor cast to fp8 without scale;
    - fp8_e4m3fn_scaled: ComfyUI's scaled fp8: linear weights as fp8 of weight / scale with
      ``<layer>.scale_weight`` (scale = max |weight| / 448), ``<layer>.scale_input`` and the ``scaled_fp8``
      marker; other tensors fp16;
    - fp8_e4m3fn_comfy_quant: ComfyUI's newer layout: ``<layer>.weight_scale``, ``<layer>.input_scale`` and
      ``<layer>.comfy_quant`` ({"format": "float8_e4m3fn"} as uint8); other tensors bf16.
    """
    from safetensors.torch import save_file

    root = Path(root)
    folder = root / "tiny-t5-v1_1"
    tokenizer = folder / "tokenizer"
    master = build_tiny_t5_v1_1()
    master.save_pretrained(folder / "text_encoder", safe_serialization=True)
    _copy_tokenizer(Path(tokenizer_dir), tokenizer)
    weights = {key: value for key, value in master.state_dict().items() if key != "encoder.embed_tokens.weight"}

    files, rounded = {}, {}
    for variant in T5_FILE_VARIANTS:
        stored, dequantized = _t5_file_tensors(weights, variant)
        path = root / "text_encoders" / f"tiny_t5_{variant}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(stored, path)
        files[variant] = path
        if variant.startswith("fp8"):
            reference = build_tiny_t5_v1_1()
            reference.load_state_dict(dequantized, strict=False)  # the tied embed_tokens follows shared
            rounded[variant] = root / f"tiny-t5-v1_1-{variant}-rounded"
            reference.save_pretrained(rounded[variant] / "text_encoder", safe_serialization=True)
            _copy_tokenizer(Path(tokenizer_dir), rounded[variant] / "tokenizer")
    return TinyT5Files(root=root, folder=folder, tokenizer=tokenizer, files=files, rounded=rounded)


def _t5_file_tensors(weights: dict, variant: str) -> tuple[dict, dict]:
    """(the tensors the variant's file stores, the weights they stand for in fp32)."""
    fp8 = torch.float8_e5m2 if "e5m2" in variant else torch.float8_e4m3fn
    stored, dequantized = {}, {}
    for key, weight in weights.items():
        layer = key[: -len(".weight")]
        linear = layer.rsplit(".", 1)[-1] in _T5_LINEAR_NAMES
        if variant in ("fp8_e4m3fn", "fp8_e5m2"):
            stored[key] = weight.to(fp8)
            dequantized[key] = stored[key].to(torch.float32)
        elif variant.startswith("fp8") and linear:
            limit = torch.finfo(fp8).max
            scale = (weight.abs().max() / limit).to(torch.float32).reshape(())
            stored[key] = (weight / scale).clamp(-limit, limit).to(fp8)
            dequantized[key] = stored[key].to(torch.float32) * scale
            if variant == "fp8_e4m3fn_scaled":
                stored[layer + ".scale_weight"] = scale
                stored[layer + ".scale_input"] = torch.ones(())
            else:
                stored[layer + ".weight_scale"] = scale
                stored[layer + ".input_scale"] = torch.ones(())
                marker = json.dumps({"format": "float8_e4m3fn"}).encode()
                stored[layer + ".comfy_quant"] = torch.tensor(list(marker), dtype=torch.uint8)
        else:
            stored[key] = weight.to(_t5_float_dtype(variant)).contiguous()
            dequantized[key] = stored[key].to(torch.float32)
    if variant == "fp8_e4m3fn_scaled":
        stored["scaled_fp8"] = torch.empty(0, dtype=fp8)
    if variant == "fp16_with_embed_tokens":
        stored["encoder.embed_tokens.weight"] = stored["shared.weight"].clone()
    if variant == "bf16_embed_tokens_only":
        stored["encoder.embed_tokens.weight"] = stored.pop("shared.weight")
    if variant == "fp16_bundled":
        stored = {BUNDLED_T5_PREFIX + key: value for key, value in stored.items()}
        stored["model.diffusion_model.x_embedder.proj.weight"] = torch.zeros(4, 4, dtype=torch.float16)
    return stored, dequantized


def _t5_float_dtype(variant: str) -> torch.dtype:
    """The dtype of a variant's tensors that are not fp8."""
    if variant == "fp8_e4m3fn_scaled":
        return torch.float16
    if variant == "fp8_e4m3fn_comfy_quant":
        return torch.bfloat16
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[variant[:4]]


def _copy_tokenizer(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model"):
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/tiny_models.py OUT_DIR")
    print(write_tiny_models(Path(sys.argv[1])))
