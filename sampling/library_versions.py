"""Shims over what differs between the diffusers, transformers and accelerate releases the pack supports."""

from __future__ import annotations

import functools

import torch


def transformers_dtype_kwarg() -> str:
    """transformers renamed ``torch_dtype`` to ``dtype`` in 4.56."""
    import transformers
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__.split("+")[0]) >= Version("4.56") else "torch_dtype"


def diffusers_dtype_kwarg() -> str:
    """diffusers deprecated ``torch_dtype`` for ``dtype`` (with ``_resolve_dtype``); older releases know only
    ``torch_dtype``."""
    from diffusers.pipelines import pipeline_utils

    return "dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"


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
    except Exception:  # noqa: BLE001 - any failure of the probe means "does not run"
        return False
