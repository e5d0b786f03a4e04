"""What ComfyUI decides for the pack's models, as for its own: the "auto" dtypes (``--fp16-unet``,
``--bf16-unet``, ``--fp32-unet``, ``--fp16-text-enc`` ...), where text encoders run (``--gpu-only``, ``--lowvram``,
``--novram``, ``--cpu``), the offload that follows its memory mode (``--lowvram``, ``--novram``), and what counts
as out of memory (``comfy.model_management.OOM_EXCEPTION``), with how a node re-raises it under its own message.
"""

from __future__ import annotations

import logging

import comfy.model_management as mm
import torch

from ..sampling.loading import dtype_name, estimated_bytes

logger = logging.getLogger(__name__)

AUTO = "auto"
#: The dtypes diffusers' IF UNets and T5 compute in, the ones ComfyUI's "auto" may pick for them.
COMPUTE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def auto_unet_dtype(label: str, source: str, stage: int, device: torch.device) -> str:
    """The dtype ComfyUI picks for a UNet of this size on ``device`` (honouring --fp16-unet, --bf16-unet,
    --fp32-unet ...), as a DTYPES name."""
    count = estimated_bytes(source, torch.float32, stage=stage) or 0
    parameters = count // 4
    chosen = mm.unet_dtype(device=device, model_params=parameters, supported_dtypes=list(COMPUTE_DTYPES))
    if chosen in COMPUTE_DTYPES:
        return dtype_name(chosen)
    # --fp8-*-unet / --fp64-unet: storage dtypes diffusers' IF UNets do not compute in.
    fallback = "fp16" if mm.should_use_fp16(device, model_params=parameters) else "fp32"
    logger.warning(
        "%s: ComfyUI's UNet dtype %s is not one diffusers' IF UNets run in; using %s", label, chosen, fallback
    )
    return fallback


def text_encoder_device(choice: str) -> torch.device:
    """Where a text encoder runs: 'cpu' when asked; 'default' is where ComfyUI runs its own text encoders
    (``text_encoder_device()``): the GPU with --gpu-only, or with normal / high VRAM on a GPU with usable fp16;
    the CPU with --cpu, --lowvram, --novram, or on a GPU whose fp16 ComfyUI does not use (NVIDIA before Volta,
    except Pascal on Windows; the GTX 16 series)."""
    return torch.device("cpu") if choice == "cpu" else mm.text_encoder_device()


def auto_text_encoder_precision(device: torch.device) -> str:
    """The dtype ComfyUI picks for text encoders on ``device`` (--fp16-text-enc, --bf16-text-enc ...)."""
    chosen = mm.text_encoder_dtype(device)
    # fp8 storage flags have no T5 equivalent here; fp16 is what ComfyUI computes those in.
    return dtype_name(chosen) if chosen in COMPUTE_DTYPES else "fp16"


def offload_for(choice: str, device) -> str:
    """'auto' follows ComfyUI's memory mode: --lowvram keeps weights off the GPU between calls."""
    if choice != AUTO:
        return choice
    if device.type == "cpu":
        return "none"
    if mm.vram_state == mm.VRAMState.NO_VRAM:
        return "sequential"
    if mm.vram_state == mm.VRAMState.LOW_VRAM:
        return "model"
    return "none"


def out_of_memory_errors() -> tuple[type[BaseException], ...]:
    """What ComfyUI counts as out of memory (``OOM_EXCEPTION``, a class or a tuple).

    ComfyUI falls back to plain ``Exception`` when torch has no OOM error; taking that would relabel every
    failure, cancels included, as out of memory, so it is left out.
    """
    errors = mm.OOM_EXCEPTION
    errors = errors if isinstance(errors, tuple) else (errors,)
    return tuple(error for error in errors if error not in (Exception, BaseException))


def out_of_memory(message: str, error: BaseException) -> BaseException:
    """``error`` re-made with ``message``: the same type, so ComfyUI still sees an out-of-memory error and
    unloads its models as it does for any."""
    try:
        return type(error)(message)
    except TypeError:  # an OOM type that wants other arguments: the message matters more than the type
        return RuntimeError(message)


def load_failure(message: str, error: BaseException) -> BaseException:
    """What a node raises, with ``message``, for a model the core could not load (``error``: its ModelLoadError,
    worded with the fix). Running out of memory stays ComfyUI's out-of-memory type, so ComfyUI unloads its
    models after it as after any; anything else is a ValueError."""
    if isinstance(error.__cause__, out_of_memory_errors()):
        return out_of_memory(message, error.__cause__)
    return ValueError(message)
