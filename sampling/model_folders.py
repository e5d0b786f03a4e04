"""Inspecting a model folder without loading it: its JSON configs, which IF stage it holds, its weight files.

Everything here reads configs and file names only (no weights), so the loaders' model lists can call it for
every folder. :func:`detect_stage` never raises: a broken folder is simply not a stage; the loaders call
:func:`read_json_object` to say exactly what is wrong with it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .if_models import STAGE_PIPELINE_CLASSES
from .model_errors import ModelLoadError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
#: Configs are a few kB; anything far larger is not a config, and is refused before it is read into memory.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
#: The weights file name (before variant, shard and suffix) diffusers models and transformers models use.
DIFFUSERS_WEIGHTS_NAME = "diffusion_pytorch_model"
TRANSFORMERS_WEIGHTS_NAME = "model"
_REDOWNLOAD = "download the file again from the model's repository (or the whole folder)"


def read_json_object(path: str | os.PathLike) -> dict:
    """The JSON object in ``path``, or a ModelLoadError naming the file, what is wrong and the fix.

    Refuses a missing file, something that is not a regular file (a folder, a pipe), a file too large to be a
    config, unreadable bytes, text that is not JSON, and JSON that is not an object (a list, a number...).
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path} does not exist: the model folder is incomplete; {_REDOWNLOAD}")
    if not path.is_file():
        raise ModelLoadError(f"{path} is not a regular file: remove it and {_REDOWNLOAD}")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ModelLoadError(
                f"{path} is {size} bytes, far too large for a JSON config (at most {MAX_CONFIG_BYTES}): {_REDOWNLOAD}"
            )
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ModelLoadError(
            f"{path} cannot be read ({error.strerror or type(error).__name__}): check its permissions, or {_REDOWNLOAD}"
        ) from error
    except UnicodeDecodeError as error:
        raise ModelLoadError(f"{path} is not UTF-8 text, so not a JSON config: {_REDOWNLOAD}") from error
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ModelLoadError(f"{path} is not valid JSON ({error}): the file is damaged; {_REDOWNLOAD}") from error
    if not isinstance(value, dict):
        raise ModelLoadError(
            f"{path} holds a JSON {_json_kind(value)}, not an object, so it is not a model config: {_REDOWNLOAD}"
        )
    return value


def try_read_json_object(path: str | os.PathLike) -> dict | None:
    """:func:`read_json_object`, or None when the file is missing or broken (for optional files and hints)."""
    try:
        return read_json_object(path)
    except ModelLoadError:
        return None


def detect_stage(folder: str | os.PathLike) -> int | None:
    """Which IF stage a local diffusers folder holds, from its configs (no weights read).

    None when it holds no IF stage, or when ``model_index.json`` or ``unet/config.json`` is missing or broken:
    never raises, so listing many folders cannot fail on one.
    """
    folder = Path(folder)
    index = try_read_json_object(folder / "model_index.json")
    unet = try_read_json_object(folder / "unet" / "config.json")
    if index is None or unet is None:
        return None
    return stage_from_configs(index.get("_class_name"), unet, (folder / "vae" / "config.json").is_file())


def stage_from_configs(class_name: object, unet: dict | None, has_vae: bool) -> int | None:
    """The stage from a UNet config (its channels), else from the pipeline class name."""
    if unet is not None:
        in_channels = unet.get("in_channels")
        if in_channels == 3 and unet.get("class_embed_type") is None:
            return 1
        if in_channels == 6 and unet.get("class_embed_type") is not None:
            return 2
        if in_channels == 7 and has_vae:
            return 3
        return None
    for stage, classes in STAGE_PIPELINE_CLASSES.items():
        if class_name in classes:
            return stage
    return None


def weight_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(safetensors files, pickled weight files) directly in ``folder``."""
    if not folder.is_dir():
        return [], []
    files = [p for p in folder.iterdir() if p.is_file()]
    safe = [p for p in files if p.name.endswith(".safetensors") or p.name.endswith(".safetensors.index.json")]
    pickled = [p for p in files if p.name.endswith(PICKLE_SUFFIXES) or p.name.endswith(".bin.index.json")]
    return safe, pickled


def has_variant_files(folder: Path, variant: str) -> bool:
    return any(variant_of(p.name) == variant for p in weight_files(folder)[0])


def variant_of(filename: str) -> str | None:
    """'model.fp16-00001-of-00002.safetensors' -> 'fp16'; 'model.safetensors' -> None."""
    name = re.sub(r"\.index(\.[A-Za-z0-9_]+)?\.json$", r"\1", filename)  # 'x.safetensors.index.fp16.json'
    name = re.sub(r"\.(safetensors|bin)(\.[A-Za-z0-9_]+)?$", r"\2", name)
    name = re.sub(r"-\d{5}-of-\d{5}$", "", name)
    parts = name.split(".")
    return parts[-1] if len(parts) > 1 else None


def weight_file_patterns(component: str, weights_name: str, variant: str | None) -> list[str]:
    """Glob patterns (repository paths) of one weight set of a component: single file, shards and shard index."""
    prefix = f"{component}/" if component else ""
    if variant is None:
        names = [
            f"{weights_name}.safetensors",
            f"{weights_name}-*-of-*.safetensors",
            f"{weights_name}.safetensors.index.json",
        ]
    else:
        names = [
            f"{weights_name}.{variant}.safetensors",
            f"{weights_name}.{variant}-*-of-*.safetensors",
            f"{weights_name}.safetensors.index.{variant}.json",
        ]
    return [prefix + name for name in names]


def pickle_only_message(folder: Path, what: str) -> str:
    names = ", ".join(p.name for p in weight_files(folder)[1])
    return (
        f"{folder} holds the {what} weights only as pickled files ({names}). "
        "Pickle files can run code when loaded, so this loader reads safetensors only: download the "
        ".safetensors files of the same repository into this folder, or convert the weights to safetensors "
        "(load them once in a trusted Python and save_pretrained(..., safe_serialization=True))."
    )


def missing_folder_message(path: Path, what: str, layout: str, where: str) -> str:
    if path.exists() and not path.is_dir():
        problem = f"{path} is a file, not a folder"
    elif path.exists():
        problem = f"{path} is not a {what} folder"
    else:
        problem = f"{path} does not exist"
    return f"{problem}. A {what} is a diffusers-style folder holding {layout}. Put the folder in {where}."


def _json_kind(value: object) -> str:
    kinds = {list: "list", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)
