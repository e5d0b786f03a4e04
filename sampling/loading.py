"""Loading DeepFloyd IF's stages as diffusers pipelines, with errors that say what to do.

``load_if_stage(source, stage, device=..., dtype=..., offload=...)`` loads

* Stage I  (``IFPipeline``, text -> 64 px),
* Stage II (``IFSuperResolutionPipeline``, 64 -> 256 px),
* Stage III (``StableDiffusionUpscalePipeline``, Stable Diffusion's x4 upscaler),

from a local diffusers folder (ComfyUI's ``models/diffusers/<name>``) or a
Hugging Face id. Stages I and II load *without* T5 (``text.load_t5`` encodes
prompts once for every stage), and no stage loads a safety checker, watermarker
or feature extractor. Stage III keeps its own small CLIP text encoder. Weights
are read from safetensors only: pickled ``.bin``/``.pt`` files are refused.

Every failure the user can fix raises :class:`ModelLoadError`, whose message
names the path or id, what is wrong and what to do about it. This module is
also the one home of the missing-model and Hugging Face Hub messages
(:func:`hub_error_message`, :func:`missing_folder_message`) that the T5 loader
shares. No ComfyUI import: the nodes pass the torch device and paths in.
"""

from __future__ import annotations

import functools
import gc
import inspect
import json
import logging
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

# -- the models -------------------------------------------------------------------------------
STAGE_1_HUB_IDS = ("DeepFloyd/IF-I-M-v1.0", "DeepFloyd/IF-I-L-v1.0", "DeepFloyd/IF-I-XL-v1.0")
STAGE_2_HUB_IDS = ("DeepFloyd/IF-II-M-v1.0", "DeepFloyd/IF-II-L-v1.0")
STAGE_3_HUB_IDS = ("stabilityai/stable-diffusion-x4-upscaler",)
HUB_IDS = {1: STAGE_1_HUB_IDS, 2: STAGE_2_HUB_IDS, 3: STAGE_3_HUB_IDS}
T5_HUB_ID = "DeepFloyd/IF-I-XL-v1.0"  # every IF-I repo ships the same T5-XXL in text_encoder/
IF_LICENCE_URL = "https://huggingface.co/DeepFloyd/IF-I-XL-v1.0"
HF_TOKENS_URL = "https://huggingface.co/settings/tokens"
COMFY_DIFFUSERS_DIR = "ComfyUI/models/diffusers"

DTYPES = ("auto", "fp16", "bf16", "fp32")
OFFLOADS = ("none", "model", "sequential")
STAGES = (1, 2, 3)

# Approximate parameter counts of what each stage loads (UNet; Stage III also its
# VAE and CLIP text encoder), for memory planning before a download or load.
HUB_PARAMETER_COUNTS = {
    "DeepFloyd/IF-I-M-v1.0": 400_000_000,
    "DeepFloyd/IF-I-L-v1.0": 900_000_000,
    "DeepFloyd/IF-I-XL-v1.0": 4_300_000_000,
    "DeepFloyd/IF-II-M-v1.0": 450_000_000,
    "DeepFloyd/IF-II-L-v1.0": 1_200_000_000,
    # UNet ~473M + VAE ~55M + OpenCLIP ViT-H text encoder ~354M
    "stabilityai/stable-diffusion-x4-upscaler": 880_000_000,
}
T5_XXL_PARAMETER_COUNT = 4_760_000_000  # T5 v1.1 XXL encoder: 24 x 193M + 132M embedding

STAGE_LABELS = {
    1: "Stage I model (IF-I-M, IF-I-L or IF-I-XL)",
    2: "Stage II model (IF-II-M or IF-II-L)",
    3: "Stage III model (stabilityai/stable-diffusion-x4-upscaler)",
}
STAGE_NAMES = {1: "Stage I", 2: "Stage II", 3: "Stage III"}
_STAGE_1_CLASSES = {"IFPipeline", "IFImg2ImgPipeline", "IFInpaintingPipeline"}
_STAGE_2_CLASSES = {
    "IFSuperResolutionPipeline",
    "IFImg2ImgSuperResolutionPipeline",
    "IFInpaintingSuperResolutionPipeline",
}
_STAGE_3_CLASSES = {"StableDiffusionUpscalePipeline"}

# What a stage folder must hold, for messages.
_LAYOUTS = {
    1: "model_index.json, unet/ (config.json + diffusion_pytorch_model.safetensors or its .fp16 variant), "
    "scheduler/ (scheduler_config.json)",
    2: "model_index.json, unet/ (config.json + diffusion_pytorch_model.safetensors or its .fp16 variant), "
    "scheduler/ and image_noising_scheduler/ (scheduler_config.json)",
    3: "model_index.json, unet/ and vae/ (config.json + diffusion_pytorch_model.safetensors), text_encoder/ "
    "(config.json + model.safetensors), tokenizer/ (vocab.json + merges.txt, or tokenizer.json), scheduler/ and "
    "low_res_scheduler/",
}
# The pipeline components each stage loads weights for (checked for safetensors).
_WEIGHT_COMPONENTS = {1: ("unet",), 2: ("unet",), 3: ("unet", "vae", "text_encoder")}
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
OUT_OF_MEMORY_ERRORS = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what to do about it."""


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
        """Exact number of parameters over every loaded module."""
        return sum(p.numel() for module in self._modules() for p in module.parameters())

    @property
    def estimated_bytes(self) -> int:
        """Bytes the weights (parameters and buffers) take where they live."""
        return sum(
            t.numel() * t.element_size()
            for module in self._modules()
            for t in (*module.parameters(), *module.buffers())
        )

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
    offload: str = "none",
) -> LoadedStage:
    """Load IF Stage ``stage`` (1, 2 or 3) from a local diffusers folder or a Hub id.

    ``dtype`` is one of :data:`DTYPES` ("auto": fp16 on an accelerator, fp32 on
    the CPU); fp16 prefers the repo's ``fp16`` weight variant when it has one.
    ``offload`` is one of :data:`OFFLOADS`: "none" moves the pipeline to
    ``device``; "model" and "sequential" use diffusers' CPU offload towards
    ``device``.
    """
    if stage not in STAGES:
        raise ModelLoadError(f"unknown stage {stage!r}: DeepFloyd IF has stages 1, 2 and 3")
    device = torch.device(device)
    torch_dtype = resolve_dtype(dtype, device)
    _check_offload(offload, device)

    location = resolve_source(source)
    if isinstance(location, Path):
        _check_pipeline_folder(location, stage)
        preferred = _local_variant(location, _WEIGHT_COMPONENTS[stage], torch_dtype)
        variants = [preferred, None] if preferred else [None]
        label = str(location)
    else:
        known = known_hub_stage(location)
        if known is not None and known != stage:
            raise ModelLoadError(_wrong_stage_message(location, known, stage))
        # Try the smaller fp16 files first; repos without them fall back to the default weights.
        variants = ["fp16", None] if torch_dtype == torch.float16 else [None]
        label = location

    pipeline, variant = _from_pretrained(location, stage, torch_dtype, variants)
    _check_loaded_stage(pipeline, stage, label)
    if pipeline.unet.dtype != torch_dtype:  # a diffusers that ignored the dtype argument
        pipeline.to(dtype=torch_dtype, silence_dtype_warnings=True)

    try:
        if offload == "none":
            pipeline.to(device, silence_dtype_warnings=True)
        elif offload == "model":
            pipeline.enable_model_cpu_offload(device=device)
        else:
            pipeline.enable_sequential_cpu_offload(device=device)
    except OUT_OF_MEMORY_ERRORS as error:
        release(LoadedStage(pipeline, stage, label, device, torch_dtype, offload))
        raise ModelLoadError(
            f"not enough memory on {device} for the {STAGE_NAMES[stage]} model {label} in {dtype_name(torch_dtype)}"
            f"{'' if offload == 'none' else f' with offload {offload!r}'}: free memory (unload other models), "
            "pick offload 'model' (or 'sequential': least memory, slowest), fp16, or a smaller model"
        ) from error
    return LoadedStage(
        pipeline=pipeline, stage=stage, source=label, device=device, dtype=torch_dtype, offload=offload, variant=variant
    )


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
        except Exception as error:  # accelerate may fail to restore weights; we free them anyway
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


def resolve_source(source: str | os.PathLike) -> Path | str:
    """A local folder (``Path``) or a Hugging Face repo id (``str``).

    Anything that exists on disk is local; a string shaped like ``owner/name``
    that does not exist is a Hub id; anything else is a missing local path.
    """
    if isinstance(source, os.PathLike):
        return Path(source).expanduser()
    if not isinstance(source, str) or not source.strip():
        raise ModelLoadError(f"no model given (got {source!r}): pick a folder or a Hugging Face id")
    text = source.strip()
    path = Path(text).expanduser()
    if path.exists() or not looks_like_hub_id(text):
        return path
    return text


def looks_like_hub_id(text: str) -> bool:
    return (
        not os.path.isabs(text)
        and not text.startswith((".", "~"))
        and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*", text) is not None
    )


def known_hub_stage(repo_id: str) -> int | None:
    for stage, ids in HUB_IDS.items():
        if repo_id in ids:
            return stage
    return None


def detect_stage(folder: str | os.PathLike) -> int | None:
    """Which IF stage a local diffusers folder holds, from its configs (no weights read)."""
    folder = Path(folder)
    index = read_json(folder / "model_index.json") or {}
    unet = read_json(folder / "unet" / "config.json")
    return _stage_from_configs(index.get("_class_name"), unet, (folder / "vae" / "config.json").is_file())


def estimated_bytes(
    source: str | os.PathLike,
    dtype: torch.dtype | str,
    *,
    stage: int | None = None,
    device: torch.device | str = "cpu",
) -> int | None:
    """Approximate bytes a stage's weights take in ``dtype``, *before* loading it.

    Local folders: exact parameter counts read from the safetensors headers of
    the components the stage loads. Known Hub ids: DeepFloyd's published
    parameter counts. ``None`` when unknown. ``dtype``: a torch dtype or one of
    :data:`DTYPES` ("auto" resolved for ``device``).
    """
    element = _element_size(dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype, torch.device(device)))
    location = resolve_source(source)
    if isinstance(location, Path):
        if not location.is_dir():
            return None
        stage = stage or detect_stage(location)
        if stage is None:
            return None
        count = sum(_safetensors_parameter_count(location / c) or 0 for c in _WEIGHT_COMPONENTS[stage])
        return count * element or None
    count = HUB_PARAMETER_COUNTS.get(location)
    return None if count is None else count * element


# -- messages (shared with text.py) -----------------------------------------------------------
def missing_folder_message(path: Path, what: str, layout: str, where: str) -> str:
    if path.exists() and not path.is_dir():
        problem = f"{path} is a file, not a folder"
    elif path.exists():
        problem = f"{path} is not a {what} folder"
    else:
        problem = f"{path} does not exist"
    return f"{problem}. A {what} is a diffusers-style folder holding {layout}. Put the folder in {where}."


def hub_error_message(repo_id: str, what: str, error: BaseException, *, extra: str = "") -> str:
    """Why a Hub download failed and exactly what to do; never contains a token."""
    gated = repo_id.startswith("DeepFloyd/")
    offline = _env_flag("HF_HUB_OFFLINE") or _env_flag("TRANSFORMERS_OFFLINE")
    root = _root_cause(error)
    names = {type(e).__name__ for e in _error_chain(error)}
    if offline:
        reason = "HF_HUB_OFFLINE is set, so nothing can be downloaded, and the files are not in the local cache"
    elif "GatedRepoError" in names:
        reason = "the repository is gated and this account has not been granted access"
    elif "RepositoryNotFoundError" in names:
        reason = "the repository was not found (gated repositories look missing when you are not logged in)"
    elif names & {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectionError", "ConnectTimeout", "ConnectError"}:
        reason = "the Hub could not be reached and the files are not in the local cache"
    else:
        reason = "the download failed"
    folder_name = repo_id.split("/")[-1]
    steps = []
    if gated:
        also = "" if IF_LICENCE_URL.endswith(repo_id) else f" (and on https://huggingface.co/{repo_id} if its page asks too)"
        steps.append(
            f"DeepFloyd IF is gated: while logged in to huggingface.co, accept the licence on {IF_LICENCE_URL}{also}"
        )
    steps.append(f"create an access token at {HF_TOKENS_URL}")
    steps.append(
        "log in on this machine with `huggingface-cli login` (newer: `hf auth login`), or set the HF_TOKEN "
        "environment variable before starting ComfyUI"
    )
    steps.append("make sure this machine is online and HF_HUB_OFFLINE is not set")
    numbered = " ".join(f"({i}) {step};" for i, step in enumerate(steps, 1))
    message = (
        f"Could not get the {what} '{repo_id}' from the Hugging Face Hub: {reason}. To download it: {numbered} "
        f"or download the repository's files yourself (e.g. `huggingface-cli download {repo_id} --local-dir "
        f"{COMFY_DIFFUSERS_DIR}/{folder_name}`) into {COMFY_DIFFUSERS_DIR}/{folder_name}/ and pick that "
        f"folder instead. {extra}".rstrip()
    )
    return scrub_secrets(f"{message} (cause: {type(root).__name__}: {first_line(root)})")


def is_hub_error(error: BaseException) -> bool:
    """An error from fetching files (network, gating, offline cache miss)."""
    hub_names = {
        "GatedRepoError",
        "RepositoryNotFoundError",
        "RevisionNotFoundError",
        "EntryNotFoundError",
        "RemoteEntryNotFoundError",
        "LocalEntryNotFoundError",
        "IncompleteSnapshotError",
        "OfflineModeIsEnabled",
        "HfHubHTTPError",
        "LocalTokenNotFoundError",
        "HFValidationError",
    }
    return any(
        type(e).__name__ in hub_names or isinstance(e, (OSError, ConnectionError, TimeoutError))
        for e in _error_chain(error)
    )


def scrub_secrets(text: str) -> str:
    """Remove anything token-like (and the token environment values) from a message."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN"):
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    text = re.sub(r"hf_[A-Za-z0-9_-]{4,}", "hf_***", text)
    return re.sub(r"(?i)(bearer\s+)\S+", r"\1***", text)


# -- helpers shared with text.py ---------------------------------------------------------------
def free_module(module: torch.nn.Module) -> None:
    """Release a module's weights at once (to the meta device), wherever they are."""
    try:
        module.to("meta")
    except Exception as error:  # quantized layers may refuse; dropping references still frees them
        logger.debug("could not move %s to meta: %s", type(module).__name__, error)


def empty_device_caches() -> None:
    """Collect garbage and hand cached accelerator memory back to the driver."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        mps.empty_cache()
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        xpu.empty_cache()


def weight_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(safetensors files, pickled weight files) directly in ``folder``."""
    if not folder.is_dir():
        return [], []
    files = [p for p in folder.iterdir() if p.is_file()]
    safe = [p for p in files if p.name.endswith(".safetensors") or p.name.endswith(".safetensors.index.json")]
    pickled = [p for p in files if p.name.endswith(_PICKLE_SUFFIXES) or p.name.endswith(".bin.index.json")]
    return safe, pickled


def pickle_only_message(folder: Path, what: str) -> str:
    return (
        f"{folder} holds the {what} weights only as pickled files ({', '.join(p.name for p in weight_files(folder)[1])}). "
        "Pickle files can run code when loaded, so this loader reads safetensors only: download the "
        ".safetensors files of the same repository into this folder, or convert the weights to safetensors "
        "(load them once in a trusted Python and save_pretrained(..., safe_serialization=True))."
    )


def has_variant_files(folder: Path, variant: str) -> bool:
    return any(_variant_of(p.name) == variant for p in weight_files(folder)[0])


def transformers_dtype_kwarg() -> str:
    """transformers renamed ``torch_dtype`` to ``dtype`` in 4.56."""
    import transformers
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__.split("+")[0]) >= Version("4.56") else "torch_dtype"


# -- internals --------------------------------------------------------------------------------
def _check_offload(offload: str, device: torch.device) -> None:
    if offload not in OFFLOADS:
        raise ModelLoadError(f"unknown offload {offload!r}: choose one of {', '.join(OFFLOADS)}")
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


@functools.lru_cache(maxsize=1)
def sequential_offload_runs_on_cpu() -> bool:
    """Whether diffusers' sequential CPU offload can run with the CPU as execution device.

    diffusers hands accelerate ``torch.device("cpu:0")`` (it always adds a device
    index); with that device accelerate 1.15 leaves plain tensors where
    parameters belong and the first forward raises a TypeError. The probe
    repeats exactly that on a two-weight module.
    """
    try:
        from accelerate import cpu_offload
        from accelerate.hooks import remove_hook_from_module
    except ImportError:
        return False
    probe = torch.nn.Sequential(torch.nn.Linear(2, 2))
    try:
        cpu_offload(probe, torch.device("cpu:0"), offload_buffers=True)
        with torch.inference_mode():
            probe(torch.ones(1, 2))
        remove_hook_from_module(probe, recurse=True)
        return True
    except Exception:
        return False


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


def _diffusers_dtype_kwarg() -> str:
    # diffusers deprecated `torch_dtype` for `dtype` (with `_resolve_dtype`); older releases know only torch_dtype.
    from diffusers.pipelines import pipeline_utils

    return "dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"


def _from_pretrained(location: Path | str, stage: int, torch_dtype: torch.dtype, variants: list[str | None]):
    pipeline_class = _pipeline_class(stage)
    kwargs = dict(_component_overrides(pipeline_class, stage), use_safetensors=True)
    kwargs[_diffusers_dtype_kwarg()] = torch_dtype
    what = f"{STAGE_NAMES[stage]} model"
    last_error: BaseException | None = None
    for variant in variants:
        try:
            return pipeline_class.from_pretrained(location, variant=variant, **kwargs), variant
        except (ValueError, OSError, ConnectionError, TimeoutError) as error:
            last_error = error
            if variant is not None:
                logger.info("no usable %s weights for %s (%s); trying the default weights", variant, location, error)
                continue
    error = last_error
    if isinstance(location, Path):
        raise ModelLoadError(
            scrub_secrets(
                f"could not load the {what} from {location}: {type(error).__name__}: {first_line(error)}. "
                f"The folder must hold {_LAYOUTS[stage]}."
            )
        ) from error
    if isinstance(error, ValueError) and not is_hub_error(error):
        raise ModelLoadError(
            scrub_secrets(
                f"'{location}' does not load as a {STAGE_LABELS[stage]}: {first_line(error)}. "
                f"Use one of {', '.join(HUB_IDS[stage])}."
            )
        ) from error
    raise ModelLoadError(hub_error_message(location, what, error, extra=_not_local_note(location))) from error


def _not_local_note(repo_id: str) -> str:
    if repo_id in HUB_PARAMETER_COUNTS:
        return ""
    return f"('{repo_id}' is not a folder on this machine, so it was looked up as a Hugging Face id.)"


def _check_pipeline_folder(folder: Path, stage: int) -> None:
    where = f"{COMFY_DIFFUSERS_DIR}/<folder> (for example {COMFY_DIFFUSERS_DIR}/{HUB_IDS[stage][-1].split('/')[-1]})"
    what = f"{STAGE_LABELS[stage]}"
    if not folder.is_dir() or not (folder / "model_index.json").is_file():
        message = missing_folder_message(folder, what, _LAYOUTS[stage], where)
        if folder.is_dir() and (folder / "text_encoder").is_dir() and not (folder / "unet").is_dir():
            message += " (This looks like a text encoder folder: load it with the T5 loader.)"
        raise ModelLoadError(message)
    found = detect_stage(folder)
    if found != stage:
        raise ModelLoadError(_wrong_stage_message(str(folder), found, stage, folder=folder))
    for component in _WEIGHT_COMPONENTS[stage]:
        sub = folder / component
        safe, pickled = weight_files(sub)
        if safe:
            continue
        if pickled:
            raise ModelLoadError(pickle_only_message(sub, f"{STAGE_NAMES[stage]} {component}"))
        raise ModelLoadError(
            f"{sub} has no weights: it needs config.json and the .safetensors weights "
            f"({'model' if component == 'text_encoder' else 'diffusion_pytorch_model'}.safetensors, or the "
            f"fp16 variant) from the model's repository. The folder must hold {_LAYOUTS[stage]}."
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


def _stage_from_configs(class_name: str | None, unet: dict | None, has_vae: bool) -> int | None:
    if unet is not None:
        in_channels = unet.get("in_channels")
        if in_channels == 3 and unet.get("class_embed_type") is None:
            return 1
        if in_channels == 6 and unet.get("class_embed_type") is not None:
            return 2
        if in_channels == 7 and has_vae:
            return 3
        return None
    if class_name in _STAGE_1_CLASSES:
        return 1
    if class_name in _STAGE_2_CLASSES:
        return 2
    if class_name in _STAGE_3_CLASSES:
        return 3
    return None


def _check_loaded_stage(pipeline, stage: int, label: str) -> None:
    unet = getattr(pipeline, "unet", None)
    config = dict(unet.config) if unet is not None else None
    found = _stage_from_configs(type(pipeline).__name__, config, getattr(pipeline, "vae", None) is not None)
    if found != stage:
        raise ModelLoadError(_wrong_stage_message(label, found, stage, unet_config=config))


def _wrong_stage_message(label: str, found: int | None, stage: int, *, folder: Path | None = None, unet_config=None) -> str:
    if found is not None:
        return (
            f"{label} holds a {STAGE_LABELS[found]}, not a {STAGE_LABELS[stage]}: load it with the "
            f"{STAGE_NAMES[found]} loader, and pick a {STAGE_NAMES[stage]} model here"
        )
    if folder is not None:
        index = read_json(folder / "model_index.json") or {}
        unet_config = read_json(folder / "unet" / "config.json")
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


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _variant_of(filename: str) -> str | None:
    """'model.fp16-00001-of-00002.safetensors' -> 'fp16'; 'model.safetensors' -> None."""
    name = re.sub(r"\.index\.json$", "", filename)
    name = re.sub(r"\.(safetensors|bin)$", "", name)
    name = re.sub(r"-\d{5}-of-\d{5}$", "", name)
    parts = name.split(".")
    return parts[-1] if len(parts) > 1 else None


def _safetensors_parameter_count(folder: Path) -> int | None:
    """Parameters in a component folder, from safetensors headers (one weight set only)."""
    safe, _ = weight_files(folder)
    by_variant: dict[str | None, list[Path]] = {}
    for path in safe:
        if path.name.endswith(".safetensors"):
            by_variant.setdefault(_variant_of(path.name), []).append(path)
    if not by_variant:
        return None
    files = by_variant.get(None) or next(iter(by_variant.values()))
    total = 0
    for path in files:
        try:
            with open(path, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(length))
        except (OSError, ValueError, struct.error):
            return None
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            count = 1
            for dim in entry.get("shape", []):
                count *= dim
            total += count
    return total


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _error_chain(error: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        chain.append(error)
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return chain


def _root_cause(error: BaseException) -> BaseException:
    return _error_chain(error)[-1]


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
