"""The files the builder owns: what each should hold, writing them, and what ``--check`` finds wrong with
the committed ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .comfyui_nodes import comfyui_input_dir, load_node_classes, node_info
from .example_graphs import illusion_graph, node_types_used
from .examples import SEED_CONTROL, WORKFLOWS, Illusion
from .node_schema import node_layout
from .paths import API_DIR, REPO, UI_DIR
from .repo_modules import pack_submodule
from .serialisation import to_api_format, to_ui_format
from .thumbnails import check_thumbnail, thumbnail


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def build(comfyui_dir: Path | str | None = None) -> dict[Path, str]:
    """Every JSON file the builder writes, path -> text, from the live node schemas."""
    node_classes = load_node_classes(comfyui_dir)
    missing = [name for name in node_types_used() if name not in node_classes]
    if missing:
        raise KeyError(f"node types not found in ComfyUI or the pack: {missing}")
    layouts = {name: node_layout(node_info(name, node_classes)) for name in node_types_used()}
    files = {}
    for illusion in WORKFLOWS:
        graph = illusion_graph(illusion, layouts)
        files[UI_DIR / f"{illusion.name}.json"] = to_json(to_ui_format(graph, control_after_generate=SEED_CONTROL))
        files[API_DIR / f"{illusion.name}.json"] = to_json(to_api_format(graph))
    return files


def thumbnail_paths() -> dict[Path, Illusion]:
    return {UI_DIR / f"{illusion.name}.jpg": illusion for illusion in WORKFLOWS}


def stale_files() -> list[Path]:
    """JSON or thumbnail files in the output folders that no workflow produces."""
    expected = {UI_DIR / f"{i.name}{suffix}" for i in WORKFLOWS for suffix in (".json", ".jpg")}
    expected |= {API_DIR / f"{i.name}.json" for i in WORKFLOWS}
    found = [*UI_DIR.glob("*.json"), *UI_DIR.glob("*.jpg"), *UI_DIR.glob("*.webp"), *API_DIR.glob("*.json")]
    return sorted(path for path in found if path not in expected)


def problems(files: dict[Path, str]) -> list[str]:
    """What is wrong with the committed files, given what they should hold (``files``, from :func:`build`):
    JSON files byte for byte, thumbnails by :func:`check_thumbnail`, and files no workflow produces."""
    found = []
    for path, text in files.items():
        if not path.is_file():
            found.append(f"{path.relative_to(REPO)}: missing")
        elif path.read_text(encoding="utf-8") != text:
            found.append(f"{path.relative_to(REPO)}: differs from what the script writes")
    for path in thumbnail_paths():
        problem = check_thumbnail(path)
        if problem:
            found.append(f"{path.relative_to(REPO)}: {problem}")
    found += [f"{path.relative_to(REPO)}: not produced by any workflow" for path in stale_files()]
    return found


def write(files: dict[Path, str], thumbnails: bool = True) -> int:
    """Write ``files`` (from :func:`build`, which loads ComfyUI: its input folder holds ComfyUI's own example
    picture) and, unless told not to, the thumbnails; returns how many."""
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    written = len(files)
    if thumbnails:
        views_module = pack_submodule("views")
        input_dir = comfyui_input_dir()
        for path, illusion in thumbnail_paths().items():
            path.write_bytes(thumbnail(illusion, views_module, input_dir))
            written += 1
    return written
