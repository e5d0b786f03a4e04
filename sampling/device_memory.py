"""Freeing model memory on any torch device, and recognising out-of-memory errors."""

from __future__ import annotations

import gc
import logging

import torch

logger = logging.getLogger(__name__)

OUT_OF_MEMORY_ERRORS = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)


def free_module(module: torch.nn.Module) -> None:
    """Release a module's weights at once (to the meta device), wherever they are."""
    try:
        module.to("meta")
    except Exception as error:  # noqa: BLE001 - quantized layers may refuse; dropping references still frees them
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


def element_size(dtype: torch.dtype) -> int:
    """Bytes per element of ``dtype``."""
    return torch.empty((), dtype=dtype).element_size()
