"""Stage I and II UNets quantized by bitsandbytes (dtype "8bit" / "4bit"): loaded through the real loading code,
sampled on the CPU, compared with fp32; the errors without bitsandbytes and for the combinations that cannot
work; and one run through a real ComfyUI."""

from __future__ import annotations

import sys

import pytest
import torch

from pack import import_submodule
from tiny_graphs import prompt_nodes, save, stage_1_nodes, stage_2_nodes

loading = import_submodule("sampling.loading")
text = import_submodule("sampling.text")
sampling = import_submodule("sampling")
views = import_submodule("views")
ModelLoadError = loading.ModelLoadError

CPU = torch.device("cpu")
LAYERS = {"8bit": "Linear8bitLt", "4bit": "Linear4bit"}
# Measured on the tiny models (one Stage I image: 4 steps; Stage II from the same fp32 Stage I image: 2 steps;
# guidance 10): mean |quantized - fp32| over the final images in model space ([-1, 1]) is 8bit 0.034 (I) /
# 0.019 (II), 4bit 0.26 / 0.20, where two seeds in fp32 differ by 0.74 / 0.81. One UNet call's relative error
# (|out - fp32| / |fp32|): 8bit 0.009 / 0.017, 4bit 0.10 / 0.19 (bf16: 0.014 / 0.027); the tiny UNets' random,
# narrow layers are 4-bit's worst case. The bounds leave room for other CPUs' kernels.
IMAGE_BOUNDS = {"8bit": (0.1, 0.1), "4bit": (0.45, 0.4)}
UNET_BOUNDS = {"8bit": (0.03, 0.05), "4bit": (0.2, 0.3)}

pytestmark = pytest.mark.skipif(
    text.bitsandbytes_problem() is not None, reason=f"bitsandbytes cannot run here: {text.bitsandbytes_problem()}"
)


@pytest.fixture(scope="module")
def embeddings(tiny_models):
    t5 = text.load_t5(tiny_models.text_encoder, device=CPU)
    yield text.encode_prompts(t5, ["an oil painting of a horse", "an oil painting of a deer"])
    text.release_t5(t5)


def flip_views():
    return [views.make_view("identity"), views.make_view("flip")]


def stage_folder(tiny_models, stage):
    return tiny_models.stage_1 if stage == 1 else tiny_models.stage_2


def unet_call(loaded, embeddings):
    """One UNet call on fixed inputs, as a float32 tensor."""
    size, channels = (64, 3) if loaded.stage == 1 else (256, 6)
    sample = torch.randn((2, channels, size, size), generator=torch.Generator().manual_seed(0)).to(loaded.dtype)
    extra = {} if loaded.stage == 1 else {"class_labels": torch.tensor([50, 50])}
    with torch.inference_mode():
        out = loaded.unet(sample, 500, encoder_hidden_states=embeddings.positive.to(loaded.dtype), **extra)
    return out.sample.float()


def sample(loaded, embeddings, start=None, *, seed=0):
    if loaded.stage == 1:
        options = dict(num_inference_steps=4, seed=seed)
        return sampling.sample_stage_1(loaded.unet, loaded.scheduler, flip_views(), embeddings, **options).images
    noising = loaded.pipeline.image_noising_scheduler
    return sampling.sample_stage_2(
        loaded.unet, loaded.scheduler, noising, start, flip_views(), embeddings, num_inference_steps=2, seed=seed
    ).images


@pytest.fixture(scope="module")
def fp32_results(tiny_models, embeddings):
    """Per stage: (one UNet call, the sampled images, the images of another seed), all in fp32."""
    results = {}
    start = None
    for stage in (1, 2):
        loaded = loading.load_if_stage(stage_folder(tiny_models, stage), stage, device=CPU, dtype="fp32")
        images = sample(loaded, embeddings, start)
        results[stage] = (unet_call(loaded, embeddings), images, sample(loaded, embeddings, start, seed=1))
        start = images if stage == 1 else start
        loading.release(loaded)
    return results


@pytest.mark.parametrize("stage", [1, 2])
@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_quantized_stage_loads_and_samples_close_to_fp32(tiny_models, embeddings, fp32_results, stage, quantization):
    folder = stage_folder(tiny_models, stage)
    loaded = loading.load_if_stage(folder, stage, device=CPU, dtype=quantization)
    assert (loaded.quantization, loaded.dtype, loaded.offload) == (quantization, torch.float32, "none")
    assert loaded.unet.dtype == torch.float32  # what the samplers read: the compute dtype, not int8/uint8
    # Every Linear layer is a bitsandbytes layer holding quantized weights; convolutions stay fp32.
    kinds = {type(module).__name__ for module in loaded.unet.modules()}
    assert "Linear" not in kinds and LAYERS[quantization] in kinds
    layers = [m for m in loaded.unet.modules() if type(m).__name__ == LAYERS[quantization]]
    assert {m.weight.dtype for m in layers} == ({torch.int8} if quantization == "8bit" else {torch.uint8})
    assert loaded.unet.conv_in.weight.dtype == torch.float32
    fp32_unet, fp32_images, other_seed = fp32_results[stage]
    full = loading.estimated_bytes(folder, "fp32", stage=stage)
    assert loading.estimated_bytes(folder, quantization, stage=stage) == loaded.estimated_bytes < full
    assert loaded.parameter_count == full // 4

    call = unet_call(loaded, embeddings)
    assert (call - fp32_unet).norm() / fp32_unet.norm() < UNET_BOUNDS[quantization][stage - 1]
    images = sample(loaded, embeddings, fp32_results[1][1])
    assert images.shape == fp32_images.shape and torch.isfinite(images).all()
    difference = (images.float() - fp32_images).abs().mean().item()
    assert difference < IMAGE_BOUNDS[quantization][stage - 1]
    assert difference < (other_seed - fp32_images).abs().mean().item() / 2
    loading.release(loaded)
    assert loaded.released


def test_anti_segregation_takes_gradients_through_a_4bit_unet(tiny_models, embeddings):
    loaded = loading.load_if_stage(tiny_models.stage_1, 1, device=CPU, dtype="4bit")
    settings = sampling.AntiSegregation()
    # Two steps: the no-gradient first step, then anti-segregation's gradient through the UNet after it.
    options = dict(num_inference_steps=2, seed=0, anti_segregation=settings)
    images = sampling.sample_stage_1(loaded.unet, loaded.scheduler, flip_views(), embeddings, **options).images
    plain = sampling.sample_stage_1(loaded.unet, loaded.scheduler, flip_views(), embeddings, num_inference_steps=2)
    assert torch.isfinite(images).all() and not torch.equal(images, plain.images)
    loading.release(loaded)


def test_quantized_estimates_for_hub_models_are_smaller_than_fp16():
    fp16 = loading.estimated_bytes("DeepFloyd/IF-I-XL-v1.0", "fp16")
    eight = loading.estimated_bytes("DeepFloyd/IF-I-XL-v1.0", "8bit", device="cuda")
    four = loading.estimated_bytes("DeepFloyd/IF-I-XL-v1.0", "4bit", device="cuda")
    assert four < eight < fp16
    # The convolutions stay in the compute dtype: on the CPU (fp32) a quantized UNet outweighs fp16.
    assert loading.estimated_bytes("DeepFloyd/IF-I-XL-v1.0", "8bit", device="cpu") > fp16


# -- errors -------------------------------------------------------------------------------------------


def test_quantized_without_bitsandbytes_says_what_to_install(tiny_models, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # what an environment without it looks like
    with pytest.raises(ModelLoadError) as caught:
        loading.load_if_stage(tiny_models.stage_1, 1, device=CPU, dtype="8bit")
    message = str(caught.value)
    assert message.startswith(text.BITSANDBYTES_MESSAGE) and "bitsandbytes is not installed" in message
    assert "pip install bitsandbytes" in message and "pick fp16/bf16/fp32 instead" in message


def test_bitsandbytes_failing_on_this_platform_is_reported_as_such(tiny_models, monkeypatch):
    import bitsandbytes

    def no_kernel(*args, **kwargs):
        raise RuntimeError("no kernel for this device")

    monkeypatch.setattr(bitsandbytes.functional, "quantize_4bit", no_kernel)
    with pytest.raises(ModelLoadError) as caught:
        loading.load_if_stage(tiny_models.stage_2, 2, device=CPU, dtype="4bit")
    message = str(caught.value)
    assert message.startswith(text.BITSANDBYTES_MESSAGE)
    assert "quantizing the Stage II UNet" in message and "no kernel for this device" in message


GPU = torch.device("cuda", 0)


@pytest.mark.parametrize("device, offload", [(GPU, "model"), (GPU, "sequential"), (CPU, "sequential")])
def test_offload_with_quantized_weights_is_refused_before_loading(tiny_models, device, offload):
    # Refused before anything is read or placed: no GPU is needed to see the message.
    with pytest.raises(ModelLoadError) as caught:
        loading.load_if_stage(tiny_models.stage_1, 1, device=device, dtype="8bit", offload=offload)
    message = str(caught.value)
    assert f"dtype '8bit' cannot be used with offload '{offload}'" in message
    assert "Pick offload 'none'" in message and "fp16/bf16" in message


def test_model_offload_on_the_cpu_is_no_offload_for_quantized_weights(tiny_models):
    loaded = loading.load_if_stage(tiny_models.stage_1, 1, device=CPU, dtype="4bit", offload="model")
    assert loaded.offload == "none" and not getattr(loaded.pipeline, "_all_hooks", None)
    loading.release(loaded)


def test_stage_iii_is_not_quantized():
    assert "8bit" not in loading.STAGE_DTYPES[3] and loading.STAGE_DTYPES[1][-2:] == ("8bit", "4bit")
    with pytest.raises(ModelLoadError, match="dtype '4bit' is for the Stage I and II UNets"):
        loading.load_if_stage("/nowhere", 3, device=CPU, dtype="4bit")


# -- a real ComfyUI ---------------------------------------------------------------------------------


def test_quantized_stages_run_in_comfyui_and_bad_offloads_name_the_inputs(comfy_server):
    info = comfy_server.object_info()
    options = lambda node: info[node]["input"]["required"]["dtype"][1]["options"]  # noqa: E731
    assert options("VisualAnagramsLoadStageI") == ["auto", "fp16", "bf16", "fp32", "8bit", "4bit"]
    assert options("VisualAnagramsLoadStageII")[-2:] == ["8bit", "4bit"]
    assert "8bit" not in options("VisualAnagramsLoadStageIII")
    assert "bitsandbytes" in info["VisualAnagramsLoadStageI"]["input"]["required"]["dtype"][1]["tooltip"]

    mark = comfy_server.log_mark()
    graph = {
        **prompt_nodes(),
        **stage_1_nodes(dtype="8bit", steps=2),
        **stage_2_nodes(["6", 0], dtype="4bit", steps=2),
        "9": save(["8", 0], "va/quantized"),
    }
    result = comfy_server.run(graph, timeout=300)
    (image,) = [comfy_server.open_image(ref) for ref in result.images if ref.node_id == "9"]
    assert image.size == (256, 256)
    log = comfy_server.log_text(since=mark)
    assert "loaded 'tiny-IF-I' in 8bit computing in fp32" in log, comfy_server.log_tail()
    assert "loaded 'tiny-IF-II' in 4bit computing in fp32" in log, comfy_server.log_tail()

    graph["5"]["inputs"]["offload"] = "sequential"
    failed = comfy_server.run(graph, check=False, timeout=120)
    assert failed.status == "error"
    message = failed.error["exception_message"]
    assert failed.error["node_type"] == "VisualAnagramsLoadStageI" and "IF Stage I Loader" in message
    assert "dtype '8bit' cannot be used with offload 'sequential'" in message and "offload 'none'" in message
