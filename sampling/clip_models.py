"""CLIP for judging illusions: a transformers CLIP (image and text towers) from a local folder or the Hub.

The scores of :mod:`.illusion_scores` and the view balancing of :mod:`.balancing` ask one question of a
CLIP: how well does this picture match this text. :class:`ClipModel` answers it for a standard CLIP
(OpenAI's ViT-L/14, LAION's ViT-H/14, any ``CLIPModel`` folder); :mod:`.glide_clip` answers it for
GLIDE's noise-aware CLIP. Both follow one interface (``noise_aware``, ``image_size``, ``temperature``,
``text_embeddings``, ``image_embeddings``, ``release``), so the scoring code never asks which it has.

Pictures come in the pack's model space ([-1, 1], any square size) and are prepared the way
``CLIPImageProcessor`` prepares a square picture (resize to the model's size, bicubic; the model's mean
and standard deviation), in torch, so a batch never leaves the device.

Only safetensors weights load (no pickle); a Hub id downloads CLIP's files alone, bounded in time and
cancellable (:mod:`.hub`). No ComfyUI import.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .device_memory import OUT_OF_MEMORY_ERRORS, empty_device_caches, free_module
from .hub import ShouldStop, download_snapshot, resolve_source
from .library_versions import transformers_dtype_kwarg
from .model_errors import ModelLoadError, first_line
from .model_folders import (
    TRANSFORMERS_WEIGHTS_NAME,
    missing_folder_message,
    pickle_only_message,
    read_json_object,
    try_read_json_object,
    weight_file_patterns,
    weight_files,
)
from .safetensors_headers import check_safetensors_files, safetensors_parameter_count
from .scrubbing import scrub_secrets

#: Standard CLIPs the loader offers by Hub id (transformers format with safetensors weights).
CLIP_HUB_IDS = (
    "openai/clip-vit-large-patch14",
    "openai/clip-vit-base-patch32",
    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
)
#: ``CLIPImageProcessor``'s defaults (OpenAI's normalisation), for folders without a preprocessor_config.json.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_TOKENIZER_FILES = (
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
_LAYOUT = "config.json (a CLIPModel), model.safetensors, vocab.json + merges.txt (or tokenizer.json)"
_WHERE = "ComfyUI/models/clip_vision/<folder> (or models/clip)"
_BYTES_PER_PARAMETER = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2}


@dataclass
class ClipModel:
    """A loaded standard CLIP, ready to embed pictures and texts (the pack's scorer interface)."""

    model: object  # transformers.CLIPModel
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    source: str
    noise_aware: bool = field(default=False, init=False)
    _released: bool = field(default=False, repr=False)

    @property
    def temperature(self) -> float:
        """CLIP's own softmax temperature, ``1 / exp(logit_scale)`` (OpenAI's CLIPs learned 0.01)."""
        return float(1.0 / self._live().logit_scale.detach().float().exp())

    @property
    def released(self) -> bool:
        return self._released

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """(P, D) unit-norm float32 embeddings of ``texts``."""
        model = self._live()
        tokens = self.tokenizer(
            list(texts),
            padding="max_length",
            max_length=model.config.text_config.max_position_embeddings,
            truncation=True,
            return_tensors="pt",
        ).to(self.device)
        features = model.get_text_features(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
        return _unit(_tensor_of(features))

    @torch.no_grad()
    def image_embeddings(self, images: torch.Tensor, timesteps: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) unit-norm float32 embeddings of ``images`` (B, 3, S, S) in [-1, 1]; ``timesteps`` are ignored
        (a standard CLIP was trained on clean pictures only)."""
        pixels = self.prepare(images)
        return _unit(_tensor_of(self._live().get_image_features(pixel_values=pixels)))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """``CLIPImageProcessor``'s preparation of square pictures, in torch: [-1, 1] -> [0, 1], resized to the
        model's size (bicubic with antialiasing, as PIL resizes), normalised with the model's mean and std."""
        pixels = ((images.to(device=self.device, dtype=torch.float32) + 1) / 2).clamp(0, 1)
        if pixels.shape[-1] != self.image_size:
            pixels = F.interpolate(pixels, size=(self.image_size,) * 2, mode="bicubic", antialias=True)
        mean = torch.tensor(self.image_mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, device=self.device).view(1, 3, 1, 1)
        return ((pixels - mean) / std).to(self.dtype)

    def release(self) -> None:
        if not self._released:
            free_module(self.model)
            self.model = None
            self._released = True

    def _live(self):
        if self._released or self.model is None:
            raise ModelLoadError(f"the CLIP {self.source} was released: load it again")
        return self.model


def load_clip(
    source: str | os.PathLike,
    *,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    should_stop: ShouldStop | None = None,
    hub_timeout: float | None = None,
) -> ClipModel:
    """Load a standard CLIP (image and text towers) from a transformers folder or a Hub id.

    A Hub id downloads config, safetensors weights, tokenizer and preprocessor files only:
    ``should_stop()`` cancels the download, ``hub_timeout`` seconds without an answer fail.
    """
    device = torch.device(device)
    location = resolve_source(source)
    if isinstance(location, Path):
        folder, label = location, str(location)
    else:
        folder, label = _download_clip(location, should_stop, hub_timeout), location
    config = check_clip_folder(folder)
    tokenizer = _load_tokenizer(folder)  # small: fails fast
    try:
        model = _load_model(folder, label, dtype).to(device)
    except OUT_OF_MEMORY_ERRORS as error:
        empty_device_caches()
        raise ModelLoadError(
            f"not enough memory on {device} for the CLIP {label}: free memory (unload other models), pick a smaller "
            "CLIP or fp16"
        ) from error
    model.eval()
    preprocessor = try_read_json_object(folder / "preprocessor_config.json") or {}
    return ClipModel(
        model=model,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        image_size=int(config["vision_config"].get("image_size", 224)),
        image_mean=_three_floats(preprocessor.get("image_mean"), OPENAI_CLIP_MEAN),
        image_std=_three_floats(preprocessor.get("image_std"), OPENAI_CLIP_STD),
        source=label,
    )


def check_clip_folder(folder: Path) -> dict:
    """The config of a local CLIP folder, after checking it holds both towers, safetensors and a tokenizer."""
    if not (folder / "config.json").is_file():
        if (folder / "open_clip_config.json").is_file():
            raise ModelLoadError(
                f"{folder} holds an open_clip checkpoint; the loader reads the transformers format: download the "
                "repository's config.json, model.safetensors and tokenizer files (LAION's repositories have both)"
            )
        raise ModelLoadError(missing_folder_message(folder, "CLIP", _LAYOUT, _WHERE))
    config = read_json_object(folder / "config.json")  # raises naming the file, the problem and the fix
    if config.get("model_type") != "clip" or not isinstance(config.get("vision_config"), dict):
        kind = config.get("model_type") or "model without a model_type"
        raise ModelLoadError(
            f"{folder} holds a {kind}, not a CLIP with both image and text towers (a CLIP vision encoder alone "
            f"cannot read prompts): use a full CLIP repository such as {CLIP_HUB_IDS[0]}"
        )
    safe, pickled = weight_files(folder)
    if not safe:
        if pickled:
            raise ModelLoadError(pickle_only_message(folder, "CLIP"))
        raise ModelLoadError(f"{folder} has no weights: it needs model.safetensors (or its shards and index)")
    check_safetensors_files(folder)
    if not any((folder / name).is_file() for name in ("vocab.json", "tokenizer.json")):
        raise ModelLoadError(
            f"{folder} has no CLIP tokenizer: it needs vocab.json and merges.txt (or tokenizer.json) from the "
            "same repository"
        )
    return config


def is_clip_folder(folder: Path) -> bool:
    """Whether ``folder`` looks like a standard CLIP (cheap: its config only); :func:`check_clip_folder` decides."""
    config = try_read_json_object(folder / "config.json")
    return config is not None and config.get("model_type") == "clip"


def estimated_clip_bytes(folder: Path, dtype: torch.dtype) -> int | None:
    """Bytes the weights of a local CLIP take in ``dtype``, from the safetensors headers (None if unknown)."""
    count = safetensors_parameter_count(folder)
    return None if count is None else count * _BYTES_PER_PARAMETER.get(dtype, 4)


def clip_file_patterns() -> list[str]:
    """The files of a CLIP repository the loader needs, as glob patterns."""
    return [
        "config.json",
        "preprocessor_config.json",
        *weight_file_patterns("", TRANSFORMERS_WEIGHTS_NAME, None),
        *CLIP_TOKENIZER_FILES,
    ]


def _download_clip(repo_id: str, should_stop, hub_timeout) -> Path:
    return download_snapshot(repo_id, clip_file_patterns(), what="CLIP", timeout=hub_timeout, should_stop=should_stop)


def _load_tokenizer(folder: Path):
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    try:
        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            return CLIPTokenizer.from_pretrained(str(folder))
        return CLIPTokenizerFast.from_pretrained(str(folder))
    except Exception as error:  # any failure of a checked folder is reported with the folder
        message = f"could not load the CLIP tokenizer from {folder}: {type(error).__name__}: {first_line(error)}"
        raise ModelLoadError(scrub_secrets(message)) from error


def _load_model(folder: Path, label: str, dtype: torch.dtype):
    from transformers import CLIPModel

    try:
        return CLIPModel.from_pretrained(str(folder), use_safetensors=True, **{transformers_dtype_kwarg(): dtype})
    except OUT_OF_MEMORY_ERRORS:
        raise
    except Exception as error:  # a checked folder that still fails: name it and the reason
        message = f"could not load the CLIP from {label}: {type(error).__name__}: {first_line(error)}"
        raise ModelLoadError(scrub_secrets(message)) from error


def _three_floats(value: object, default: tuple[float, float, float]) -> tuple[float, float, float]:
    if isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value):
        return tuple(float(v) for v in value)
    return default


def _tensor_of(features) -> torch.Tensor:
    # transformers 5 returns a model output from get_*_features where older versions returned the tensor.
    return features if isinstance(features, torch.Tensor) else features.pooler_output


def _unit(features: torch.Tensor) -> torch.Tensor:
    features = features.float()
    return features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
