"""The node schemas as ComfyUI's server reports them: ComfyUI and the pack imported in this process.

Reading them live (rather than restating them) is what lets the builder rewrite the workflows after a
schema change, or fail naming the input when a described value no longer fits.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .paths import DEFAULT_COMFYUI_DIR
from .repo_modules import load_pack


class ComfyUIUnavailable(RuntimeError):
    """ComfyUI cannot be imported from the given directory."""


def comfyui_dir_from_env() -> Path:
    return Path(os.environ.get("COMFYUI_DIR") or DEFAULT_COMFYUI_DIR).resolve()


@contextlib.contextmanager
def _quiet_logging(level: int = logging.ERROR) -> Iterator[None]:
    root = logging.getLogger()
    previous = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(previous)


_NODE_CLASSES: dict[str, type] | None = None


def load_node_classes(comfyui_dir: Path | str | None = None) -> dict[str, type]:
    """ComfyUI's ``nodes.NODE_CLASS_MAPPINGS`` with its core and extra nodes and this pack's nodes.

    Imports ComfyUI in this process (``--cpu``, as main.py would) from ``comfyui_dir``
    (default: COMFYUI_DIR, else .cache/comfyui). Cached: a process holds one ComfyUI.
    """
    global _NODE_CLASSES
    if _NODE_CLASSES is not None:
        return _NODE_CLASSES
    directory = Path(comfyui_dir).resolve() if comfyui_dir else comfyui_dir_from_env()
    if not (directory / "main.py").is_file() or not (directory / "nodes.py").is_file():
        raise ComfyUIUnavailable(f"no ComfyUI at {directory} (set COMFYUI_DIR or pass --comfyui)")
    # ComfyUI is not an installable package: its modules (nodes, comfy, execution, ...) import each other
    # as top-level modules from its folder, as when main.py runs there.
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    saved_argv = sys.argv
    sys.argv = [saved_argv[0] if saved_argv else "build_workflows", "--cpu"]
    try:
        with _quiet_logging():
            import comfy.options

            comfy.options.enable_args_parsing()
            # main.py imports ComfyUI's utils package before nodes.py puts comfy/ (with its
            # utils.py) on sys.path; do the same or comfy_extras cannot import the server.
            importlib.import_module("utils.install_util")
            import nodes

            if not Path(nodes.__file__).resolve().is_relative_to(directory):
                raise ComfyUIUnavailable(f"'nodes' imports from {nodes.__file__}, not from {directory}")
            asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
            extension = asyncio.run(load_pack().comfy_entrypoint())
            for node_class in asyncio.run(extension.get_node_list()):
                schema = node_class.GET_SCHEMA()
                nodes.NODE_CLASS_MAPPINGS[schema.node_id] = node_class
                if schema.display_name:
                    nodes.NODE_DISPLAY_NAME_MAPPINGS[schema.node_id] = schema.display_name
    except ComfyUIUnavailable:
        raise
    except ImportError as error:
        raise ComfyUIUnavailable(f"cannot import ComfyUI from {directory}: {error}") from error
    finally:
        sys.argv = saved_argv
    _NODE_CLASSES = nodes.NODE_CLASS_MAPPINGS
    return _NODE_CLASSES


def comfyui_input_dir() -> Path:
    """The input folder of the ComfyUI :func:`load_node_classes` loaded (where LoadImage's pictures are)."""
    if _NODE_CLASSES is None:
        raise RuntimeError("load ComfyUI first (load_node_classes)")
    import folder_paths

    return Path(folder_paths.get_input_directory())


def node_info(class_type: str, node_classes: dict[str, type]) -> dict[str, Any]:
    """What ComfyUI 0.3.75's ``GET /object_info`` reports for one node (server.py ``node_info``)."""
    import nodes

    node_class = node_classes[class_type]
    if hasattr(node_class, "GET_NODE_INFO_V1"):  # V3 schema
        return node_class.GET_NODE_INFO_V1()
    input_types = node_class.INPUT_TYPES()
    return {
        "input": input_types,
        "input_order": {key: list(value.keys()) for key, value in input_types.items()},
        "output": list(node_class.RETURN_TYPES),
        "output_name": list(getattr(node_class, "RETURN_NAMES", node_class.RETURN_TYPES)),
        "name": class_type,
        "display_name": nodes.NODE_DISPLAY_NAME_MAPPINGS.get(class_type, class_type),
        "output_node": bool(getattr(node_class, "OUTPUT_NODE", False)),
    }
