"""Models ComfyUI manages: a loaded model behind a handle that ComfyUI can move to the GPU, offload and
unload like its own, and that reloads it after a release."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import comfy.model_management as mm
import comfy.model_patcher
import torch


class ComfyManaged(torch.nn.Module):
    """A plain container for a model's modules, so ComfyUI's ModelPatcher can move them.

    (It records the device on the model it manages, which diffusers' read-only
    ``device`` property would refuse.)
    """

    def __init__(self, modules: dict[str, torch.nn.Module]):
        super().__init__()
        self.parts = torch.nn.ModuleDict(modules)


class ModelHandle:
    """A model ComfyUI can manage: loaded on first use, moved to the GPU by ComfyUI
    when a node needs it (unloading other models to make room), offloaded by
    ComfyUI when another model needs the room, and reloadable after release.

    ComfyUI caches a loader's output while its inputs are unchanged, so a node
    that frees a model (e.g. the prompt encoder's "unload" option) must leave
    something that can bring it back.
    """

    def __init__(
        self,
        label: str,
        load: Callable[[], Any],
        unload: Callable[[Any], None],
        managed_modules: Callable[[Any], dict[str, torch.nn.Module]] | None = None,
        offload_device: Callable[[], torch.device] = mm.unet_offload_device,
    ):
        self.label = label
        # Where ComfyUI parks the weights when another model needs the room: its UNet rule for the IF stages,
        # its text-encoder rule for T5 (the CPU even with --highvram, as for ComfyUI's own text encoders).
        self._offload_device = offload_device
        self._load = load
        self._unload = unload
        self._managed_modules = managed_modules
        self._model = None
        self._patcher = None

    def get(self) -> Any:
        """The model, on ComfyUI's device and ready to run."""
        return get_together(self)[0]

    def _loaded(self) -> Any:
        if self._model is None:
            self._model = self._load()
            if self._managed_modules is not None:
                self._patcher = comfy.model_patcher.ModelPatcher(
                    ComfyManaged(self._managed_modules(self._model)),
                    load_device=mm.get_torch_device(),
                    offload_device=self._offload_device(),
                )
        return self._model

    def release(self) -> None:
        if self._model is None:
            return
        if self._patcher is not None:
            for index, loaded in enumerate(mm.current_loaded_models):
                if loaded.model is self._patcher:
                    mm.current_loaded_models.pop(index).model_unload()
                    break
            self._patcher = None
        self._unload(self._model)
        self._model = None
        mm.soft_empty_cache()


def get_together(*handles: ModelHandle) -> list[Any]:
    """The models of ``handles``, on ComfyUI's device in one request: making room for one of them never
    offloads another that the same node is about to run (a sampler's UNet and its balancing CLIP)."""
    models = [handle._loaded() for handle in handles]
    patchers = [handle._patcher for handle in handles if handle._patcher is not None]
    if patchers:
        # Full loads only: these are plain torch modules, which ComfyUI cannot stream in low-VRAM mode.
        mm.load_models_gpu(patchers, force_full_load=True)
    return models


def pipeline_modules(loaded) -> dict[str, torch.nn.Module]:
    return {name: module for name, module in loaded.pipeline.components.items() if isinstance(module, torch.nn.Module)}
