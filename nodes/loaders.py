"""Loader nodes: DeepFloyd IF Stage I / II / III and the T5 text encoder.

Models come from ComfyUI's ``models/diffusers`` (and ``models/text_encoders``)
folders, from a Hugging Face id, or are the pack's embedded demo model
(``demo/IF-I-digits``: a tiny Stage I with its own tiny T5 that draws
handwritten digits, listed by the Stage I and T5 loaders in any ComfyUI without
touching ComfyUI's model folders). Loaders run on ComfyUI's torch device,
free memory before a large load, and follow ``--cpu`` / ``--lowvram`` /
``--novram`` when the offload choice is "auto".
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import comfy.model_management as mm
import comfy.model_patcher
import folder_paths
import torch
from comfy_api.latest import io

from ..sampling.loading import (
    DTYPES,
    HUB_IDS,
    OFFLOADS,
    T5_HUB_ID,
    ModelLoadError,
    detect_stage,
    estimated_bytes,
    load_if_stage,
    release,
)
from ..sampling.text import PRECISIONS, load_t5, release_t5
from .types import CATEGORY, StageIIIModel, StageIIModel, StageIModel, TextEncoder

AUTO = "auto"

#: Models that ship inside the pack, by the name the loaders list them under. They are found from
#: the pack's own folder, so nothing is registered with ComfyUI's folder_paths.
PACK_DIR = Path(__file__).resolve().parents[1]
EMBEDDED_DEMO = "embedded: digits demo (64 px)"
EMBEDDED_MODELS = {EMBEDDED_DEMO: PACK_DIR / "demo" / "IF-I-digits"}


def embedded_models() -> list[str]:
    """The embedded models present in this copy of the pack (a Stage I folder with its own T5)."""
    return [name for name, folder in EMBEDDED_MODELS.items() if (folder / "model_index.json").is_file()]


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
    ):
        self.label = label
        self._load = load
        self._unload = unload
        self._managed_modules = managed_modules
        self._model = None
        self._patcher = None

    def get(self) -> Any:
        """The model, on ComfyUI's device and ready to run."""
        if self._model is None:
            self._model = self._load()
            if self._managed_modules is not None:
                self._patcher = comfy.model_patcher.ModelPatcher(
                    ComfyManaged(self._managed_modules(self._model)),
                    load_device=mm.get_torch_device(),
                    offload_device=mm.unet_offload_device(),
                )
        if self._patcher is not None:
            # Full loads only: these are plain torch modules, which ComfyUI cannot stream in low-VRAM mode.
            mm.load_models_gpu([self._patcher], force_full_load=True)
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


def _pipeline_modules(loaded) -> dict[str, torch.nn.Module]:
    return {name: module for name, module in loaded.pipeline.components.items() if isinstance(module, torch.nn.Module)}


def local_model_folders(folder_type: str, marker: str, stage: int | None = None) -> list[str]:
    """Folders (relative names) under ComfyUI's ``folder_type`` paths that contain ``marker``
    and, given ``stage``, hold a model of that IF stage."""
    found = []
    for root_path in folder_paths.get_folder_paths(folder_type):
        if not os.path.isdir(root_path):
            continue
        for root, _dirs, files in os.walk(root_path, followlinks=True):
            if marker not in files and not os.path.isdir(os.path.join(root, marker)):
                continue
            if stage is None or detect_stage(root) == stage:
                found.append(os.path.relpath(root, root_path))
    return sorted(set(found))


def model_location(folder_types: tuple[str, ...], name: str) -> str:
    """An embedded model's or a local folder's full path, or ``name`` itself (a Hugging Face id)."""
    if name in EMBEDDED_MODELS:
        return str(EMBEDDED_MODELS[name])
    for folder_type in folder_types:
        for root_path in folder_paths.get_folder_paths(folder_type):
            candidate = os.path.join(root_path, name)
            if os.path.isdir(candidate):
                return candidate
    return name


def _offload_for(choice: str, device) -> str:
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


def _load_stage(label: str, stage: int, model: str, dtype: str, offload: str) -> ModelHandle:
    device = mm.get_torch_device()
    source = model_location(("diffusers",), model)
    plan = _offload_for(offload, device)
    if plan == "none":
        # Make room the way ComfyUI's own loaders do: unload what it holds, if needed.
        needed = estimated_bytes(source, dtype, stage=stage, device=device)
        if needed:
            mm.free_memory(needed, device)
        mm.soft_empty_cache()

    def load():
        try:
            return load_if_stage(source, stage, device=device, dtype=dtype, offload=plan)
        except ModelLoadError as error:
            raise ValueError(f"{label}: model '{model}': {error}") from error

    # With diffusers' offload hooks the weights move on their own; otherwise ComfyUI moves them.
    handle = ModelHandle(label, load, release, _pipeline_modules if plan == "none" else None)
    handle.get()  # load now, so a missing model is reported by this node
    return handle


def _stage_loader(stage: int, node_id: str, title: str, socket, hub_ids: tuple[str, ...], description: str):
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
                        options=[*local_model_folders("diffusers", "model_index.json", stage),
                                 *(embedded_models() if stage == 1 else []), *hub_ids],
                        tooltip="A diffusers folder in ComfyUI/models/diffusers, or a Hugging Face id (needs the "
                        "DeepFloyd licence accepted and a token; see the README)."
                        + (" 'embedded: digits demo' is a tiny model inside this pack that draws handwritten "
                           "digits (prompts like 'the digit six'; use its T5 too): no download, fast on a CPU."
                           if stage == 1 else ""),
                    ),
                    io.Combo.Input("dtype", options=list(DTYPES), default="auto",
                                   tooltip="auto: fp16 on a GPU, fp32 on the CPU."),
                    io.Combo.Input("offload", options=[AUTO, *OFFLOADS], default=AUTO,
                                   tooltip="auto follows ComfyUI (--lowvram: model offload, --novram: sequential). "
                                   "model: each part on the GPU only while it runs; sequential: least VRAM, slowest."),
                ],
                outputs=[
                    socket.Output(display_name="model", tooltip="The loaded model, for the sampler of this stage.")
                ],
            )

        @classmethod
        def execute(cls, model, dtype, offload) -> io.NodeOutput:
            return io.NodeOutput(_load_stage(title, stage, model, dtype, offload))

    StageLoader.__name__ = StageLoader.__qualname__ = node_id
    return StageLoader


LoadStageI = _stage_loader(
    1, "VisualAnagramsLoadStageI", "IF Stage I Loader", StageIModel, HUB_IDS[1],
    "Loads a DeepFloyd IF Stage I model (IF-I-M 0.4B, IF-I-L 0.9B, IF-I-XL 4.3B parameters), without its text encoder.",
)
LoadStageII = _stage_loader(
    2, "VisualAnagramsLoadStageII", "IF Stage II Loader", StageIIModel, HUB_IDS[2],
    "Loads a DeepFloyd IF Stage II super-resolution model (IF-II-M, IF-II-L: 64 -> 256 px).",
)
LoadStageIII = _stage_loader(
    3, "VisualAnagramsLoadStageIII", "IF Stage III Loader (x4 upscaler)", StageIIIModel, HUB_IDS[3],
    "Loads Stable Diffusion's x4 upscaler (256 -> 1024 px). As in the paper it is naive: it follows the first "
    "prompt only and does not know the views.",
)


class LoadTextEncoder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VisualAnagramsLoadT5",
            display_name="T5 Text Encoder Loader (IF)",
            category=f"{CATEGORY}/loaders",
            description="Loads DeepFloyd IF's T5-XXL text encoder (4.5B parameters: fp16 about 11 GB, 8-bit about "
            "8 GB, 4-bit less) from a folder with text_encoder/ and tokenizer/ (an IF-I model folder works) or a "
            "Hugging Face id.",
            inputs=[
                io.Combo.Input(
                    "encoder",
                    options=[
                        *local_model_folders("text_encoders", "tokenizer"),
                        *local_model_folders("diffusers", "text_encoder"),
                        *embedded_models(),
                        T5_HUB_ID,
                    ],
                    tooltip="A folder in ComfyUI/models/text_encoders or models/diffusers, or a Hugging Face id. "
                    "'embedded: digits demo' is the tiny T5 of the pack's demo model (pair it with that Stage I).",
                ),
                io.Combo.Input("precision", options=[AUTO, *PRECISIONS], default=AUTO,
                               tooltip="auto: fp16 on a GPU, fp32 on the CPU. 8bit/4bit need bitsandbytes."),
                io.Combo.Input("device", options=["default", "cpu"], default="default",
                               tooltip="cpu keeps the encoder in system memory: slow, but uses no VRAM."),
            ],
            outputs=[
                TextEncoder.Output(display_name="text encoder", tooltip="The T5 encoder, for the Anagram Prompt Encoder.")
            ],
        )

    @classmethod
    def execute(cls, encoder, precision, device) -> io.NodeOutput:
        label = "T5 Text Encoder Loader (IF)"
        torch_device = mm.get_torch_device()
        keep_on_cpu = device == "cpu" or torch_device.type == "cpu"
        if precision == AUTO:
            precision = "fp32" if keep_on_cpu else "fp16"
        source = model_location(("text_encoders", "diffusers"), encoder)

        def load():
            try:
                return load_t5(source, precision=precision, device=torch_device, keep_on_cpu=keep_on_cpu)
            except ModelLoadError as error:
                raise ValueError(f"{label}: encoder '{encoder}': {error}") from error

        # Quantized (bitsandbytes) weights cannot be moved; CPU-kept ones must not be.
        movable = precision in ("fp32", "fp16", "bf16") and not keep_on_cpu
        handle = ModelHandle(label, load, release_t5, (lambda t5: {"encoder": t5.model}) if movable else None)
        handle.get()
        return io.NodeOutput(handle)
