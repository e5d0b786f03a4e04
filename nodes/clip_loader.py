"""The CLIP loader: a CLIP for judging illusions (the Illusion Score node) and for Anagram-MTL's view balancing
(the samplers' balance_views option).

It lists what it can load, as the IF loaders do (:mod:`.model_choices`): CLIP folders in ComfyUI's
``models/clip_vision`` (and ``models/clip``, ``models/text_encoders``), then the known Hub ids, and refuses any
other name at validation and again when it runs. A folder is either a transformers CLIP (both towers,
safetensors weights) or GLIDE's noise-aware CLIP (Anagram-MTL's scorer, its published .pt state dicts read with
``weights_only``). ComfyUI manages the loaded weights like its own: it frees memory before the load, can offload
and unload them, and a cancelled prompt stops a Hub download.
"""

from __future__ import annotations

import logging
from pathlib import Path

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from ..sampling.clip_models import CLIP_HUB_IDS, estimated_clip_bytes, load_clip
from ..sampling.device_memory import element_size
from ..sampling.glide_clip import (
    GLIDE_CLIP_CONFIG,
    GLIDE_FILES,
    GlideImageEncoder,
    GlideTextEncoder,
    is_glide_clip_folder,
    load_glide_clip,
)
from ..sampling.loading import DTYPES, ModelLoadError, dtype_name, resolve_dtype
from .choices import check_choice
from .comfy_rules import AUTO, auto_text_encoder_precision, out_of_memory_errors
from .labels import node_label
from .loaders import load_for_node
from .model_choices import CLIP_SOURCES, CLIP_WHERE, model_choices, model_source, refusal
from .model_handle import ModelHandle
from .types import CATEGORY, ClipScorer

logger = logging.getLogger(__name__)

CLIP_NAMES = dict(sources=CLIP_SOURCES, hub_ids=CLIP_HUB_IDS, embedded=False, where=CLIP_WHERE)

CLIP_TOOLTIP = (
    f"A CLIP folder in {CLIP_WHERE}, as <name> or <owner>/<name>, or a listed Hugging Face id. Only listed models "
    "load. A transformers CLIP folder holds config.json (a CLIPModel: image and text towers), model.safetensors and "
    "vocab.json + merges.txt (or tokenizer.json); only safetensors weights load, never a pickle. A GLIDE noise-aware "
    f"CLIP folder (Anagram-MTL's balancing scorer) holds {', '.join(GLIDE_FILES)} from OpenAI's glide-text2im; its "
    ".pt files are plain state dicts, read with torch.load(weights_only=True), so no pickled code runs (converted "
    ".safetensors load too). A Hugging Face id is downloaded on first use (CLIP's files only) into the Hugging Face "
    f"cache; {CLIP_HUB_IDS[0]} is OpenAI's ViT-L/14 (temperature 0.01)."
)
DTYPE_TOOLTIP = (
    "auto: fp32 on the CPU; on a GPU, what ComfyUI picks for text encoders (fp16 unless --bf16-text-enc or "
    "--fp32-text-enc says otherwise)."
)


def _torch_dtype(choice: str, device: torch.device) -> torch.dtype:
    if choice == AUTO:
        choice = "fp32" if device.type == "cpu" else auto_text_encoder_precision(device)
    return resolve_dtype(choice, device)


def _estimated_bytes(source: str, dtype: torch.dtype) -> int | None:
    """Bytes the CLIP's weights will take, when known before loading (a Hub id's are not)."""
    if source in CLIP_HUB_IDS:
        return None
    if is_glide_clip_folder(source):
        # GLIDE's architecture is fixed: count its parameters without allocating them.
        with torch.device("meta"):
            encoders = (GlideImageEncoder(GLIDE_CLIP_CONFIG), GlideTextEncoder(GLIDE_CLIP_CONFIG))
        return sum(p.numel() for encoder in encoders for p in encoder.parameters()) * element_size(dtype)
    return estimated_clip_bytes(Path(source), dtype)


def _load_scorer(source: str, device: torch.device, dtype: torch.dtype):
    """A standard or a noise-aware CLIP, by what the folder holds (a Hub id is a standard CLIP)."""
    if source not in CLIP_HUB_IDS and is_glide_clip_folder(source):
        return load_glide_clip(source, device=device, dtype=dtype)
    try:
        return load_clip(source, device=device, dtype=dtype, should_stop=mm.processing_interrupted)
    except ModelLoadError as error:
        # load_clip words running out of memory itself; torch's error goes on, so ComfyUI recognises it.
        if isinstance(error.__cause__, out_of_memory_errors()):
            raise error.__cause__ from None
        raise


def _managed_modules(scorer) -> dict[str, torch.nn.Module]:
    """The scorer's torch modules (a standard CLIP's model; GLIDE's two encoders), for ComfyUI to move."""
    return {name: value for name, value in vars(scorer).items() if isinstance(value, torch.nn.Module)}


def _release(scorer) -> None:
    scorer.release()


class LoadCLIP(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VisualAnagramsLoadCLIP",
            display_name="CLIP Loader (illusion scoring)",
            category=f"{CATEGORY}/loaders",
            description="Loads a CLIP (image and text towers) to judge illusions: the Illusion Score node ranks "
            "candidates with it, and the samplers' balance_views option weighs the views with it (Anagram-MTL). "
            "OpenAI's ViT-L/14 has 0.43B parameters (0.9 GB in fp16), GLIDE's noise-aware CLIP 0.16B.",
            inputs=[
                io.Combo.Input(
                    "clip", options=model_choices(CLIP_SOURCES, CLIP_HUB_IDS, embedded=False), tooltip=CLIP_TOOLTIP
                ),
                io.Combo.Input("dtype", options=list(DTYPES), default=AUTO, tooltip=DTYPE_TOOLTIP),
            ],
            outputs=[
                ClipScorer.Output(
                    display_name="clip",
                    tooltip="The loaded CLIP, for the Illusion Score node and the samplers' balancing_clip.",
                )
            ],
        )

    @classmethod
    def validate_inputs(cls, clip) -> bool | str:
        return refusal(node_label(cls), "clip", clip, **CLIP_NAMES) or True

    @classmethod
    def execute(cls, clip, dtype) -> io.NodeOutput:
        label = node_label(cls)
        check_choice(label, "dtype", dtype, DTYPES)
        source = model_source(label, "clip", clip, **CLIP_NAMES)
        device = mm.get_torch_device()
        torch_dtype = _torch_dtype(dtype, device)
        needed = _estimated_bytes(source, torch_dtype)
        if needed:
            mm.free_memory(needed, device)  # make room the way ComfyUI's own loaders do
        mm.soft_empty_cache()

        def load():
            scorer = load_for_node(
                label,
                f"clip '{clip}'",
                "pick fp16, or a smaller CLIP",
                lambda: _load_scorer(source, device, torch_dtype),
            )
            kind = "noise-aware (GLIDE)" if scorer.noise_aware else "standard"
            logger.info("%s: loaded '%s' (%s CLIP) in %s on %s", label, clip, kind, dtype_name(torch_dtype), device)
            return scorer

        handle = ModelHandle(label, load, _release, _managed_modules)
        handle.get()  # load now, so a missing or broken model is reported by this node
        return io.NodeOutput(handle)
