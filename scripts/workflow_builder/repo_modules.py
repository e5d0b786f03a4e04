"""Code of this repository that lives outside any importable package, loaded from its file.

``tests/pack.py`` and ``demo/evaluate.py`` are scripts' and tests' helpers, not packages; loading them by
path keeps ``tests/`` and ``demo/`` off ``sys.path`` (where their modules could shadow ComfyUI's).
``nodes/example_pictures.py`` is the pack's, but its package imports ComfyUI, which the example
descriptions are read without.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from .paths import DEMO_EVALUATE, EXAMPLE_PICTURES, PACK_LOADER


def import_file(name: str, path: Path) -> ModuleType:
    """The module at ``path``, registered as ``name`` (reused if already imported under that name)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _pack_loader() -> ModuleType:
    # Registered as ``pack``, the name ``demo/evaluate.py`` imports it by, so both share one copy.
    return import_file("pack", PACK_LOADER)


def load_pack() -> ModuleType:
    """The pack, imported the way ComfyUI imports it."""
    return _pack_loader().load_pack()


def pack_submodule(relative: str) -> ModuleType:
    """``pack_submodule("views")`` -> the pack's ``views`` package."""
    return _pack_loader().import_submodule(relative)


def demo_evaluate() -> ModuleType:
    """``demo/evaluate.py``: loads the embedded demo model and samples it with the pack's own code."""
    return import_file("demo_evaluate", DEMO_EVALUATE)


def example_pictures() -> ModuleType:
    """``nodes/example_pictures.py``: the input folder's names of the pack's example pictures."""
    return import_file("visual_anagrams_example_pictures", EXAMPLE_PICTURES)
