"""Import the pack the way ComfyUI does: as a package named after its folder.

ComfyUI loads a custom node folder with ``spec_from_file_location`` on its
``__init__.py``, registering it under a module name derived from the folder, so
the pack is never a top-level import and every internal import must be relative.
Tests and scripts go through :func:`load_pack` so that path is exercised too.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PACK_DIR = Path(__file__).resolve().parents[1]


def pack_module_name() -> str:
    # ComfyUI replaces dots so a folder like "visual.anagrams" still imports.
    return PACK_DIR.name.replace(".", "_x_")


def load_pack() -> ModuleType:
    name = pack_module_name()
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, PACK_DIR / "__init__.py", submodule_search_locations=[str(PACK_DIR)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def import_submodule(relative: str) -> ModuleType:
    """``import_submodule("views")`` -> the pack's ``views`` package."""
    return importlib.import_module(f"{load_pack().__name__}.{relative}")
