"""Loading IF's stages and T5, and encoding prompts, on tiny offline models.

Covers: each stage's folder loads with the right UNet and dtype, without T5;
wrong-stage, missing, pickle-only and Hub (offline / gated) sources fail with
messages that say what to do and never echo a token; what the offload options
do on the CPU; T5 in every precision; and ``encode_prompts`` matching
``IFPipeline.encode_prompt`` exactly.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pack import import_submodule

sampling = import_submodule("sampling")
loading = import_submodule("sampling.loading")
text = import_submodule("sampling.text")
hub = import_submodule("sampling.hub")
if_models = import_submodule("sampling.if_models")
library_versions = import_submodule("sampling.library_versions")
views = import_submodule("views")

ModelLoadError = loading.ModelLoadError
CPU = torch.device("cpu")
SECRET = "hf_secret_test"
PROMPT = "  An OIL Painting of a   Snowy MOUNTAIN village  "


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stage_3_folder(tmp_path_factory):
    """A tiny StableDiffusionUpscalePipeline (x4 upscaler shape), built offline."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[f"{ch}</w>"] = len(vocab)
    for word in ("a", "an", "the", "of", "photo", "painting", "dog", "cat"):
        vocab.setdefault(f"{word}</w>", len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    torch.manual_seed(3)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    ).eval()
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=7,  # 4 latent + 3 low-resolution image channels
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
        num_class_embeds=1000,  # the noise level goes in as a class label
    ).eval()
    vae = AutoencoderKL(
        latent_channels=4,
        block_out_channels=(8, 16, 32),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1,
        norm_num_groups=8,
        scaling_factor=0.08333,
    ).eval()
    pipeline = StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction"),
        max_noise_level=350,
    )
    folder = tmp_path_factory.mktemp("tiny-x4") / "tiny-x4-upscaler"
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture
def hub_env(monkeypatch):
    """Offline, with a token in the environment that must never be echoed."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", SECRET)


def _copy(folder, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def _pickle_only(folder, component, weights_name):
    """Replace a component's safetensors weights by a pickled .bin (never loaded)."""
    sub = folder / component
    safe = sub / f"{weights_name}.safetensors"
    torch.save(load_file(safe), sub / f"{weights_name}.bin")
    safe.unlink()


# -- stages: loading --------------------------------------------------------------------------
@pytest.mark.parametrize("stage", [1, 2])
def test_if_stage_loads_without_t5(tiny_models, stage):
    from diffusers import IFPipeline, IFSuperResolutionPipeline, UNet2DConditionModel

    folder = tiny_models.stage_1 if stage == 1 else tiny_models.stage_2
    loaded = loading.load_if_stage(folder, stage, device=CPU)
    pipe = loaded.pipeline
    assert type(pipe) is (IFPipeline if stage == 1 else IFSuperResolutionPipeline)
    assert isinstance(loaded.unet, UNet2DConditionModel)
    assert loaded.unet.config.in_channels == (3 if stage == 1 else 6)
    assert (loaded.unet.config.class_embed_type is None) == (stage == 1)
    # T5 is loaded once, separately; nothing else optional is loaded either.
    assert pipe.text_encoder is None and pipe.tokenizer is None
    assert pipe.safety_checker is None and pipe.watermarker is None and pipe.feature_extractor is None
    assert (loaded.stage, loaded.offload, loaded.device, loaded.dtype) == (stage, "none", CPU, torch.float32)
    assert loaded.unet.dtype == torch.float32 and loaded.unet.device == CPU
    assert loaded.source == str(folder) and loaded.variant is None
    assert loaded.parameter_count == sum(p.numel() for p in loaded.unet.parameters())
    # Header-only estimate before loading == bytes actually loaded.
    assert loading.estimated_bytes(folder, "fp32") == loaded.estimated_bytes
    assert loading.estimated_bytes(folder, torch.float16) == loaded.estimated_bytes // 2
    loading.release(loaded)


@pytest.mark.parametrize("name, expected", [("fp16", torch.float16), ("bf16", torch.bfloat16), ("auto", torch.float32)])
def test_stage_dtypes(tiny_models, name, expected):
    loaded = loading.load_if_stage(tiny_models.stage_1, 1, device=CPU, dtype=name)
    assert loaded.dtype == expected
    assert {p.dtype for p in loaded.unet.parameters()} == {expected}
    loading.release(loaded)


def test_auto_dtype_per_device():
    assert loading.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert loading.resolve_dtype("auto", torch.device("cuda", 0)) == torch.float16
    assert loading.resolve_dtype("auto", torch.device("mps")) == torch.float16
    with pytest.raises(ModelLoadError, match="choose one of auto, fp16, bf16, fp32"):
        loading.resolve_dtype("fp8", CPU)


def test_fp16_prefers_the_fp16_variant(tiny_models, tmp_path):
    folder = _copy(tiny_models.stage_1, tmp_path)
    weights = load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")
    marked = {k: (v * 0 + 0.5).half() for k, v in weights.items()}  # tell the variant apart
    save_file(marked, folder / "unet" / "diffusion_pytorch_model.fp16.safetensors")

    half = loading.load_if_stage(folder, 1, device=CPU, dtype="fp16")
    assert half.variant == "fp16"
    assert all(torch.all(p == 0.5) for p in half.unet.parameters())
    full = loading.load_if_stage(folder, 1, device=CPU, dtype="fp32")
    assert full.variant is None
    name, param = next(iter(full.unet.named_parameters()))
    assert torch.equal(param, weights[name])
    # Estimates count one weight set, not both.
    assert loading.estimated_bytes(folder, "fp32") == full.estimated_bytes


def test_stage_3_upscaler_loads_with_its_clip(stage_3_folder):
    from diffusers import StableDiffusionUpscalePipeline
    from transformers import CLIPTextModel

    loaded = loading.load_if_stage(stage_3_folder, 3, device=CPU)
    pipe = loaded.pipeline
    assert type(pipe) is StableDiffusionUpscalePipeline
    assert isinstance(pipe.text_encoder, CLIPTextModel) and pipe.vae is not None
    assert pipe.safety_checker is None and pipe.watermarker is None and pipe.feature_extractor is None
    assert loaded.unet.config.in_channels == 7
    assert loading.detect_stage(stage_3_folder) == 3
    assert loading.estimated_bytes(stage_3_folder, "fp32") == pytest.approx(loaded.estimated_bytes, rel=1e-3)
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))  # [0, 1], as diffusers wants
    out = pipe(prompt="a dog", image=image, num_inference_steps=2, output_type="pt").images
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()

    half = loading.load_if_stage(stage_3_folder, 3, device=CPU, dtype="bf16")
    assert {half.unet.dtype, half.pipeline.vae.dtype, half.pipeline.text_encoder.dtype} == {torch.bfloat16}
    for item in (loaded, half):
        loading.release(item)


def test_loaded_stages_feed_the_sampler(tiny_models):
    stage_1 = loading.load_if_stage(tiny_models.stage_1, 1, device=CPU)
    t5 = text.load_t5(tiny_models.text_encoder, precision="fp32", device=CPU)
    embeddings = text.encode_prompts(t5, ["a dog", "a cat"])
    result = sampling.sample_stage_1(
        stage_1.unet,
        stage_1.scheduler,
        [views.make_view("identity"), views.make_view("flip")],
        embeddings,
        num_inference_steps=2,
        device=stage_1.device,
    )
    assert result.images.shape == (1, 3, 64, 64) and torch.isfinite(result.images).all()


# -- stages: failures -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "which, asked, loader",
    [("stage_2", 1, "Stage II loader"), ("stage_1", 2, "Stage I loader"), ("stage_1", 3, "Stage I loader")],
)
def test_wrong_stage_names_the_right_loader(tiny_models, which, asked, loader):
    folder = getattr(tiny_models, which)
    with pytest.raises(ModelLoadError) as caught:
        loading.load_if_stage(folder, asked, device=CPU)
    message = str(caught.value)
    assert str(folder) in message and f"load it with the {loader}" in message


def test_wrong_stage_upscaler_folder(stage_3_folder):
    with pytest.raises(ModelLoadError, match="holds a Stage III model .*load it with the Stage III loader"):
        loading.load_if_stage(stage_3_folder, 1, device=CPU)


def test_wrong_stage_hub_id_fails_before_any_download():
    with pytest.raises(ModelLoadError, match="DeepFloyd/IF-II-L-v1.0 holds a Stage II model.*Stage II loader"):
        loading.load_if_stage("DeepFloyd/IF-II-L-v1.0", 1, device=CPU)


def test_missing_folder_says_where_files_go(tmp_path):
    missing = tmp_path / "models" / "diffusers" / "IF-I-XL-v1.0"
    with pytest.raises(ModelLoadError) as caught:
        loading.load_if_stage(missing, 1, device=CPU)
    message = str(caught.value)
    assert f"{missing} does not exist" in message
    assert "model_index.json" in message and "unet/" in message
    assert "ComfyUI/models/diffusers/" in message


def test_folder_that_is_not_a_pipeline(tiny_models):
    with pytest.raises(ModelLoadError) as caught:
        loading.load_if_stage(tiny_models.text_encoder, 1, device=CPU)
    message = str(caught.value)
    assert "is not a Stage I model" in message and "model_index.json" in message
    assert "load it with the T5 loader" in message


def test_pickle_only_weights_are_refused(tiny_models, tmp_path, monkeypatch):
    folder = _copy(tiny_models.stage_2, tmp_path)
    _pickle_only(folder, "unet", "diffusion_pytorch_model")
    # The check happens before diffusers is asked to read anything.
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a pickle file was opened"))
    with pytest.raises(ModelLoadError) as caught:
        loading.load_if_stage(folder, 2, device=CPU)
    message = str(caught.value)
    assert "diffusion_pytorch_model.bin" in message and "safetensors" in message
    assert "convert" in message


def test_component_without_weights(tiny_models, tmp_path):
    folder = _copy(tiny_models.stage_1, tmp_path)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="unet has no weights"):
        loading.load_if_stage(folder, 1, device=CPU)


def _assert_hub_message(message: str, repo_id: str, *, gated: bool = True):
    assert repo_id in message
    assert SECRET not in message
    assert "HF_HUB_OFFLINE" in message
    assert "HF_TOKEN" in message and "huggingface-cli login" in message
    assert "https://huggingface.co/settings/tokens" in message
    assert "ComfyUI/models/diffusers/" in message
    assert (hub.IF_LICENCE_URL in message) == gated
    if gated:
        assert "accept the licence" in message


@pytest.mark.parametrize("stage, repo_id", [(1, "DeepFloyd/IF-I-XL-v1.0"), (2, "DeepFloyd/IF-II-L-v1.0")])
def test_hub_id_offline_explains_licence_and_token(hub_env, stage, repo_id):
    with pytest.raises(ModelLoadError) as caught:
        loading.load_if_stage(repo_id, stage, device=CPU)
    _assert_hub_message(str(caught.value), repo_id)


def test_upscaler_hub_id_offline_is_not_called_gated(hub_env):
    repo_id = "stabilityai/stable-diffusion-x4-upscaler"
    with pytest.raises(ModelLoadError) as caught:
        loading.load_if_stage(repo_id, 3, device=CPU)
    _assert_hub_message(str(caught.value), repo_id, gated=False)


def test_hub_messages_never_echo_tokens(hub_env):
    error = OSError(f"401 Client Error for url ...: Authorization: Bearer {SECRET} / hf_AbCdEf123456 rejected")
    message = hub.hub_error_message("DeepFloyd/IF-I-XL-v1.0", "Stage I model", error)
    assert SECRET not in message and "hf_AbCdEf123456" not in message
    assert hub.IF_LICENCE_URL in message


def test_hub_reasons(monkeypatch):
    from huggingface_hub.errors import GatedRepoError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    # The real class, without the HTTP response its constructor wants (its http library varies by release).
    gated = GatedRepoError.__new__(GatedRepoError)
    Exception.__init__(gated, "Access to model DeepFloyd/IF-I-XL-v1.0 is restricted")
    message = hub.hub_error_message("DeepFloyd/IF-I-XL-v1.0", "Stage I model", OSError("wrapped"))
    assert "the download failed" in message
    wrapped = OSError("cannot load")
    wrapped.__cause__ = gated
    message = hub.hub_error_message("DeepFloyd/IF-I-XL-v1.0", "Stage I model", wrapped)
    assert "gated and this account has not been granted access" in message
    assert "GatedRepoError" in message


def test_argument_errors(tiny_models):
    with pytest.raises(ModelLoadError, match="unknown stage 4"):
        loading.load_if_stage(tiny_models.stage_1, 4, device=CPU)
    with pytest.raises(ModelLoadError, match="choose one of none, model, sequential"):
        loading.load_if_stage(tiny_models.stage_1, 1, device=CPU, offload="disk")
    with pytest.raises(ModelLoadError, match="no model given"):
        loading.load_if_stage("  ", 1, device=CPU)


# -- offload on the CPU -----------------------------------------------------------------------
def test_model_offload_builds_and_runs_on_cpu(tiny_models):
    # diffusers builds model offload towards the CPU; its hooks move whole models CPU -> CPU.
    loaded = loading.load_if_stage(tiny_models.stage_1, 1, device=CPU, offload="model")
    assert loaded.offload == "model" and loaded.device == CPU
    assert hasattr(loaded.unet, "_hf_hook")
    sample = torch.zeros(1, 3, 64, 64)
    states = torch.zeros(1, 77, 32)
    out = loaded.unet(sample, 10, encoder_hidden_states=states, return_dict=False)[0]
    assert out.shape == (1, 6, 64, 64)
    unet = loaded.unet
    loading.release(loaded)
    assert not hasattr(unet, "_hf_hook")


def test_sequential_offload_on_cpu_matches_what_accelerate_does(tiny_models):
    from diffusers import IFPipeline

    runs = library_versions.sequential_offload_runs_on_cpu()
    # Plain diffusers: the offload builds towards the CPU; whether a forward then runs is the question.
    pipe = IFPipeline.from_pretrained(tiny_models.stage_1, text_encoder=None, tokenizer=None, use_safetensors=True)
    pipe.enable_sequential_cpu_offload(device=CPU)
    sample, states = torch.zeros(1, 3, 64, 64), torch.zeros(1, 77, 32)
    if runs:
        pipe.unet(sample, 10, encoder_hidden_states=states)
        loaded = loading.load_if_stage(tiny_models.stage_1, 1, device=CPU, offload="sequential")
        assert loaded.offload == "sequential"
        loading.release(loaded)
        return
    # Here (accelerate 1.15, torch 2.14): weights wait on "meta" and cannot be brought onto the CPU.
    with pytest.raises(TypeError):
        pipe.unet(sample, 10, encoder_hidden_states=states)
    with pytest.raises(ModelLoadError) as caught:
        loading.load_if_stage(tiny_models.stage_1, 1, device=CPU, offload="sequential")
    message = str(caught.value)
    assert "offload 'sequential'" in message and "runs on the CPU" in message and "pick offload 'none'" in message


# -- release and estimates --------------------------------------------------------------------
def test_release_frees_weights(tiny_models):
    loaded = loading.load_if_stage(tiny_models.stage_1, 1, device=CPU)
    unet = loaded.unet
    loading.release(loaded)
    assert loaded.released and loaded.pipeline is None
    assert all(p.device.type == "meta" for p in unet.parameters())
    with pytest.raises(ModelLoadError, match="was released: load it again"):
        _ = loaded.unet
    loading.release(loaded)  # twice is harmless


def test_estimates_for_hub_ids():
    assert loading.estimated_bytes("DeepFloyd/IF-I-XL-v1.0", "fp16") == 8_600_000_000
    assert loading.estimated_bytes("DeepFloyd/IF-II-L-v1.0", torch.float32) == 4_800_000_000
    assert loading.estimated_bytes("DeepFloyd/IF-I-M-v1.0", "auto", device="cuda") == 800_000_000
    assert loading.estimated_bytes("someone/unknown-model", "fp16") is None
    assert text.estimated_t5_bytes("DeepFloyd/IF-I-XL-v1.0", "fp16") == 2 * if_models.T5_XXL_PARAMETER_COUNT
    assert set(if_models.HUB_PARAMETER_COUNTS) == {i for ids in loading.HUB_IDS.values() for i in ids}


def test_source_resolution(tmp_path):
    assert hub.resolve_source("DeepFloyd/IF-I-XL-v1.0") == "DeepFloyd/IF-I-XL-v1.0"
    assert hub.resolve_source(tmp_path) == tmp_path
    assert hub.resolve_source(str(tmp_path / "missing")) == tmp_path / "missing"
    assert hub.resolve_source("./IF-I-XL-v1.0") == Path("./IF-I-XL-v1.0")


# -- T5 ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def t5_fp32(tiny_models):
    return text.load_t5(tiny_models.stage_1, precision="fp32", device=CPU)


def test_t5_from_each_folder_layout(tiny_models, tmp_path):
    from transformers import T5EncoderModel

    # An IF-I folder, a text_encoder/ + tokenizer/ folder, and one plain T5 folder.
    flat = tmp_path / "t5-flat"
    shutil.copytree(tiny_models.text_encoder / "text_encoder", flat)
    for item in (tiny_models.text_encoder / "tokenizer").iterdir():
        shutil.copy(item, flat / item.name)
    reference = None
    for source in (tiny_models.stage_1, tiny_models.text_encoder, flat):
        t5 = text.load_t5(source, precision="fp32", device=CPU)
        assert isinstance(t5.model, T5EncoderModel)
        assert (t5.precision, t5.device, t5.dtype, t5.embedding_dim) == ("fp32", CPU, torch.float32, 32)
        embeddings = text.encode_prompts(t5, ["a dog"])
        reference = embeddings.positive if reference is None else reference
        assert torch.equal(embeddings.positive, reference)


def test_encode_parity_with_ifpipeline(t5_fp32, stage_1_pipe):
    positive, negative = stage_1_pipe.encode_prompt(PROMPT)
    ours = text.encode_prompts(t5_fp32, [PROMPT])
    assert torch.equal(ours.positive, positive)
    assert torch.equal(ours.negative, negative)

    styled_negative = "  Blurry, LOW quality "
    positive, negative = stage_1_pipe.encode_prompt(PROMPT, negative_prompt=styled_negative)
    ours = text.encode_prompts(t5_fp32, [PROMPT], styled_negative)
    assert torch.equal(ours.positive, positive) and torch.equal(ours.negative, negative)


def test_encode_many_prompts_and_style(t5_fp32, stage_1_pipe):
    prompts = ["a snowy mountain village", "a horse", "An old man "]
    embeddings = text.encode_prompts(t5_fp32, prompts, style="an oil painting of")
    assert embeddings.positive.shape == (3, 77, 32) and embeddings.negative.shape == (1, 77, 32)
    assert embeddings.positive.device == CPU and embeddings.positive.dtype == torch.float32
    assert embeddings.num_prompts == 3
    assert not embeddings.positive.is_inference() and not embeddings.negative.is_inference()
    for row, prompt in enumerate(prompts):
        # The paper's generate.py: f"{style} {prompt}".strip() through encode_prompt.
        expected, _ = stage_1_pipe.encode_prompt(f"an oil painting of {prompt}".strip())
        assert torch.equal(embeddings.positive[row : row + 1], expected)
    plain = text.encode_prompts(t5_fp32, ["a horse"], style="")
    expected, _ = stage_1_pipe.encode_prompt("a horse")
    assert torch.equal(plain.positive, expected)
    # A single string is one prompt, not a list of characters.
    assert text.encode_prompts(t5_fp32, "a horse").positive.shape == (1, 77, 32)


def test_encode_prompt_errors(t5_fp32):
    with pytest.raises(sampling.SamplingInputError, match="prompts: no prompts given"):
        text.encode_prompts(t5_fp32, [])
    with pytest.raises(sampling.SamplingInputError, match="prompt 2 is a int"):
        text.encode_prompts(t5_fp32, ["a dog", 3])


def test_t5_bf16_and_fp16(tiny_models, t5_fp32):
    reference = text.encode_prompts(t5_fp32, [PROMPT]).positive
    for precision, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        t5 = text.load_t5(tiny_models.text_encoder, precision=precision, device=CPU)
        assert t5.precision == precision and t5.dtype == dtype
        out = text.encode_prompts(t5, [PROMPT])
        assert out.positive.dtype == dtype and out.negative.dtype == dtype
        torch.testing.assert_close(out.positive.float(), reference, atol=0.1, rtol=0.05)
        text.release_t5(t5)


@pytest.mark.parametrize("precision, layer", [("8bit", "Linear8bitLt"), ("4bit", "Linear4bit")])
def test_t5_quantized_on_cpu(tiny_models, t5_fp32, precision, layer):
    problem = text.bitsandbytes_problem()
    if problem is not None:
        pytest.skip(f"bitsandbytes cannot run here: {problem}")
    t5 = text.load_t5(tiny_models.text_encoder, precision=precision, device=CPU)
    assert t5.precision == precision and t5.device == CPU
    q = t5.model.encoder.block[0].layer[0].SelfAttention.q
    assert type(q).__name__ == layer
    out = text.encode_prompts(t5, [PROMPT, "a dog"])
    reference = text.encode_prompts(t5_fp32, [PROMPT, "a dog"]).positive
    assert out.positive.shape == (2, 77, 32) and torch.isfinite(out.positive).all()
    similarity = torch.nn.functional.cosine_similarity(out.positive.flatten(1), reference.flatten(1))
    assert similarity.min() > (0.99 if precision == "8bit" else 0.8)
    assert t5.estimated_bytes < t5_fp32.estimated_bytes
    # transformers keeps T5's feed-forward output layers in fp32, unquantised: estimated_t5_bytes counts on it.
    wo = t5.model.encoder.block[0].layer[1].DenseReluDense.wo
    assert type(wo) is torch.nn.Linear and wo.weight.dtype == torch.float32
    text.release_t5(t5)


@pytest.mark.parametrize("precision, measured", [("8bit", 8.18e9), ("4bit", 6.37e9)])
def test_quantized_t5_xxl_estimate_counts_the_fp32_feed_forward_outputs(precision, measured):
    """benchmarks/memory.py --part real measured a random T5-XXL's footprint at 8bit / 4bit on the CPU."""
    estimate = text.estimated_t5_bytes("DeepFloyd/IF-I-XL-v1.0", precision)
    assert abs(estimate - measured) / measured < 0.03


def test_t5_quantized_without_bitsandbytes(tiny_models, monkeypatch):
    monkeypatch.setattr(text, "bitsandbytes_problem", lambda: "bitsandbytes is not installed")
    with pytest.raises(ModelLoadError) as caught:
        text.load_t5(tiny_models.text_encoder, precision="8bit", device=CPU)
    assert str(caught.value).startswith(text.BITSANDBYTES_MESSAGE)
    assert "pip install bitsandbytes" in str(caught.value) and "pick fp16/bf16/fp32 instead" in str(caught.value)


def test_t5_keep_on_cpu(tiny_models, t5_fp32):
    # The GPU is never touched: the encoder stays on the CPU, fp16 becomes fp32.
    t5 = text.load_t5(tiny_models.text_encoder, precision="fp16", device=torch.device("cuda", 0), keep_on_cpu=True)
    assert (t5.device, t5.precision, t5.dtype) == (CPU, "fp32", torch.float32)
    assert torch.equal(text.encode_prompts(t5, [PROMPT]).positive, text.encode_prompts(t5_fp32, [PROMPT]).positive)
    t5 = text.load_t5(tiny_models.text_encoder, precision="bf16", device=torch.device("cuda", 0), keep_on_cpu=True)
    assert (t5.device, t5.precision, t5.dtype) == (CPU, "bf16", torch.bfloat16)
    t5 = text.load_t5(tiny_models.text_encoder, device=CPU)  # default precision on the CPU
    assert t5.precision == "fp32"


def test_t5_failures(tiny_models, stage_3_folder, tmp_path, hub_env):
    with pytest.raises(ModelLoadError, match="choose one of fp32, fp16, bf16, 8bit, 4bit"):
        text.load_t5(tiny_models.text_encoder, precision="int2", device=CPU)
    with pytest.raises(ModelLoadError, match="without a T5 text encoder.*IF-I folder"):
        text.load_t5(tiny_models.stage_2, device=CPU)
    with pytest.raises(ModelLoadError, match="holds a clip_text_model text encoder, not T5"):
        text.load_t5(stage_3_folder, device=CPU)
    missing = tmp_path / "nothing-here"
    with pytest.raises(ModelLoadError, match=f"{missing} does not exist.*ComfyUI/models/diffusers/"):
        text.load_t5(missing, device=CPU)

    no_tokenizer = _copy(tiny_models.text_encoder, tmp_path, "no-tokenizer")
    shutil.rmtree(no_tokenizer / "tokenizer")
    with pytest.raises(ModelLoadError, match="has no T5 tokenizer files"):
        text.load_t5(no_tokenizer, device=CPU)

    pickled = _copy(tiny_models.text_encoder, tmp_path, "pickled")
    _pickle_only(pickled, "text_encoder", "model")
    with pytest.raises(ModelLoadError, match="model.bin.*safetensors only"):
        text.load_t5(pickled, device=CPU)

    with pytest.raises(ModelLoadError) as caught:
        text.load_t5("DeepFloyd/IF-I-XL-v1.0", precision="fp16", device=CPU)
    _assert_hub_message(str(caught.value), "DeepFloyd/IF-I-XL-v1.0")


def test_t5_release_and_estimates(tiny_models):
    t5 = text.load_t5(tiny_models.text_encoder, precision="fp32", device=CPU)
    assert text.estimated_t5_bytes(tiny_models.text_encoder, "fp32") == t5.estimated_bytes
    assert text.estimated_t5_bytes(tiny_models.stage_1, "fp32") == t5.estimated_bytes
    model = t5.model
    text.release_t5(t5)
    assert t5.released and t5.model is None
    assert all(p.device.type == "meta" for p in model.parameters())
    with pytest.raises(ModelLoadError, match="was released"):
        text.encode_prompts(t5, ["a dog"])


def test_configs_are_json(tiny_models):
    # detect_stage reads only configs: no weights are opened to tell stages apart.
    assert loading.detect_stage(tiny_models.stage_1) == 1
    assert loading.detect_stage(tiny_models.stage_2) == 2
    assert loading.detect_stage(tiny_models.text_encoder) is None
    config = json.loads((tiny_models.stage_2 / "unet" / "config.json").read_text())
    assert config["class_embed_type"] == "timestep"


def test_out_of_memory_says_what_to_pick(tiny_models, monkeypatch):
    from diffusers import IFPipeline
    from transformers import T5EncoderModel

    def out_of_memory(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    monkeypatch.setattr(IFPipeline, "to", out_of_memory)
    with pytest.raises(ModelLoadError, match="not enough memory on cpu for the Stage I model .* pick offload 'model'"):
        loading.load_if_stage(tiny_models.stage_1, 1, device=CPU)
    monkeypatch.setattr(T5EncoderModel, "to", out_of_memory)
    with pytest.raises(ModelLoadError, match="not enough memory on cpu for the T5 text encoder .* pick 8bit or 4bit"):
        text.load_t5(tiny_models.text_encoder, precision="fp32", device=CPU)


# -- broken model folders: listing never fails, loading says what is wrong ----------------------------------------
model_folders = import_submodule("sampling.model_folders")
safetensors_headers = import_submodule("sampling.safetensors_headers")

BROKEN_JSON = {
    "a JSON list": (b"[1, 2]", "holds a JSON list, not an object"),
    "a JSON number": (b"3", "holds a JSON number, not an object"),
    "not JSON": (b"{model_index", "is not valid JSON"),
    "not UTF-8": (b"\xff\xfe\x00{", "is not UTF-8 text"),
    "empty": (b"", "is not valid JSON"),
}


def _break(path, how):
    if how == "missing":
        path.unlink()
    elif how == "a folder":
        path.unlink()
        path.mkdir()
    else:
        path.write_bytes(BROKEN_JSON[how][0])


def _expected_problem(how):
    return {"missing": "does not exist", "a folder": "is not a regular file"}.get(how) or BROKEN_JSON[how][1]


@pytest.mark.parametrize("how", ["missing", "a folder", *BROKEN_JSON])
@pytest.mark.parametrize("config", ["model_index.json", "unet/config.json"])
def test_a_broken_config_is_not_a_stage_and_loading_it_says_what_is_wrong(tiny_models, tmp_path, config, how):
    folder = _copy(tiny_models.stage_1, tmp_path)
    broken = folder / config
    _break(broken, how)
    # Listing: no exception, just "not a stage"; estimates: unknown.
    assert loading.detect_stage(folder) is None
    assert loading.estimated_bytes(folder, "fp32") is None
    with pytest.raises(ModelLoadError) as caught:
        loading.read_json_object(broken)
    assert str(caught.value).startswith(f"{broken} {_expected_problem(how)}")
    with pytest.raises(ModelLoadError) as caught:
        loading.load_if_stage(folder, 1, device=CPU)
    message = str(caught.value)
    if config == "model_index.json" and how == "missing":  # not a model folder: what one holds, where it goes
        assert f"{folder} is not a Stage I model" in message and "Put the folder in ComfyUI/models/diffusers" in message
    else:
        assert f"{broken} {_expected_problem(how)}" in message and "download the file again" in message


def test_read_json_object_reads_objects_and_refuses_huge_files(tiny_models, tmp_path):
    assert loading.read_json_object(tiny_models.stage_1 / "model_index.json")["_class_name"] == "IFPipeline"
    huge = tmp_path / "model_index.json"
    with open(huge, "wb") as handle:  # sparse: nothing is written but the size
        handle.truncate(model_folders.MAX_CONFIG_BYTES + 1)
    with pytest.raises(ModelLoadError, match="far too large for a JSON config"):
        loading.read_json_object(huge)


def test_a_broken_t5_config_says_what_is_wrong(tiny_models, tmp_path):
    folder = _copy(tiny_models.text_encoder, tmp_path)
    config = folder / "text_encoder" / "config.json"
    config.write_text("[]")
    with pytest.raises(ModelLoadError, match=f"{config} holds a JSON list, not an object.*download"):
        text.load_t5(folder, device=CPU)


# -- damaged safetensors files ----------------------------------------------------------------------------------
def _header_length_only(length: int, rest: bytes = b"{}") -> bytes:
    return struct.pack("<Q", length) + rest


DAMAGED_SAFETENSORS = {
    # (file bytes, what the message says is wrong)
    "huge header length": (_header_length_only(2**62), f"its header length {2**62} is larger than the file (10 bytes)"),
    "header is a list": (_header_length_only(2, b"[]"), "its header is a JSON list, not an object"),
    "header is not JSON": (_header_length_only(3, b"abc"), "its header is not valid JSON"),
    "shorter than the length": (b"abc", "it is 3 bytes long, shorter than the 8-byte header length"),
    "entry without shape": (_header_length_only(13, b'{"w": "oops"}'), "its header entry 'w' is not a tensor"),
}


@pytest.mark.parametrize("damage", DAMAGED_SAFETENSORS)
def test_a_damaged_safetensors_file_is_named_with_the_problem_and_the_fix(tiny_models, tmp_path, damage):
    payload, problem = DAMAGED_SAFETENSORS[damage]
    stage = _copy(tiny_models.stage_1, tmp_path, "stage")
    weights = stage / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(payload)
    t5 = _copy(tiny_models.text_encoder, tmp_path, "t5")
    t5_weights = t5 / "text_encoder" / "model.safetensors"
    t5_weights.write_bytes(payload)

    # Estimates before a load read the headers: unknown, not a MemoryError / AttributeError.
    assert loading.estimated_bytes(stage, "fp32") is None
    assert text.estimated_t5_bytes(t5, "fp32") is None
    for load, path in (
        (lambda: loading.load_if_stage(stage, 1, device=CPU), weights),
        (lambda: text.load_t5(t5, precision="fp32", device=CPU), t5_weights),
    ):
        with pytest.raises(ModelLoadError) as caught:
            load()
        message = str(caught.value)
        assert f"{path} is not a valid safetensors file: {problem}" in message
        assert "download it again" in message


def test_safetensors_header_length_is_capped_like_safetensors_does(tmp_path):
    path = tmp_path / "big.safetensors"
    length = safetensors_headers.MAX_HEADER_BYTES + 1
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", length))
        handle.truncate(8 + length + 16)  # sparse: the file really is that long
    with pytest.raises(ModelLoadError, match=f"header length {length} is over the 100000000-byte limit"):
        safetensors_headers.read_safetensors_header(path)


def test_safetensors_header_of_a_good_file(tiny_models):
    from safetensors import safe_open

    path = tiny_models.stage_1 / "unet" / "diffusion_pytorch_model.safetensors"
    header = safetensors_headers.read_safetensors_header(path)
    with safe_open(str(path), "pt") as handle:
        assert set(header) - {"__metadata__"} == set(handle.keys())


# -- what a Hub download fetches --------------------------------------------------------------------------------
def _download_only(source, patterns, target):
    """Copy the files of ``source`` that a Hub download with ``patterns`` would fetch (huggingface_hub's filter)."""
    from huggingface_hub.utils import filter_repo_objects

    files = [p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()]
    for name in filter_repo_objects(files, allow_patterns=patterns):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / name, target / name)
    return target


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_the_files_a_hub_download_fetches_are_enough_to_load_the_stage(tiny_models, stage_3_folder, tmp_path, stage):
    source = {1: tiny_models.stage_1, 2: tiny_models.stage_2, 3: stage_3_folder}[stage]
    fetched = _download_only(source, loading.stage_file_patterns(stage, None), tmp_path / "snapshot")
    assert not (fetched / "text_encoder").exists() or stage == 3  # T5 is not fetched with Stage I / II
    loaded = loading.load_if_stage(fetched, stage, device=CPU)
    # Every weight the stage holds was fetched (Stage III: the estimate leaves out CLIP's small buffers).
    assert loaded.estimated_bytes == pytest.approx(loading.estimated_bytes(source, "fp32", stage=stage), rel=1e-3)
    loading.release(loaded)


def test_the_files_a_hub_download_fetches_are_enough_to_load_t5(tiny_models, tmp_path):
    fetched = _download_only(tiny_models.stage_1, text.t5_file_patterns("DeepFloyd/IF-I-XL-v1.0", None), tmp_path / "s")
    assert not (fetched / "unet").exists()  # the T5 download skips the UNet
    t5 = text.load_t5(fetched, precision="fp32", device=CPU)
    assert t5.embedding_dim == 32
    text.release_t5(t5)


def test_hub_patterns_pick_one_weight_set_of_a_real_if_repository():
    from huggingface_hub.utils import filter_repo_objects

    # File names as DeepFloyd/IF-I-XL-v1.0 has them (weights in safetensors and pickles, default and fp16).
    repo = [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "feature_extractor/preprocessor_config.json",
        "safety_checker/config.json",
        "safety_checker/model.safetensors",
        "watermarker/diffusion_pytorch_model.bin",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.fp16.bin",
        "text_encoder/config.json",
        "text_encoder/model.safetensors.index.json",
        "text_encoder/model.safetensors.index.fp16.json",
        "text_encoder/pytorch_model.bin.index.json",
        "text_encoder/model-00001-of-00002.safetensors",
        "text_encoder/model-00002-of-00002.safetensors",
        "text_encoder/model.fp16-00001-of-00002.safetensors",
        "text_encoder/model.fp16-00002-of-00002.safetensors",
        "text_encoder/pytorch_model-00001-of-00002.bin",
        "tokenizer/spiece.model",
        "tokenizer/tokenizer_config.json",
        "tokenizer/special_tokens_map.json",
    ]

    def fetched(patterns):
        return set(filter_repo_objects(repo, allow_patterns=patterns))

    configs = {"model_index.json", "scheduler/scheduler_config.json", "unet/config.json"}
    fp16_unet = "unet/diffusion_pytorch_model.fp16.safetensors"
    assert fetched(loading.stage_file_patterns(1, "fp16")) == configs | {fp16_unet}
    assert fetched(loading.stage_file_patterns(1, None)) == configs | {"unet/diffusion_pytorch_model.safetensors"}
    tokenizer = {"tokenizer/spiece.model", "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json"}
    assert fetched(text.t5_file_patterns("DeepFloyd/IF-I-XL-v1.0", "fp16")) == tokenizer | {
        "text_encoder/config.json",
        "text_encoder/model.safetensors.index.fp16.json",
        "text_encoder/model.fp16-00001-of-00002.safetensors",
        "text_encoder/model.fp16-00002-of-00002.safetensors",
    }
    assert fetched(text.t5_file_patterns("DeepFloyd/IF-I-XL-v1.0", None)) == tokenizer | {
        "text_encoder/config.json",
        "text_encoder/model.safetensors.index.json",
        "text_encoder/model-00001-of-00002.safetensors",
        "text_encoder/model-00002-of-00002.safetensors",
    }
    # Every weight file fetched for fp16 is recognised as the fp16 variant (so the load picks it).
    for name in fetched(text.t5_file_patterns("DeepFloyd/IF-I-XL-v1.0", "fp16")):
        if name.startswith("text_encoder/model"):
            assert model_folders.variant_of(name.split("/")[-1]) == "fp16", name
