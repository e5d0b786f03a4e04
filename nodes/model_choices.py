"""What a loader lists, and the only names it loads: the model folders in ComfyUI's model folders, the single
model files some loaders also take (the T5 loader: Flux / SD3's ``t5xxl_*.safetensors``), the embedded models,
the known Hub ids.

The listing rules themselves (depth, links, broken folders) are ComfyUI-free, in :mod:`.model_lists`; this
module applies them to ComfyUI's folders (``folder_paths``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import comfy.model_management
import folder_paths

from ..sampling.if_models import EMBEDDED_MODELS
from .model_lists import (
    FileCheck,
    FolderCheck,
    clip_folder_check,
    is_plain_name,
    list_model_files,
    list_model_folders,
    listed_folder,
    skipped_folder_problem,
    t5_file_check,
    text_encoder_folder_check,
    unlisted_message,
)

#: Where each loader's model folders come from: (ComfyUI folder type, which folders there hold a model).
ModelSources = Sequence[tuple[str, FolderCheck]]
#: Where a loader's single model files come from: (ComfyUI folder type, which files there hold a model).
FileSources = Sequence[tuple[str, FileCheck]]
T5_SOURCES: ModelSources = (
    ("text_encoders", text_encoder_folder_check("tokenizer")),
    ("diffusers", text_encoder_folder_check("text_encoder")),
)
#: The T5 tokenizer ComfyUI ships with its code (comfy/text_encoders/), for SD3 and Flux's t5xxl.
COMFY_T5_TOKENIZER = Path(comfy.model_management.__file__).parent / "text_encoders" / "t5_tokenizer"
#: ComfyUI's "text_encoders" folder type covers models/text_encoders and the legacy models/clip.
T5_FILE_SOURCES: FileSources = (("text_encoders", t5_file_check()),)
#: ComfyUI's "clip" folder type is its text_encoders (models/text_encoders and models/clip).
CLIP_SOURCES: ModelSources = (("clip_vision", clip_folder_check()), ("clip", clip_folder_check()))
DIFFUSERS_WHERE = "ComfyUI/models/diffusers/<folder>"
T5_WHERE = (
    "ComfyUI/models/text_encoders/<folder> or a single T5-XXL file such as t5xxl_fp16.safetensors there (or an IF-I "
    "folder in ComfyUI/models/diffusers)"
)
CLIP_WHERE = "ComfyUI/models/clip_vision/<folder> (or models/clip, models/text_encoders)"


def embedded_models() -> list[str]:
    """The embedded models present in this copy of the pack (a Stage I folder with its own T5)."""
    return [name for name, folder in EMBEDDED_MODELS.items() if (folder / "model_index.json").is_file()]


def local_models(sources: ModelSources) -> dict[str, Path]:
    """``{name: folder}`` of the model folders in ComfyUI's folders of ``sources`` (the first source wins)."""
    found: dict[str, Path] = {}
    for folder_type, holds_model in sources:
        for name, folder in list_model_folders(folder_paths.get_folder_paths(folder_type), holds_model).items():
            found.setdefault(name, folder)
    return found


def local_files(file_sources: FileSources) -> dict[str, Path]:
    """``{name: file}`` of the model files in ComfyUI's folders of ``file_sources``, named as ComfyUI's own
    loaders name them (relative to the folder, ``/`` separated), from ComfyUI's own (cached) file listing."""
    found: dict[str, Path] = {}
    for folder_type, holds_model in file_sources:
        files = (
            (name, path)
            for name in folder_paths.get_filename_list(folder_type)
            if name.endswith(".safetensors") and (path := folder_paths.get_full_path(folder_type, name))
        )
        for name, path in list_model_files(files, holds_model).items():
            found.setdefault(name, path)
    return found


def if_tokenizer_folders() -> list[Path]:
    """Where a single-file T5 takes its tokenizer from, in order of preference: the tokenizer/ of each T5 or IF-I
    folder the T5 loader lists (IF's own), then the T5 tokenizer ComfyUI ships for SD3 and Flux. The loader uses
    the first that gives IF's token ids (:func:`..sampling.t5_single_file.if_token_id_problem`)."""
    folders = [folder / "tokenizer" for folder in local_models(T5_SOURCES).values() if (folder / "tokenizer").is_dir()]
    return [*folders, COMFY_T5_TOKENIZER]


def model_choices(
    sources: ModelSources, hub_ids: Sequence[str], *, embedded: bool, file_sources: FileSources = ()
) -> list[str]:
    """What a loader's combo lists: local folders, then local files, then the embedded models, then the known Hub
    ids."""
    return list(
        dict.fromkeys(
            [
                *local_models(sources),
                *local_files(file_sources),
                *(embedded_models() if embedded else []),
                *hub_ids,
            ]
        )
    )


def refusal(
    label: str,
    input_name: str,
    value: object,
    sources: ModelSources,
    hub_ids: Sequence[str],
    *,
    embedded: bool,
    where: str,
    file_sources: FileSources = (),
) -> str | None:
    """Why ``value`` may not be loaded (None if it is a listed choice, or a link checked when the node runs)."""
    if value is None:  # an input linked from another node: ComfyUI passes None while validating
        return None
    choices = model_choices(sources, hub_ids, embedded=embedded, file_sources=file_sources)
    if isinstance(value, str) and value in choices:
        return None
    problem = None
    if isinstance(value, str):
        problem = next(
            (
                found
                for folder_type, _ in sources
                if (found := skipped_folder_problem(folder_paths.get_folder_paths(folder_type), value))
            ),
            None,
        ) or _skipped_file_problem(file_sources, value)
    return unlisted_message(label, input_name, value, choices, where, problem)


def model_source(
    label: str,
    input_name: str,
    name: object,
    sources: ModelSources,
    hub_ids: Sequence[str],
    *,
    embedded: bool,
    where: str,
    file_sources: FileSources = (),
) -> str:
    """The folder, file (or known Hub id) a listed name stands for, checked again as the node runs: a folder or
    file the listing produces right now, inside ComfyUI's model folders; never a path built from the name alone."""
    if embedded and name in embedded_models():
        return str(EMBEDDED_MODELS[name])
    if is_plain_name(name):
        for folder_type, holds_model in sources:
            folder = listed_folder(folder_paths.get_folder_paths(folder_type), holds_model, name)
            if folder is not None:
                return str(folder)
    if isinstance(name, str) and file_sources:
        path = local_files(file_sources).get(name)
        if path is not None:
            return str(path)
    if name in hub_ids:
        return name
    raise ValueError(
        refusal(label, input_name, name, sources, hub_ids, embedded=embedded, where=where, file_sources=file_sources)
        or f"{label}: {input_name} {name!r} is no longer listed: refresh the page and pick it again"
    )


def _skipped_file_problem(file_sources: FileSources, name: object) -> str | None:
    """Why the file ``name`` (as ComfyUI lists it) was left out of the list, if it is damaged."""
    if not isinstance(name, str):
        return None
    for folder_type, _ in file_sources:
        if name in folder_paths.get_filename_list(folder_type):
            path = folder_paths.get_full_path(folder_type, name)
            problem = path and skipped_folder_problem([Path(path).parent], Path(path).name)
            if problem:
                return problem
    return None
