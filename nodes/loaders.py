"""Loader nodes: DeepFloyd IF Stage I / II / III and the T5 text encoder.

Models come from ComfyUI's ``models/diffusers`` (and ``models/text_encoders``)
folders, from the known Hugging Face ids, or are the pack's embedded demo model
(``demo/IF-I-digits``: a tiny Stage I with its own tiny T5 that draws
handwritten digits, listed by the Stage I and T5 loaders in any ComfyUI without
touching ComfyUI's model folders). A loader loads only what it lists
(:mod:`.model_lists`): any other name, typed into API JSON or a stale workflow, is
refused at validation with the valid choices, and refused again when the node runs.

ComfyUI decides the rest, as for its own models: "auto" dtype is
``comfy.model_management``'s choice (``--fp16-unet``, ``--bf16-unet``,
``--fp32-unet``, ``--fp16-text-enc``, ``--bf16-text-enc`` ...), loaders run on its
torch device, free memory before a large load, follow ``--cpu`` / ``--lowvram`` /
``--novram`` when the offload choice is "auto", report out-of-memory through its
exception type and stop a Hub download when the prompt is cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import comfy.model_management as mm
from comfy_api.latest import io

from ..sampling.loading import (
    DTYPES,
    HUB_IDS,
    OFFLOADS,
    STAGE_DTYPES,
    T5_HUB_ID,
    LoadCancelled,
    ModelLoadError,
    dtype_name,
    estimated_bytes,
    load_if_stage,
    release,
)
from ..sampling.text import PRECISIONS, load_t5, release_t5
from .choices import check_choice
from .comfy_rules import (
    AUTO,
    auto_text_encoder_precision,
    auto_unet_dtype,
    load_failure,
    offload_for,
    out_of_memory,
    out_of_memory_errors,
    text_encoder_device,
)
from .labels import node_label
from .model_choices import (
    DIFFUSERS_WHERE,
    T5_FILE_SOURCES,
    T5_SOURCES,
    T5_WHERE,
    ModelSources,
    if_tokenizer_folders,
    model_choices,
    model_source,
    refusal,
)
from .model_handle import ModelHandle, pipeline_modules
from .model_lists import stage_folder_check
from .types import CATEGORY, StageIIIModel, StageIIModel, StageIModel, TextEncoder

logger = logging.getLogger(__name__)


def load_for_node(label: str, what: str, fix: str, load: Callable[[], Any]) -> Any:
    """Run ``load`` the way a node must: its errors named after the node, out-of-memory recognised the way
    ComfyUI recognises it, and a cancelled prompt reported as ComfyUI's own interruption."""
    try:
        return load()
    except LoadCancelled:
        mm.throw_exception_if_processing_interrupted()  # ComfyUI reports "interrupted"
        raise
    except ModelLoadError as error:
        raise load_failure(f"{label}: {what}: {error}", error) from error
    except out_of_memory_errors() as error:
        mm.soft_empty_cache()
        raise out_of_memory(
            f"{label}: {what}: not enough memory to load it ({type(error).__name__}): free memory (ComfyUI's "
            f"'Unload Models' button, or fewer models in the workflow), {fix}",
            error,
        ) from error


def _load_stage(label: str, stage: int, model: str, source: str, dtype: str, offload: str) -> ModelHandle:
    device = mm.get_torch_device()
    quantized = dtype not in DTYPES  # "8bit" / "4bit" (the node checked the choice against STAGE_DTYPES)
    # Quantized weights stay where bitsandbytes made them: "auto" cannot follow --lowvram / --novram with
    # offload, and an explicit offload is refused by load_if_stage (naming both inputs and the fix).
    plan = "none" if quantized and offload == AUTO else offload_for(offload, device)
    # A quantized UNet computes in what ComfyUI picks for a UNet here (fp16 on most GPUs, fp32 on the CPU).
    compute = auto_unet_dtype(label, source, stage, device) if quantized or dtype == AUTO else dtype
    if dtype == AUTO:
        dtype = compute
    if plan == "none":
        # Make room the way ComfyUI's own loaders do: unload what it holds, if needed.
        needed = estimated_bytes(source, dtype, stage=stage, device=device, compute_dtype=compute)
        if needed:
            mm.free_memory(needed, device)
        mm.soft_empty_cache()

    def load():
        loaded = load_for_node(
            label,
            f"model '{model}'",
            "pick 4bit, or a smaller model"
            if quantized
            else "pick offload 'model' (or 'sequential'), fp16, or a smaller model",
            lambda: load_if_stage(
                source,
                stage,
                device=device,
                dtype=dtype,
                compute_dtype=compute,
                offload=plan,
                should_stop=mm.processing_interrupted,
            ),
        )
        precision = dtype_name(loaded.dtype)
        if quantized:
            precision = f"{dtype} computing in {precision}"
        logger.info("%s: loaded '%s' in %s on %s (offload %s)", label, model, precision, device, plan)
        return loaded

    # With diffusers' offload hooks the weights move on their own; otherwise ComfyUI moves them, except
    # bitsandbytes' weights, which cannot be moved once quantized: ComfyUI neither offloads nor counts them.
    handle = ModelHandle(label, load, release, pipeline_modules if plan == "none" and not quantized else None)
    handle.get()  # load now, so a missing model is reported by this node
    return handle


def _stage_loader(stage: int, node_id: str, title: str, socket, hub_ids: tuple[str, ...], description: str):
    sources: ModelSources = (("diffusers", stage_folder_check(stage)),)
    names = dict(sources=sources, hub_ids=hub_ids, embedded=stage == 1, where=DIFFUSERS_WHERE)
    dtypes = STAGE_DTYPES[stage]  # 8bit/4bit last, so saved workflows keep their choice's position
    quantized_tip = (
        " 8bit / 4bit (need the bitsandbytes package): the UNet's Linear layers (attention, text and time "
        "embeddings: about a third of an IF UNet) stored in 8 or 4 bits (nf4); its convolutions and the "
        "arithmetic stay in auto's dtype. So the UNet shrinks by only about 15-20 % (8bit) or 20-25 % (4bit) "
        "next to fp16, 20-30 % next to fp32 on the CPU (where bf16 halves it and runs faster); images differ "
        "slightly (4bit more). Only with offload auto or none (quantized weights cannot move), and ComfyUI does "
        "not unload a quantized model to make room for others."
        if len(dtypes) > len(DTYPES)
        else ""
    )

    class StageLoader(io.ComfyNode):
        @classmethod
        def define_schema(cls) -> io.Schema:
            return io.Schema(
                node_id=node_id,
                display_name=title,
                category=f"{CATEGORY}/loaders",
                description=description,
                inputs=[
                    io.Combo.Input(
                        "model",
                        options=model_choices(sources, hub_ids, embedded=stage == 1),
                        tooltip="A diffusers folder in ComfyUI/models/diffusers (as <name> or <owner>/<name>), or a "
                        "listed Hugging Face id (downloaded on first use: needs the DeepFloyd licence accepted and a "
                        "token; see the README). Only listed models load."
                        + (
                            " 'embedded: digits demo' is a tiny model inside this pack that draws handwritten "
                            "digits (prompts like 'the digit six'; use its T5 too): no download, fast on a CPU."
                            if stage == 1
                            else ""
                        ),
                    ),
                    io.Combo.Input(
                        "dtype",
                        options=list(dtypes),
                        default="auto",
                        tooltip="auto: what ComfyUI picks for a UNet on this device (fp16 on most GPUs, "
                        "fp32 on the CPU; --fp16-unet, --bf16-unet and --fp32-unet decide it)." + quantized_tip,
                    ),
                    io.Combo.Input(
                        "offload",
                        options=[AUTO, *OFFLOADS],
                        default=AUTO,
                        tooltip="auto follows ComfyUI (--lowvram: model offload, --novram: sequential). "
                        "model: each part on the GPU only while it runs; sequential: least VRAM, slowest.",
                    ),
                ],
                outputs=[
                    socket.Output(display_name="model", tooltip="The loaded model, for the sampler of this stage.")
                ],
            )

        @classmethod
        def validate_inputs(cls, model) -> bool | str:
            return refusal(node_label(cls), "model", model, **names) or True

        @classmethod
        def execute(cls, model, dtype, offload) -> io.NodeOutput:
            label = node_label(cls)
            check_choice(label, "dtype", dtype, dtypes)
            check_choice(label, "offload", offload, (AUTO, *OFFLOADS))
            source = model_source(label, "model", model, **names)
            return io.NodeOutput(_load_stage(label, stage, model, source, dtype, offload))

    StageLoader.__name__ = StageLoader.__qualname__ = node_id
    return StageLoader


LoadStageI = _stage_loader(
    1,
    "VisualAnagramsLoadStageI",
    "IF Stage I Loader",
    StageIModel,
    HUB_IDS[1],
    "Loads a DeepFloyd IF Stage I model (IF-I-M 0.4B, IF-I-L 0.9B, IF-I-XL 4.3B parameters), without its text encoder.",
)
LoadStageII = _stage_loader(
    2,
    "VisualAnagramsLoadStageII",
    "IF Stage II Loader",
    StageIIModel,
    HUB_IDS[2],
    "Loads a DeepFloyd IF Stage II super-resolution model (IF-II-M, IF-II-L: 64 -> 256 px).",
)
LoadStageIII = _stage_loader(
    3,
    "VisualAnagramsLoadStageIII",
    "IF Stage III Loader (x4 upscaler)",
    StageIIIModel,
    HUB_IDS[3],
    "Loads Stable Diffusion's x4 upscaler (256 -> 1024 px). As in the paper it is naive: it follows the first "
    "prompt only and does not know the views.",
)

T5_NAMES = dict(sources=T5_SOURCES, hub_ids=(T5_HUB_ID,), embedded=True, where=T5_WHERE, file_sources=T5_FILE_SOURCES)
T5_DEVICES = ("default", "cpu")


class LoadTextEncoder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VisualAnagramsLoadT5",
            display_name="T5 Text Encoder Loader (IF)",
            category=f"{CATEGORY}/loaders",
            description="Loads DeepFloyd IF's T5-XXL text encoder (4.5B parameters: fp16 about 11 GB, 8-bit about "
            "8 GB, 4-bit less) from a folder with text_encoder/ and tokenizer/ (an IF-I model folder works), the "
            "single-file T5-XXL that Flux and SD3 use (t5xxl_fp16.safetensors, fp8 ones too) or a Hugging Face id.",
            inputs=[
                io.Combo.Input(
                    "encoder",
                    options=model_choices(T5_SOURCES, (T5_HUB_ID,), embedded=True, file_sources=T5_FILE_SOURCES),
                    tooltip="A folder in ComfyUI/models/text_encoders or models/diffusers, a T5-XXL .safetensors file "
                    "in models/text_encoders (Flux / SD3's t5xxl_fp16 or fp8: the same T5 v1.1 XXL encoder IF uses; "
                    "files are recognised by their contents, CLIP and umT5 files are not listed), or the listed "
                    "Hugging Face id (downloaded on first use). Only listed models load. 'embedded: digits demo' is "
                    "the tiny T5 of the pack's demo model (pair it with that Stage I).",
                ),
                io.Combo.Input(
                    "precision",
                    options=[AUTO, *PRECISIONS],
                    default=AUTO,
                    tooltip="auto: what ComfyUI picks for text encoders (fp16 on a GPU, fp32 when kept on "
                    "the CPU; --fp16-text-enc, --bf16-text-enc and --fp32-text-enc decide it). 8bit/4bit "
                    "need bitsandbytes.",
                ),
                io.Combo.Input(
                    "device",
                    options=list(T5_DEVICES),
                    default="default",
                    tooltip="default: where ComfyUI runs its own text encoders (the GPU; the CPU with --lowvram, "
                    "--novram, --cpu or on GPUs whose fp16 ComfyUI does not use; --gpu-only forces the GPU). cpu "
                    "keeps the encoder in system memory: slow, but uses no VRAM.",
                ),
            ],
            outputs=[
                TextEncoder.Output(
                    display_name="text encoder", tooltip="The T5 encoder, for the Anagram Prompt Encoder."
                )
            ],
        )

    @classmethod
    def validate_inputs(cls, encoder) -> bool | str:
        return refusal(node_label(cls), "encoder", encoder, **T5_NAMES) or True

    @classmethod
    def execute(cls, encoder, precision, device) -> io.NodeOutput:
        label = node_label(cls)
        check_choice(label, "precision", precision, (AUTO, *PRECISIONS))
        check_choice(label, "device", device, T5_DEVICES)
        source = model_source(label, "encoder", encoder, **T5_NAMES)
        # Where ComfyUI runs its own text encoders (the CPU with --lowvram, --novram, --cpu), unless 'cpu' is asked.
        run_device = text_encoder_device(device)
        keep_on_cpu = run_device.type == "cpu"
        if precision == AUTO:
            precision = auto_text_encoder_precision(run_device)

        def load():
            t5 = load_for_node(
                label,
                f"encoder '{encoder}'",
                "pick 8bit or 4bit, or device 'cpu'",
                lambda: load_t5(
                    source,
                    precision=precision,
                    device=run_device,
                    keep_on_cpu=keep_on_cpu,
                    should_stop=mm.processing_interrupted,
                    tokenizer_folders=if_tokenizer_folders(),  # for a single file: IF's tokenizer, or ComfyUI's
                ),
            )
            logger.info("%s: loaded '%s' in %s on %s", label, encoder, t5.precision, t5.device)
            if t5.tokenizer_source:  # a single file has no tokenizer of its own: say whose it uses
                logger.info("%s: '%s' uses the T5 tokenizer in %s", label, encoder, t5.tokenizer_source)
            return t5

        # Quantized (bitsandbytes) weights cannot be moved; CPU-kept ones must not be.
        movable = precision in ("fp32", "fp16", "bf16") and not keep_on_cpu
        handle = ModelHandle(
            label,
            load,
            release_t5,
            (lambda t5: {"encoder": t5.model}) if movable else None,
            offload_device=mm.text_encoder_offload_device,
        )
        handle.get()
        return io.NodeOutput(handle)
