"""Which model folders the loaders list, and the only names they load.

A loader lists the folders inside ComfyUI's model folders (``models/diffusers``, ``models/text_encoders``,
``models/clip_vision`` and any ``extra_model_paths.yaml`` roots) that hold a model of its kind, and loads nothing
else from disk:

* **Bounded listing.** A model folder is a direct child of a root (``IF-I-XL-v1.0``) or one level deeper, for
  the ``owner/name`` layout ``huggingface-cli download --local-dir models/diffusers/DeepFloyd/IF-I-XL-v1.0``
  leaves (:data:`MAX_DEPTH`). Nothing deeper is read, and model folders are not searched inside, so a listing
  costs one directory read per root and per non-model folder in it, however many files those hold.
* **Symlinks.** A symlinked folder is followed (users link a big disk into ``models/``), but a link back to
  a folder above it (``loop -> .``) is cut, and the depth bound stops any other cycle.
  Hidden entries (``.cache``, ``.locks`` of the Hub tools) are skipped.
* **Broken folders are skipped, not fatal.** A folder whose ``model_index.json`` or ``config.json`` is not a
  JSON object is left out of the list with one log line per folder (not per request), and a prompt that names
  it gets a validation error saying what is wrong with it.
* **Names.** :func:`listed_folder` maps a name back to its folder only if the same listing produces it: no
  ``..``, no absolute path, nothing outside the roots but the symlinked folders the listing itself follows.
* **Single files.** The T5 loader also lists single ``.safetensors`` files (Flux / SD3's ``t5xxl_fp16``) from
  ComfyUI's own file listing of ``models/text_encoders`` (and the legacy ``models/clip``), keeping those whose
  header holds a T5 v1.1 encoder (:func:`list_model_files`): one header read per file, redone only when the
  file changes.

No ComfyUI import: the loaders pass ComfyUI's roots in (``folder_paths.get_folder_paths``).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..sampling.clip_models import is_clip_folder
from ..sampling.glide_clip import is_glide_clip_folder
from ..sampling.loading import ModelLoadError, detect_stage, read_json_object
from ..sampling.model_errors import MAX_QUOTED_CHARS
from ..sampling.t5_single_file import holds_t5_encoder

logger = logging.getLogger(__name__)

#: "name" or "owner/name": how deep below a root a model folder may be.
MAX_DEPTH = 2
#: How many choices a refusal message spells out before it says "and N more".
MAX_CHOICES_SHOWN = 20

#: ComfyUI asks for a node's inputs (and so its list) several times per prompt and per page load; one listing
#: serves them all for this long. A folder added to models/ lists after at most this delay.
LISTING_LIFETIME_SECONDS = 2.0

#: The problem last found in each broken folder, and the (folder, problem) pairs already logged: a folder is
#: logged once (again only if its problem changes), however many loaders and requests list it.
_folder_problems: dict[str, str] = {}
_logged_problems: set[tuple[str, str]] = set()
_listings: dict[tuple, tuple[float, dict[str, Path]]] = {}

#: A folder check: True if the folder holds a model of the loader's kind, False if it holds something else;
#: raises ModelLoadError if the folder is broken (the message names the file and the problem).
FolderCheck = Callable[[Path], bool]
#: A file check: the same for a single weight file.
FileCheck = Callable[[Path], bool]
#: Each checked file's verdict, with the (size, mtime) it was made for: a header is read again only when the file
#: changes, however often ComfyUI asks for the loader's list.
_file_verdicts: dict[tuple[str, FileCheck], tuple[tuple[int, int], bool]] = {}


# -- which folders hold which model -----------------------------------------------------------------
@functools.cache  # one check per kind: listings are cached by (roots, check)
def stage_folder_check(stage: int) -> FolderCheck:
    """Folders holding a DeepFloyd IF (or x4 upscaler) pipeline of ``stage``, from their configs."""

    def holds_stage(folder: Path) -> bool:
        if not (folder / "model_index.json").is_file():
            return False
        _check_json_objects(folder / "model_index.json", folder / "unet" / "config.json")
        return detect_stage(folder) == stage

    return holds_stage


@functools.cache
def text_encoder_folder_check(marker: str) -> FolderCheck:
    """Folders with T5 in them: ``text_encoder/`` (an IF-I folder) or ``tokenizer/`` (a text encoder folder)."""

    def holds_text_encoder(folder: Path) -> bool:
        if not (folder / marker).is_dir():
            return False
        _check_json_objects(folder / "text_encoder" / "config.json", folder / "config.json")
        return True

    return holds_text_encoder


@functools.cache
def clip_folder_check() -> FolderCheck:
    """Folders holding a CLIP the scoring nodes load: a transformers CLIP (its config.json says ``model_type``
    "clip"), or GLIDE's noise-aware CLIP (its two encoders and its vocabulary). Both towers are needed, so a
    CLIP vision encoder alone (ComfyUI's usual clip_vision model) is not listed."""

    def holds_clip(folder: Path) -> bool:
        if is_glide_clip_folder(folder):
            return True
        _check_json_objects(folder / "config.json")
        return is_clip_folder(folder)

    return holds_clip


@functools.cache
def t5_file_check() -> FileCheck:
    """Single ``.safetensors`` files holding a T5 v1.1 encoder (Flux / SD3's t5xxl), judged by their header's
    tensor names and shapes, never by the file name (ComfyUI's text_encoders folder also holds CLIPs, umT5...)."""

    def holds_t5(path: Path) -> bool:
        return path.name.endswith(".safetensors") and holds_t5_encoder(path)

    return holds_t5


def _check_json_objects(*paths: Path) -> None:
    for path in paths:
        if os.path.lexists(path):  # a missing config is the folder check's business; a broken one is not
            read_json_object(path)  # raises ModelLoadError naming the file and the problem


# -- listing ---------------------------------------------------------------------------------------
def list_model_folders(roots: Iterable[str | os.PathLike], holds_model: FolderCheck) -> dict[str, Path]:
    """``{name: folder}`` for the model folders under ``roots`` that ``holds_model`` accepts, by name.

    Names are relative to their root with ``/`` separators; when two roots hold the same name, the first root
    wins (as ComfyUI's own folder lookups do). Broken folders are left out and logged once. A listing is
    reused for LISTING_LIFETIME_SECONDS.
    """
    key = (tuple(str(root) for root in roots), holds_model)
    cached = _listings.get(key)
    now = time.monotonic()
    if cached is not None and now - cached[0] < LISTING_LIFETIME_SECONDS:
        return dict(cached[1])
    found = _list_model_folders(key[0], holds_model)
    _listings[key] = (now, found)
    return dict(found)


def _list_model_folders(roots: tuple[str, ...], holds_model: FolderCheck) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in roots:
        root = Path(root)
        root_key = _folder_key(root)
        if root_key is None:
            continue
        # Breadth first, MAX_DEPTH levels; each entry carries the real folders above it, to cut loops.
        level: list[tuple[str, Path, frozenset]] = [("", root, frozenset({root_key}))]
        for _depth in range(MAX_DEPTH):
            next_level = []
            for prefix, folder, ancestors in level:
                for entry_name, child in _child_folders(folder):
                    key = _folder_key(child)
                    if key is None or key in ancestors:  # a link back up (loop -> .) lists nothing new
                        continue
                    name = f"{prefix}{entry_name}"
                    try:
                        accepted = holds_model(child)
                    except ModelLoadError as error:
                        _report_problem(child, str(error))
                        continue  # broken: skipped, and not searched for owner/name folders either
                    if accepted:
                        found.setdefault(name, child)
                    else:
                        next_level.append((f"{name}/", child, ancestors | {key}))
            level = next_level
    return dict(sorted(found.items()))


def list_model_files(files: Iterable[tuple[str, str | os.PathLike]], holds_model: FileCheck) -> dict[str, Path]:
    """``{name: path}`` of the ``(name, path)`` files (ComfyUI's own listing of a folder type) that ``holds_model``
    accepts, leaving out the weight files of model folders (a config.json beside them). Each real file is listed
    once, under its shortest name: ComfyUI's listing follows symlinks, so a link loop (``loop -> .``) would
    otherwise offer the same file as loop/loop/.../name. Damaged files are left out and logged once, like broken
    folders."""
    found: dict[str, Path] = {}
    seen: set[str] = set()
    for name, path in sorted(files, key=lambda item: (item[0].count("/"), item[0])):
        path = Path(path)
        if (path.parent / "config.json").is_file():
            continue  # the weights of a model folder (ComfyUI lists files recursively): listed as that folder
        try:
            real = os.path.realpath(path)
            status = os.stat(real)
        except OSError:  # vanished since ComfyUI listed it, or a dangling link
            continue
        if real in seen:
            continue
        seen.add(real)
        stamp = (status.st_size, status.st_mtime_ns)
        known = _file_verdicts.get((real, holds_model))
        if known is not None and known[0] == stamp:
            accepted = known[1]
        else:
            try:
                accepted = holds_model(path)
            except ModelLoadError as error:
                _report_problem(path, str(error))
                accepted = False
            _file_verdicts[(real, holds_model)] = (stamp, accepted)
        if accepted:
            found[name] = path
    return found


def _child_folders(folder: Path) -> list[tuple[str, Path]]:
    """(name, path) of the non-hidden folders (or links to folders) directly in ``folder``, sorted."""
    try:
        with os.scandir(folder) as entries:
            children = []
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=True):  # a dangling or looping link is no folder
                        children.append((entry.name, Path(entry.path)))
                except OSError:
                    continue
    except OSError:
        return []
    return sorted(children)


def _folder_key(folder: Path) -> tuple[int, int] | None:
    """The real folder's identity (device, inode), or None if it cannot be read."""
    try:
        status = folder.stat()
    except OSError:  # vanished, no permission, or a symlink loop the OS itself refuses
        return None
    return status.st_dev, status.st_ino


def _report_problem(location: Path, problem: str) -> None:
    _folder_problems[str(location)] = problem
    if (str(location), problem) in _logged_problems:
        return
    _logged_problems.add((str(location), problem))
    kind = "file" if location.is_file() else "folder"
    logger.warning(
        "[Visual Anagrams] skipping the model %s %s: %s. The loaders list the other models; "
        "fix or remove this %s to list it.",
        kind,
        location,
        problem,
        kind,
    )


def skipped_folder_problem(roots: Iterable[str | os.PathLike], name: str) -> str | None:
    """Why the folder (or file) ``name`` under one of ``roots`` was left out of the lists, if it was."""
    if not is_plain_name(name):
        return None
    for root in roots:
        folder = Path(root) / name
        problem = _folder_problems.get(str(folder))
        if problem is not None and folder.exists():
            return problem
    return None


# -- names -----------------------------------------------------------------------------------------
def is_plain_name(name: object) -> bool:
    """A relative ``name`` or ``owner/name`` with no ``..``, ``.``, empty, absolute or backslash parts."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        return False
    if os.path.isabs(name) or Path(name).drive:
        return False
    parts = name.split("/")
    return len(parts) <= MAX_DEPTH and all(part and not part.startswith(".") for part in parts)


def listed_folder(roots: Iterable[str | os.PathLike], holds_model: FolderCheck, name: str) -> Path | None:
    """The folder a listed ``name`` stands for, or None: only a name the listing (at most
    LISTING_LIFETIME_SECONDS old) produces maps to a path, inside a root or a symlinked folder it follows."""
    if not is_plain_name(name):
        return None
    return list_model_folders(roots, holds_model).get(name)


def unlisted_message(
    label: str, input_name: str, value: object, choices: list[str], where: str, problem: str | None = None
) -> str:
    """The refusal for a name the loader does not list: what was given, why, the valid choices, the fix."""
    shown = ", ".join(f"'{choice}'" for choice in choices[:MAX_CHOICES_SHOWN])
    if len(choices) > MAX_CHOICES_SHOWN:
        shown += f" and {len(choices) - MAX_CHOICES_SHOWN} more"
    given = repr(value) if not isinstance(value, str) else f"'{value}'"
    if len(given) > MAX_QUOTED_CHARS:  # an API client may send anything: never echo a megabyte back
        given = given[: MAX_QUOTED_CHARS - 3] + "..."
    if problem is not None:
        kind = "file" if isinstance(value, str) and value.endswith(".safetensors") else "folder"
        reason = f"that {kind} is broken ({problem})"
    elif not isinstance(value, str):
        reason = f"a model name is text, not {type(value).__name__} data"
    else:
        reason = f"it is not a model this loader lists (a folder in {where}, or one of the listed Hugging Face ids)"
    return (
        f"{label}: {input_name} {given} cannot be loaded: {reason}. Valid choices: {shown or 'none'}. "
        f"Pick one of them, or put the model folder in {where} (then refresh the page to list it)."
    )
