"""What a loader lists, and the only names it loads: the model folders in ComfyUI's model folders, the
embedded models, the known Hub ids.

The listing rules themselves (depth, links, broken folders) are ComfyUI-free, in :mod:`.model_lists`; this
module applies them to ComfyUI's folders (``folder_paths``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import folder_paths

from ..sampling.if_models import EMBEDDED_MODELS
from .model_lists import (
    FolderCheck,
    clip_folder_check,
    is_plain_name,
    list_model_folders,
    listed_folder,
    skipped_folder_problem,
    text_encoder_folder_check,
    unlisted_message,
)

#: Where each loader's model folders come from: (ComfyUI folder type, which folders there hold a model).
ModelSources = Sequence[tuple[str, FolderCheck]]
T5_SOURCES: ModelSources = (
    ("text_encoders", text_encoder_folder_check("tokenizer")),
    ("diffusers", text_encoder_folder_check("text_encoder")),
)
#: ComfyUI's "clip" folder type is its text_encoders (models/text_encoders and models/clip).
CLIP_SOURCES: ModelSources = (("clip_vision", clip_folder_check()), ("clip", clip_folder_check()))
DIFFUSERS_WHERE = "ComfyUI/models/diffusers/<folder>"
T5_WHERE = "ComfyUI/models/text_encoders/<folder> (or an IF-I folder in ComfyUI/models/diffusers)"
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


def model_choices(sources: ModelSources, hub_ids: Sequence[str], *, embedded: bool) -> list[str]:
    """What a loader's combo lists: local folders, then the embedded models, then the known Hub ids."""
    return list(dict.fromkeys([*local_models(sources), *(embedded_models() if embedded else []), *hub_ids]))


def refusal(
    label: str,
    input_name: str,
    value: object,
    sources: ModelSources,
    hub_ids: Sequence[str],
    *,
    embedded: bool,
    where: str,
) -> str | None:
    """Why ``value`` may not be loaded (None if it is a listed choice, or a link checked when the node runs)."""
    if value is None:  # an input linked from another node: ComfyUI passes None while validating
        return None
    choices = model_choices(sources, hub_ids, embedded=embedded)
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
        )
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
) -> str:
    """The folder (or known Hub id) a listed name stands for, checked again as the node runs: a folder the
    listing produces right now, inside ComfyUI's model folders; never a path built from the name alone."""
    if embedded and name in embedded_models():
        return str(EMBEDDED_MODELS[name])
    if is_plain_name(name):
        for folder_type, holds_model in sources:
            folder = listed_folder(folder_paths.get_folder_paths(folder_type), holds_model, name)
            if folder is not None:
                return str(folder)
    if name in hub_ids:
        return name
    raise ValueError(
        refusal(label, input_name, name, sources, hub_ids, embedded=embedded, where=where)
        or f"{label}: {input_name} {name!r} is no longer listed: refresh the page and pick it again"
    )
