"""Puts the example workflows' start pictures where ComfyUI's LoadImage can find them.

LoadImage lists only the files at the top of ComfyUI's input folder (``folder_paths.get_input_directory()``),
so a picture shipped inside the pack (``examples/pictures/``) cannot be chosen there. When ComfyUI loads the
pack, every ``examples/pictures/<stem>.png`` is copied into the input folder as
:func:`example_picture_name` (``visual_anagrams_<stem>.png``), the name the example workflows' LoadImage
nodes reference.

The input folder is the user's: a name that exists there in any form (a file, even with other bytes, a
folder, a symlink, a broken one) is left alone, so nothing is overwritten and no link is followed. A copy is
written under a temporary name in the same folder and renamed into place, so LoadImage never lists a
half-written picture. A folder that is missing or read-only costs a warning, never ComfyUI's start.

ComfyUI is imported only to find the default input folder, so the tests import this module without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

PICTURES_DIR = Path(__file__).resolve().parents[1] / "examples" / "pictures"


def example_picture_name(stem: str) -> str:
    """The input folder's name for the pack's picture ``<stem>.png``: ``visual_anagrams_<stem>.png``."""
    return f"visual_anagrams_{stem}.png"


def _copy_into(source: Path, folder: str, name: str) -> None:
    """Copy ``source`` to ``folder/name`` through a temporary file in ``folder`` and an atomic rename."""
    # A hidden ".tmp" name: LoadImage lists image files only, so it never offers the half-written copy.
    descriptor, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(source.read_bytes())
        os.chmod(temporary, 0o644)  # mkstemp makes the file private; a picture in the input folder is not
        os.replace(temporary, os.path.join(folder, name))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def install_example_pictures(input_dir: str | None = None) -> list[str]:
    """Copy the pack's example pictures into ComfyUI's input folder (default: ``get_input_directory()``)
    under :func:`example_picture_name`, skipping every name already there; returns the names copied."""
    if input_dir is None:
        import folder_paths  # ComfyUI's

        input_dir = folder_paths.get_input_directory()
    pending = [(source, example_picture_name(source.stem)) for source in sorted(PICTURES_DIR.glob("*.png"))]
    copied: list[str] = []
    try:
        for source, name in pending:
            # lexists: a symlink counts as taken even when it is broken or points outside the folder.
            if not os.path.lexists(os.path.join(input_dir, name)):
                _copy_into(source, input_dir, name)
                copied.append(name)
                logger.info("Visual Anagrams: copied the example picture %s into %s", name, input_dir)
    except OSError as error:
        missing = [name for _, name in pending if not os.path.lexists(os.path.join(input_dir, name))]
        logger.warning(
            "Visual Anagrams: could not copy the example pictures %s into ComfyUI's input folder %s (%s); "
            "the example workflows' LoadImage nodes will not find them",
            ", ".join(missing),
            input_dir,
            error,
        )
    return copied
