"""Loading DeepFloyd IF's stages as diffusers pipelines, with errors that say what to do.

``load_if_stage(source, stage, device=..., dtype=..., offload=..., should_stop=...)`` loads

* Stage I  (``IFPipeline``, text -> 64 px),
* Stage II (``IFSuperResolutionPipeline``, 64 -> 256 px),
* Stage III (``StableDiffusionUpscalePipeline``, Stable Diffusion's x4 upscaler),

from a local diffusers folder (ComfyUI's ``models/diffusers/<name>``) or a
Hugging Face id. A Hub id is first downloaded (only the files the stage loads,
bounded in time and cancellable: :mod:`.hub`), then loaded like a local folder.
Stages I and II load *without* T5 (``text.load_t5`` encodes prompts once for
every stage), and no stage loads a safety checker, watermarker or feature
extractor. Stage III keeps its own small CLIP text encoder. Weights are read
from safetensors only: pickled ``.bin``/``.pt`` files are refused, and every
safetensors header is checked before diffusers reads the file.

Stages I and II can also run with bitsandbytes-quantized UNets (dtype "8bit" or
"4bit" nf4): every ``torch.nn.Linear`` of the UNet (attention projections, time,
text and class embeddings: diffusers' default, which skips no module) becomes a
bitsandbytes layer; convolutions and norms, most of an IF UNet's weights, stay
in the compute dtype. See :func:`load_if_stage`.

Every failure the user can fix raises :class:`ModelLoadError`, whose message
names the path or id, what is wrong and what to do about it. No ComfyUI import:
the nodes pass the torch device, the paths and the cancel check in.

The names the nodes import from here (the loader's public interface) are listed in ``__all__``; some live in
the modules of their concern and are re-exported.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .device_memory import OUT_OF_MEMORY_ERRORS, element_size, empty_device_caches, free_module
from .hub import ShouldStop, download_weights, resolve_source
from .if_models import (
    COMFY_DIFFUSERS_DIR,
    HUB_IDS,
    HUB_PARAMETER_COUNTS,
    STAGE_3_HUB_IDS,
    STAGE_CONFIG_FOLDERS,
    STAGE_LABELS,
    STAGE_LAYOUTS,
    STAGE_NAMES,
    STAGE_WEIGHT_COMPONENTS,
    STAGES,
    T5_HUB_ID,
    known_hub_stage,
)
from .library_versions import diffusers_dtype_kwarg, sequential_offload_runs_on_cpu
from .model_errors import LoadCancelled, ModelLoadError, first_line
from .model_folders import (
    DIFFUSERS_WEIGHTS_NAME,
    TRANSFORMERS_WEIGHTS_NAME,
    detect_stage,
    has_variant_files,
    missing_folder_message,
    pickle_only_message,
    read_json_object,
    stage_from_configs,
    try_read_json_object,
    variant_of,
    weight_file_patterns,
    weight_files,
)
from .safetensors_headers import check_safetensors_files, read_safetensors_header, safetensors_parameter_count
from .scrubbing import scrub_secrets
from .text import BITSANDBYTES_MESSAGE, bitsandbytes_problem, silence_bitsandbytes_cast_notices

__all__ = [
    "DTYPES",
    "HUB_IDS",
    "OFFLOADS",
    "QUANTIZED",
    "STAGE_DTYPES",
    "T5_HUB_ID",
    "LoadCancelled",
    "LoadedStage",
    "ModelLoadError",
    "detect_stage",
    "dtype_name",
    "estimated_bytes",
    "load_if_stage",
    "read_json_object",
    "release",
    "resolve_dtype",
    "stage_file_patterns",
]

logger = logging.getLogger(__name__)

DTYPES = ("auto", "fp16", "bf16", "fp32")
#: bitsandbytes' weight formats for Stage I and II UNets: LLM.int8() and 4-bit NormalFloat (nf4).
QUANTIZED = ("8bit", "4bit")
#: What each stage's loader accepts. Stage III (the x4 upscaler: a latent UNet, a VAE and a CLIP text
#: encoder) is not quantized.
STAGE_DTYPES = {1: (*DTYPES, *QUANTIZED), 2: (*DTYPES, *QUANTIZED), 3: DTYPES}
OFFLOADS = ("none", "model", "sequential")
#: bitsandbytes' 4-bit block: one absmax scale (fp32) per 64 weights, as diffusers' default config makes it.
_NF4_BLOCK = 64
#: The share of a DeepFloyd Hub model's UNet parameters assumed to be in Linear layers, for estimates made
#: before its files are here (local folders are counted exactly). IF-shaped UNet2DConditionModels (IF's
#: block types, 64-channel heads, T5-XXL's 4096-wide text projection) of 0.6 to 2.5 billion parameters
#: hold 28 to 33 % of them in Linear layers; the lower figure errs towards freeing more memory.
_HUB_LINEAR_SHARE = 0.25


# -- results ----------------------------------------------------------------------------------
@dataclass
class LoadedStage:
    """A loaded IF stage. ``device`` is where it runs (with offload the weights
    wait on the CPU between calls); pass it to the samplers as ``device``."""

    pipeline: object
    stage: int
    source: str
    device: torch.device
    dtype: torch.dtype
    offload: str
    variant: str | None = None  # the weight variant read ("fp16") or None for the default files
    quantization: str | None = None  # "8bit" / "4bit": the UNet's Linear layers; ``dtype`` is the compute dtype
    _released: bool = field(default=False, repr=False)

    @property
    def released(self) -> bool:
        return self._released

    @property
    def unet(self):
        return self._live().unet

    @property
    def scheduler(self):
        return self._live().scheduler

    @property
    def parameter_count(self) -> int:
        """Exact number of parameters over every loaded module (a 4-bit weight counts its unpacked shape)."""
        return sum(_unpacked_numel(p) for module in self._modules() for p in module.parameters())

    @property
    def estimated_bytes(self) -> int:
        """Bytes the weights (parameters, buffers and quantization scales) take where they live."""
        return sum(_weight_bytes(module) for module in self._modules())

    def _modules(self) -> list[torch.nn.Module]:
        return [m for m in self._live().components.values() if isinstance(m, torch.nn.Module)]

    def _live(self):
        if self._released or self.pipeline is None:
            raise ModelLoadError(f"the {STAGE_NAMES[self.stage]} model {self.source} was released: load it again")
        return self.pipeline


# -- public API -------------------------------------------------------------------------------
def load_if_stage(
    source: str | os.PathLike,
    stage: int,
    *,
    device: torch.device,
    dtype: str = "auto",
    compute_dtype: str = "auto",
    offload: str = "none",
    should_stop: ShouldStop | None = None,
    hub_timeout: float | None = None,
) -> LoadedStage:
    """Load IF Stage ``stage`` (1, 2 or 3) from a local diffusers folder or a Hub id.

    ``dtype`` is one of :data:`STAGE_DTYPES` ``[stage]`` ("auto": fp16 on an accelerator,
    fp32 on the CPU); fp16 prefers the repo's ``fp16`` weight variant when it has one.
    "8bit" / "4bit" (Stages I and II, needs bitsandbytes) quantize the UNet's Linear
    layers on ``device`` as they are placed there; everything else, and the arithmetic,
    is in ``compute_dtype`` (a :data:`DTYPES` name, "auto" as above). Quantized weights
    cannot be moved afterwards, so they take offload "none" only ("model" on the CPU,
    where it is the same thing).
    ``offload`` is one of :data:`OFFLOADS`: "none" moves the pipeline to
    ``device``; "model" and "sequential" use diffusers' CPU offload towards
    ``device``. A Hub id is downloaded first: ``should_stop()`` (polled while it
    downloads) cancels with :class:`LoadCancelled`; ``hub_timeout`` seconds
    without an answer from the Hub fail (default :func:`.hub.hub_timeout`).
    """
    if stage not in STAGES:
        raise ModelLoadError(f"unknown stage {stage!r}: DeepFloyd IF has stages 1, 2 and 3")
    device = torch.device(device)
    quantization = _quantization(dtype, stage)
    torch_dtype = resolve_dtype(compute_dtype if quantization else dtype, device)
    _check_offload(offload, device, quantization)
    if quantization is not None:
        _check_bitsandbytes()

    location = resolve_source(source)
    hub_id = None if isinstance(location, Path) else location
    if hub_id is None:
        folder = location
    else:
        known = known_hub_stage(hub_id)
        if known is not None and known != stage:
            raise ModelLoadError(_wrong_stage_message(hub_id, known, stage))
        folder = _download_stage(hub_id, stage, torch_dtype, should_stop, hub_timeout)
        if not (folder / "model_index.json").is_file():
            raise ModelLoadError(
                f"'{hub_id}' does not load as a {STAGE_LABELS[stage]}: the repository has no model_index.json. "
                f"Use one of {', '.join(HUB_IDS[stage])}."
            )
    label = hub_id or str(folder)
    _check_pipeline_folder(folder, stage)
    preferred = _local_variant(folder, STAGE_WEIGHT_COMPONENTS[stage], torch_dtype)
    variants = [preferred, None] if preferred else [None]

    # Outside inference mode (ComfyUI runs nodes inside it): weights made there are inference tensors,
    # which autograd refuses, and anti-segregation takes gradients through the UNet.
    with torch.inference_mode(False):
        pipeline, variant = _from_pretrained(folder, stage, torch_dtype, variants, hub_id=hub_id)
        _check_loaded_stage(pipeline, stage, label)
        # Loaded for sampling only: frozen weights also keep a backward pass from saving what weight
        # gradients would need.
        pipeline.unet.requires_grad_(False)
        if pipeline.unet.dtype != torch_dtype:  # a diffusers that ignored the dtype argument
            pipeline.to(dtype=torch_dtype, silence_dtype_warnings=True)
        loaded = LoadedStage(
            pipeline=pipeline,
            stage=stage,
            source=label,
            device=device,
            dtype=torch_dtype,
            # Quantized weights get no offload hooks: on the CPU "model" offload is "none" anyway.
            offload="none" if quantization else offload,
            variant=variant,
            quantization=quantization,
        )
        _place(loaded)
    return loaded


def _place(loaded: LoadedStage) -> None:
    """Quantize the UNet onto the device, move the pipeline there, or set up its CPU offload towards it."""
    pipeline, device, offload = loaded.pipeline, loaded.device, loaded.offload
    try:
        if loaded.quantization is not None:
            _quantize_linear_layers(loaded)
        if offload == "none":
            pipeline.to(device, silence_dtype_warnings=True)
        elif offload == "model":
            pipeline.enable_model_cpu_offload(device=device)
        else:
            pipeline.enable_sequential_cpu_offload(device=device)
    except OUT_OF_MEMORY_ERRORS as error:
        release(loaded)
        raise ModelLoadError(
            f"not enough memory on {device} for the {STAGE_NAMES[loaded.stage]} model {loaded.source} in "
            f"{_precision_label(loaded.quantization, loaded.dtype)}"
            f"{'' if offload == 'none' else f' with offload {offload!r}'}: free memory (unload other models), "
            + (
                "pick 4bit, or a smaller model"
                if loaded.quantization
                else "pick offload 'model' (or 'sequential': least memory, slowest), fp16, or a smaller model"
            )
        ) from error


def release(loaded: LoadedStage) -> None:
    """Free a loaded stage: drop offload hooks, free the weights, empty the device cache.

    Weights are moved to the ``meta`` device (storage freed at once, even where
    another object still references a module); the ``LoadedStage`` is unusable after.
    """
    pipeline = loaded.pipeline
    loaded._released = True
    loaded.pipeline = None
    if pipeline is None:
        return
    if loaded.offload != "none" or getattr(pipeline, "_all_hooks", None):
        try:
            pipeline.remove_all_hooks()
        except Exception as error:  # noqa: BLE001 - accelerate may fail to restore weights; we free them anyway
            logger.debug("removing offload hooks failed: %s", error)
    for name, component in list(pipeline.components.items()):
        if isinstance(component, torch.nn.Module):
            free_module(component)
            setattr(pipeline, name, None)
    del pipeline
    empty_device_caches()


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The torch dtype for a :data:`DTYPES` name on ``device``."""
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if dtype == "auto":
        return torch.float32 if torch.device(device).type == "cpu" else torch.float16
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}.get(dtype, str(dtype))


def estimated_bytes(
    source: str | os.PathLike,
    dtype: torch.dtype | str,
    *,
    stage: int | None = None,
    device: torch.device | str = "cpu",
    compute_dtype: str = "auto",
) -> int | None:
    """Approximate bytes a stage's weights take in ``dtype``, *before* loading it.

    Local folders: exact parameter counts read from the safetensors headers of
    the components the stage loads. Known Hub ids: DeepFloyd's published
    parameter counts. ``None`` when unknown (a broken folder included: the load
    reports what is wrong). ``dtype``: a torch dtype or one of :data:`DTYPES`
    ("auto" resolved for ``device``), or "8bit" / "4bit": the UNet's Linear weights
    (2-D ``*.weight`` tensors in a folder's headers; an assumed share of a Hub
    model's) at 1 byte + one fp32 scale per row, or half a byte + one fp32 scale
    per 64 weights, the rest in ``compute_dtype``.
    """
    quantization = dtype if dtype in QUANTIZED else None
    chosen = compute_dtype if quantization else dtype
    element = element_size(chosen if isinstance(chosen, torch.dtype) else resolve_dtype(chosen, torch.device(device)))
    location = resolve_source(source)
    if isinstance(location, Path):
        if not location.is_dir():
            return None
        stage = stage or detect_stage(location)
        if stage is None:
            return None
        if quantization is None:
            count = sum(safetensors_parameter_count(location / c) or 0 for c in STAGE_WEIGHT_COMPONENTS[stage])
            return count * element or None
        shapes = _tensor_shapes(location / "unet")
        if shapes is None:
            return None
        others = sum(safetensors_parameter_count(location / c) or 0 for c in STAGE_WEIGHT_COMPONENTS[stage][1:])
        return _quantized_bytes(shapes, quantization, element) + others * element
    count = HUB_PARAMETER_COUNTS.get(location)
    if count is None:
        return None
    if quantization is None:
        return count * element
    linear = count * _HUB_LINEAR_SHARE
    per_weight = 1.0 if quantization == "8bit" else 0.5 + 4 / _NF4_BLOCK  # row scales: negligible at IF's widths
    return int(linear * per_weight + (count - linear) * element)


def stage_file_patterns(stage: int, variant: str | None) -> list[str]:
    """The repository files a stage loads (configs, schedulers, tokenizer and one weight set), as glob patterns."""
    patterns = ["model_index.json"]
    for component in STAGE_WEIGHT_COMPONENTS[stage]:
        weights_name = TRANSFORMERS_WEIGHTS_NAME if component == "text_encoder" else DIFFUSERS_WEIGHTS_NAME
        patterns += [f"{component}/config.json", *weight_file_patterns(component, weights_name, variant)]
    patterns += [f"{folder}/*" for folder in STAGE_CONFIG_FOLDERS[stage]]
    return patterns


# -- internals --------------------------------------------------------------------------------
def _download_stage(repo_id: str, stage: int, torch_dtype: torch.dtype, should_stop, hub_timeout) -> Path:
    components = STAGE_WEIGHT_COMPONENTS[stage]
    return download_weights(
        repo_id,
        lambda variant: stage_file_patterns(stage, variant),
        # The smaller fp16 files first; repos without them fall back to the default weights.
        variant="fp16" if torch_dtype == torch.float16 else None,
        has_variant=lambda folder: all(has_variant_files(folder / c, "fp16") for c in components),
        what=f"{STAGE_NAMES[stage]} model",
        extra=_not_local_note(repo_id),
        timeout=hub_timeout,
        should_stop=should_stop,
    )


def _check_offload(offload: str, device: torch.device, quantization: str | None = None) -> None:
    if offload not in OFFLOADS:
        raise ModelLoadError(f"unknown offload {offload!r}: choose one of {', '.join(OFFLOADS)}")
    # Offload moves the UNet between the CPU and the GPU (whole, or layer by layer through the meta device);
    # bitsandbytes' quantized weights are made on one device and cannot follow.
    if quantization is not None and (offload == "sequential" or (offload == "model" and device.type != "cpu")):
        raise ModelLoadError(
            f"dtype '{quantization}' cannot be used with offload '{offload}': bitsandbytes quantizes the UNet's "
            f"weights on {device} and they cannot be moved to the CPU and back. Pick offload 'none' ({quantization} "
            "already makes the UNet smaller), or dtype fp16/bf16 to keep offloading"
        )
    # diffusers builds both offloads towards a CPU device. Model offload then runs
    # (its hooks move whole models CPU -> CPU, i.e. nothing); sequential offload
    # keeps the weights on "meta" and accelerate cannot bring them back onto
    # "cpu:0" (TypeError on the first forward), so it is refused here, before loading.
    if offload == "sequential" and device.type == "cpu" and not sequential_offload_runs_on_cpu():
        raise ModelLoadError(
            "offload 'sequential' streams the weights layer by layer from the CPU to a GPU, and this ComfyUI runs "
            "on the CPU, where accelerate cannot run it: pick offload 'none' (on the CPU 'model' works too, "
            "and is the same as 'none')"
        )


def _quantization(dtype: str, stage: int) -> str | None:
    """ "8bit" / "4bit" when ``dtype`` quantizes, None for a float dtype; refuses what ``stage`` does not take."""
    if dtype in STAGE_DTYPES[stage]:
        return dtype if dtype in QUANTIZED else None
    if dtype in QUANTIZED:
        raise ModelLoadError(
            f"dtype '{dtype}' is for the Stage I and II UNets: the {STAGE_NAMES[stage]} model (the x4 upscaler) "
            f"loads in {', '.join(DTYPES)} only"
        )
    raise ModelLoadError(f"unknown dtype {dtype!r}: choose one of {', '.join(STAGE_DTYPES[stage])}")


def _check_bitsandbytes() -> None:
    problem = bitsandbytes_problem()
    if problem is not None:
        raise ModelLoadError(f"{BITSANDBYTES_MESSAGE} ({problem})")


def _quantize_linear_layers(loaded: LoadedStage) -> None:
    """Replace every ``torch.nn.Linear`` of the UNet with a bitsandbytes layer quantized on ``loaded.device``.

    What diffusers' ``BitsAndBytesConfig(load_in_8bit=True)`` / ``(load_in_4bit=True, bnb_4bit_quant_type="nf4")``
    would make (the same layers, outlier threshold 6.0, no double quantization, no skipped module), done
    here on the loaded UNet because diffusers' quantizer refuses to run without a GPU. Each layer is
    quantized as it is placed, so the device never holds the full-precision Linear weights.
    """
    import bitsandbytes as bnb

    silence_bitsandbytes_cast_notices()  # 8-bit matmuls in an fp32 / bf16 UNet: one notice per layer and call
    unet, device, compute = loaded.pipeline.unet, loaded.device, loaded.dtype
    try:
        for parent in list(unet.modules()):
            for name, layer in list(parent.named_children()):
                if type(layer) is torch.nn.Linear:
                    setattr(parent, name, _bitsandbytes_layer(bnb, layer, loaded.quantization, compute).to(device))
    except OUT_OF_MEMORY_ERRORS:
        raise
    except Exception as error:  # noqa: BLE001 - a bitsandbytes without kernels for this device or platform
        release(loaded)
        raise ModelLoadError(
            scrub_secrets(
                f"{BITSANDBYTES_MESSAGE} (quantizing the {STAGE_NAMES[loaded.stage]} UNet of {loaded.source} to "
                f"{loaded.quantization} on {device} failed: {type(error).__name__}: {first_line(error)})"
            )
        ) from error


def _bitsandbytes_layer(bnb, layer: torch.nn.Linear, quantization: str, compute: torch.dtype) -> torch.nn.Module:
    """``layer`` as a bitsandbytes layer holding its weights unquantized until it is moved to a device."""
    bias = layer.bias is not None
    weight = layer.weight.data
    if quantization == "8bit":
        quantized = bnb.nn.Linear8bitLt(
            layer.in_features, layer.out_features, bias, has_fp16_weights=False, threshold=6.0, device="meta"
        )
        quantized.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    else:
        quantized = bnb.nn.Linear4bit(
            layer.in_features,
            layer.out_features,
            bias,
            compute_dtype=compute,
            compress_statistics=False,
            quant_type="nf4",
            device="meta",
        )
        quantized.weight = bnb.nn.Params4bit(
            weight,
            requires_grad=False,
            blocksize=_NF4_BLOCK,
            compress_statistics=False,
            quant_type="nf4",
            module=quantized,
        )
        # On CPUs with AVX512-BF16 bitsandbytes repacks 4-bit weights on the first no-gradient forward, and
        # its kernel for the repacked format breaks autograd (in-place bias add on a view) when anti-
        # segregation later takes gradients through the UNet; it also fails on layers narrower than one
        # 64-weight block (the T5 loader met that: sampling/text.py). The generic kernel does both.
        quantized.support_avx512bf16_for_cpu = False
    if bias:
        quantized.bias = torch.nn.Parameter(layer.bias.data, requires_grad=False)
    return quantized.requires_grad_(False).train(layer.training)


def _precision_label(quantization: str | None, dtype: torch.dtype) -> str:
    return f"{quantization} (computing in {dtype_name(dtype)})" if quantization else dtype_name(dtype)


def _unpacked_numel(parameter: torch.Tensor) -> int:
    quant_state = getattr(parameter, "quant_state", None)
    return quant_state.shape.numel() if quant_state is not None else parameter.numel()


def _weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of ``module``'s parameters and buffers, with bitsandbytes' per-row (8-bit) and per-block (4-bit) scales."""
    total = 0
    for part in module.modules():
        for tensor in (*part.parameters(recurse=False), *part.buffers(recurse=False)):
            total += tensor.numel() * tensor.element_size()
        weight = getattr(part, "weight", None)
        # 8-bit: the row scales sit on the weight until the first forward moves them to the layer's state.
        scales = getattr(weight, "SCB", None)
        if scales is None:
            scales = getattr(getattr(part, "state", None), "SCB", None)
        if scales is None:
            scales = getattr(getattr(weight, "quant_state", None), "absmax", None)
        if isinstance(scales, torch.Tensor):
            total += scales.numel() * scales.element_size()
    return total


def _tensor_shapes(folder: Path) -> list[tuple[str, list[int]]] | None:
    """(name, shape) of every tensor of one weight set of a component folder, from its safetensors headers."""
    by_variant: dict[str | None, list[Path]] = {}
    for path in weight_files(folder)[0]:
        if path.name.endswith(".safetensors"):
            by_variant.setdefault(variant_of(path.name), []).append(path)
    if not by_variant:
        return None
    shapes = []
    for path in by_variant.get(None) or next(iter(by_variant.values())):
        try:
            header = read_safetensors_header(path)
        except ModelLoadError:
            return None
        shapes += [(name, entry["shape"]) for name, entry in header.items() if name != "__metadata__"]
    return shapes


def _quantized_bytes(shapes: list[tuple[str, list[int]]], quantization: str, element: int) -> int:
    """Bytes of a UNet whose Linear weights (its 2-D ``*.weight`` tensors) are quantized, the rest ``element``-wide."""
    total = 0
    for name, shape in shapes:
        count = math.prod(shape)
        if name.endswith(".weight") and len(shape) == 2:
            rows = shape[0]
            if quantization == "8bit":
                total += count + 4 * rows
            else:
                total += (count + 1) // 2 + 4 * math.ceil(count / _NF4_BLOCK)
        else:
            total += count * element
    return total


def _pipeline_class(stage: int):
    if stage == 1:
        from diffusers import IFPipeline

        return IFPipeline
    if stage == 2:
        from diffusers import IFSuperResolutionPipeline

        return IFSuperResolutionPipeline
    from diffusers import StableDiffusionUpscalePipeline

    return StableDiffusionUpscalePipeline


def _component_overrides(pipeline_class, stage: int) -> dict:
    """Components left out (None) and config overrides the class accepts."""
    wanted = dict(safety_checker=None, watermarker=None, feature_extractor=None, requires_safety_checker=False)
    if stage in (1, 2):
        wanted.update(text_encoder=None, tokenizer=None)  # T5 is loaded and run separately
    accepted = inspect.signature(pipeline_class.__init__).parameters
    return {name: value for name, value in wanted.items() if name in accepted}


def _from_pretrained(folder: Path, stage: int, torch_dtype: torch.dtype, variants: list[str | None], hub_id=None):
    """The pipeline from a checked local folder (``hub_id``: the Hub id the folder was downloaded for)."""
    pipeline_class = _pipeline_class(stage)
    kwargs = dict(_component_overrides(pipeline_class, stage), use_safetensors=True)
    kwargs[diffusers_dtype_kwarg()] = torch_dtype
    label = hub_id or str(folder)
    last_error: BaseException | None = None
    for variant in variants:
        try:
            return pipeline_class.from_pretrained(folder, variant=variant, **kwargs), variant
        except (ValueError, OSError, ConnectionError, TimeoutError) as error:
            last_error = error
            if variant is not None:
                logger.info("no usable %s weights for %s (%s); trying the default weights", variant, label, error)
                continue
    error = last_error
    if hub_id is not None and isinstance(error, ValueError):
        raise ModelLoadError(
            scrub_secrets(
                f"'{hub_id}' does not load as a {STAGE_LABELS[stage]}: {first_line(error)}. "
                f"Use one of {', '.join(HUB_IDS[stage])}."
            )
        ) from error
    source = f"'{hub_id}' (downloaded to {folder})" if hub_id else str(folder)
    raise ModelLoadError(
        scrub_secrets(
            f"could not load the {STAGE_NAMES[stage]} model from {source}: {type(error).__name__}: "
            f"{first_line(error)}. The folder must hold {STAGE_LAYOUTS[stage]}."
        )
    ) from error


def _not_local_note(repo_id: str) -> str:
    if repo_id in HUB_PARAMETER_COUNTS:
        return ""
    return f"('{repo_id}' is not a folder on this machine, so it was looked up as a Hugging Face id.)"


def _check_pipeline_folder(folder: Path, stage: int) -> None:
    """Refuse, before diffusers reads anything, a folder that cannot load as ``stage``: say what is wrong."""
    where = f"{COMFY_DIFFUSERS_DIR}/<folder> (for example {COMFY_DIFFUSERS_DIR}/{HUB_IDS[stage][-1].split('/')[-1]})"
    what = f"{STAGE_LABELS[stage]}"
    if not folder.is_dir() or not (folder / "model_index.json").exists():
        message = missing_folder_message(folder, what, STAGE_LAYOUTS[stage], where)
        if folder.is_dir() and (folder / "text_encoder").is_dir() and not (folder / "unet").is_dir():
            message += " (This looks like a text encoder folder: load it with the T5 loader.)"
        raise ModelLoadError(message)
    read_json_object(folder / "model_index.json")  # each raises naming the file, the problem and the fix
    read_json_object(folder / "unet" / "config.json")
    found = detect_stage(folder)
    if found != stage:
        raise ModelLoadError(_wrong_stage_message(str(folder), found, stage, folder=folder))
    for component in STAGE_WEIGHT_COMPONENTS[stage]:
        sub = folder / component
        safe, pickled = weight_files(sub)
        if safe:
            check_safetensors_files(sub)
            continue
        if pickled:
            raise ModelLoadError(pickle_only_message(sub, f"{STAGE_NAMES[stage]} {component}"))
        raise ModelLoadError(
            f"{sub} has no weights: it needs config.json and the .safetensors weights "
            f"({'model' if component == 'text_encoder' else 'diffusion_pytorch_model'}.safetensors, or the "
            f"fp16 variant) from the model's repository. The folder must hold {STAGE_LAYOUTS[stage]}."
        )
    if stage == 3:
        tokenizer = folder / "tokenizer"
        if not (tokenizer / "tokenizer.json").is_file() and not (
            (tokenizer / "vocab.json").is_file() and (tokenizer / "merges.txt").is_file()
        ):
            raise ModelLoadError(
                f"{tokenizer} has no tokenizer files: it needs vocab.json and merges.txt (or tokenizer.json) from "
                f"{STAGE_3_HUB_IDS[0]}"
            )


def _local_variant(folder: Path, components: tuple[str, ...], torch_dtype: torch.dtype) -> str | None:
    if torch_dtype != torch.float16:
        return None
    return "fp16" if any(has_variant_files(folder / c, "fp16") for c in components) else None


def _check_loaded_stage(pipeline, stage: int, label: str) -> None:
    unet = getattr(pipeline, "unet", None)
    config = dict(unet.config) if unet is not None else None
    found = stage_from_configs(type(pipeline).__name__, config, getattr(pipeline, "vae", None) is not None)
    if found != stage:
        raise ModelLoadError(_wrong_stage_message(label, found, stage, unet_config=config))


def _wrong_stage_message(
    label: str, found: int | None, stage: int, *, folder: Path | None = None, unet_config=None
) -> str:
    if found is not None:
        return (
            f"{label} holds a {STAGE_LABELS[found]}, not a {STAGE_LABELS[stage]}: load it with the "
            f"{STAGE_NAMES[found]} loader, and pick a {STAGE_NAMES[stage]} model here"
        )
    if folder is not None:
        index = try_read_json_object(folder / "model_index.json") or {}
        unet_config = try_read_json_object(folder / "unet" / "config.json")
        kind = index.get("_class_name") or "an unknown pipeline"
    else:
        kind = "a model"
    detail = ""
    if unet_config is not None:
        detail = f" (its UNet takes {unet_config.get('in_channels')} input channels)"
    return (
        f"{label} holds {kind}{detail}, which is not a DeepFloyd IF {STAGE_NAMES[stage]} model: pick a "
        f"{STAGE_LABELS[stage]}, e.g. {HUB_IDS[stage][-1]}"
    )
