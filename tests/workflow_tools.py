"""The example workflows, for tests: load them, shrink them to the tiny models, read the UI format.

    from workflow_tools import api_workflow, with_tiny_models, workflow_names

    graph = with_tiny_models(api_workflow("flip"), steps=2)
    result = comfy_server.run(graph)        # tests/comfy_server.py

``example_workflows/<name>.json`` is the UI format (what the ComfyUI frontend saves);
``api_workflows/<name>.json`` its API-format twin (what the frontend's
``graphToPrompt()`` sends to ``POST /prompt``). Both are written by
``scripts/build_workflows.py`` (the package ``scripts/workflow_builder``).
:func:`ui_to_api` converts the first into the second independently of that
script, from the node definitions ComfyUI's ``/object_info``
reports, so a test can check the two describe the same graph.

:func:`comfyui_facts` (also ``python tests/workflow_tools.py --facts COMFYUI_DIR``)
imports ComfyUI in a child process and reports what the tests need from it: the
node definitions and ComfyUI's own validation of every API workflow. A child
process, so the test session never imports ComfyUI itself.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from pack import import_submodule

REPO = Path(__file__).resolve().parents[1]
UI_DIR = REPO / "example_workflows"
API_DIR = REPO / "api_workflows"
BUILD_SCRIPT = REPO / "scripts" / "build_workflows.py"
EXAMPLE_PICTURES = REPO / "nodes" / "example_pictures.py"

#: The tiny random CLIP of tests/tiny_clip.py, as the test server's models/clip_vision holds it.
TINY_CLIP = "tiny-clip"
#: The tiny T5 v1.1 of tests/tiny_models.py as single files, named as the T5 loader lists them in the test server
#: (models/text_encoders and the legacy models/clip), like Flux / SD3's t5xxl files: by precision.
TINY_T5_FILES = {
    "fp16": "tiny_t5xxl_fp16.safetensors",
    "fp8_e4m3fn_scaled": "tiny_t5xxl_fp8_e4m3fn_scaled.safetensors",
}
#: The tiny offline models of tests/tiny_models.py and tests/tiny_clip.py, by the loader input that names them.
TINY_MODELS = {
    ("VisualAnagramsLoadStageI", "model"): "tiny-IF-I",
    ("VisualAnagramsLoadStageII", "model"): "tiny-IF-II",
    ("VisualAnagramsLoadT5", "encoder"): "tiny-t5",
    ("VisualAnagramsLoadCLIP", "clip"): TINY_CLIP,
}
#: Loader values naming a model embedded in the pack (tiny already, so never swapped).
EMBEDDED_PREFIX = "embedded:"
#: The embedded digits demo model, as the Stage I and T5 loaders list it (its one home: sampling/if_models.py).
DEMO_MODEL = import_submodule("sampling.if_models").EMBEDDED_DEMO
SAMPLERS = ("VisualAnagramsStageI", "VisualAnagramsStageII", "VisualAnagramsStageIII")
PREVIEW = "VisualAnagramsViewPreview"

# -- the files ------------------------------------------------------------------------------------


def workflow_names() -> list[str]:
    """The example workflows, by name (``flip``, ``jigsaw``, ...)."""
    return sorted(path.stem for path in API_DIR.glob("*.json"))


def api_workflow(name: str) -> dict[str, Any]:
    """``api_workflows/<name>.json``: a fresh dict, ready for ``POST /prompt`` as ``{"prompt": ...}``."""
    path = API_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no API workflow {name!r}; there are: {', '.join(workflow_names())}")
    return json.loads(path.read_text(encoding="utf-8"))


def ui_workflow(name: str) -> dict[str, Any]:
    """``example_workflows/<name>.json``: the UI format, as the frontend loads it."""
    return json.loads((UI_DIR / f"{name}.json").read_text(encoding="utf-8"))


def with_tiny_models(
    api: dict[str, Any],
    steps: int = 2,
    frames_per_view: int = 2,
    hold_frames: int | None = None,
    candidates: int | None = None,
) -> dict[str, Any]:
    """A copy of an API workflow that runs in seconds on a CPU with the tiny offline models.

    The Stage I / II loaders load "tiny-IF-I" / "tiny-IF-II", the T5 loader "tiny-t5", the CLIP loader "tiny-clip"
    (loaders of the pack's embedded demo model keep it: it is tiny already);
    every sampler runs ``steps`` steps; the view preview renders ``frames_per_view``
    frames per transition (and ``hold_frames`` held frames, if given); Stage I draws
    ``candidates`` candidates, if given. Everything else (prompts, views, seeds,
    guidance, savers) is left as the example has it.
    """
    graph = copy.deepcopy(api)
    swapped = set()
    for node in graph.values():
        class_type, inputs = node["class_type"], node["inputs"]
        for (loader, input_name), tiny in TINY_MODELS.items():
            if class_type == loader and not str(inputs.get(input_name, "")).startswith(EMBEDDED_PREFIX):
                inputs[input_name] = tiny
                swapped.add(loader)
        if class_type in SAMPLERS and not isinstance(inputs.get("steps"), list):
            inputs["steps"] = steps
        if class_type == "VisualAnagramsStageI" and candidates is not None:
            inputs["candidates"] = candidates
        if class_type == PREVIEW:
            inputs["frames_per_view"] = frames_per_view
            if hold_frames is not None:
                inputs["hold_frames"] = hold_frames
    return graph


def example_pictures_module() -> ModuleType:
    """``nodes/example_pictures.py``, loaded from its file: the ``nodes`` package imports ComfyUI."""
    name = "visual_anagrams_example_pictures"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLE_PICTURES)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def stock_input_folder(input_dir: str | Path, comfyui_dir: str | Path) -> None:
    """Give ComfyUI's input folder ``input_dir`` the pictures the examples' LoadImage nodes name, as a user's
    has them once ComfyUI has loaded the pack: the pictures ComfyUI ships in its own input folder
    (``example.png``, from the checkout ``comfyui_dir``) and the pack's example pictures. A private input
    folder (a test server's, or a temporary one) starts empty; names already there are left alone."""
    input_dir = Path(input_dir)
    for picture in sorted((Path(comfyui_dir) / "input").iterdir()):
        if picture.is_file() and not (input_dir / picture.name).exists():
            shutil.copyfile(picture, input_dir / picture.name)
    example_pictures_module().install_example_pictures(str(input_dir))


# -- the UI format, read the way the frontend reads it ----------------------------------------------

#: Input types the frontend (1.32) draws as widgets; any other type is a socket.
WIDGET_TYPES = {"INT", "FLOAT", "BOOLEAN", "STRING", "COMBO"}
#: Nodes that exist only in the frontend and never reach the API format.
VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
MUTED, BYPASSED = 2, 4


#: Combo options for which the frontend (its Comfy.UploadImage extension) adds an upload button after the
#: required inputs, saved in ``widgets_values`` (as "image") but never sent to the server.
UPLOAD_OPTIONS = ("image_upload", "animated_image_upload", "video_upload")


def _stored_values(info: dict[str, Any]) -> list[tuple[str | None, bool]]:
    """``(widget name, takes a second "control after generate" value)`` for each value the frontend stores in
    ``widgets_values``, in order: the required inputs, then the optional ones, each in ``input_order``; the
    upload button (name None) after the required inputs of a node that loads a file."""
    widgets: list[tuple[str | None, bool]] = []
    order = info.get("input_order") or {group: list(specs) for group, specs in info["input"].items()}
    for group in ("required", "optional"):
        upload = False
        for name in order.get(group, []):
            spec = info["input"][group][name]
            kind = "COMBO" if isinstance(spec[0], list) else spec[0]
            options = (spec[1] if len(spec) > 1 else None) or {}
            if kind not in WIDGET_TYPES or options.get("forceInput"):
                continue
            control = options.get("control_after_generate")
            if kind == "INT":
                has_control = bool(control) if control is not None else name in ("seed", "noise_seed")
            else:
                has_control = kind == "COMBO" and bool(control)
            widgets.append((name, has_control))
            upload |= kind == "COMBO" and any(options.get(option) for option in UPLOAD_OPTIONS)
        if group == "required" and upload:
            widgets.append((None, False))
    return widgets


def widget_inputs(info: dict[str, Any]) -> list[tuple[str, bool]]:
    """``(name, takes a second "control after generate" value)`` for each widget of a node
    definition from ``/object_info``, in the order the frontend stores ``widgets_values``:
    the required inputs, then the optional ones, each in ``input_order``."""
    return [(name, has_control) for name, has_control in _stored_values(info) if name is not None]


def ui_to_api(ui: dict[str, Any], object_info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The API format of a UI-format workflow, as the frontend's ``graphToPrompt()`` builds it.

    ``object_info`` maps class types to their ``/object_info`` definitions. Raises
    ValueError when a node's ``widgets_values`` do not fit its definition.
    """
    links = {link[0]: link for link in ui.get("links", [])}
    prompt = {}
    for node in ui["nodes"]:
        if node.get("mode", 0) in (MUTED, BYPASSED) or node["type"] in VIRTUAL_NODES:
            continue
        info = object_info[node["type"]]
        values = list(node.get("widgets_values") or [])
        inputs: dict[str, Any] = {}
        position = 0
        for name, has_control in _stored_values(info):
            if position >= len(values):
                raise ValueError(f"node {node['id']} ({node['type']}): no value for widget {name or 'upload'!r}")
            if name is not None:  # the upload button's value stays in the frontend
                inputs[name] = values[position]
            position += 2 if has_control else 1
        if position != len(values):
            raise ValueError(f"node {node['id']} ({node['type']}): {len(values)} widget values, expected {position}")
        for slot in node.get("inputs", []):
            if slot.get("link") is None:
                continue
            link = links[slot["link"]]
            inputs[slot["name"]] = [str(link[1]), int(link[2])]
        prompt[str(node["id"])] = {
            "inputs": inputs,
            "class_type": node["type"],
            "_meta": {"title": node.get("title") or info.get("display_name") or node["type"]},
        }
    return prompt


def control_values(ui: dict[str, Any], object_info: dict[str, dict[str, Any]]) -> list[tuple[int, str, str]]:
    """``(node id, widget, control mode)`` for every "control after generate" value in a UI workflow."""
    found = []
    for node in ui["nodes"]:
        if node["type"] in VIRTUAL_NODES:
            continue
        values, position = node.get("widgets_values") or [], 0
        for name, has_control in _stored_values(object_info[node["type"]]):
            if has_control:
                found.append((node["id"], name, values[position + 1]))
            position += 2 if has_control else 1
    return found


# -- what ComfyUI says, from a child process ---------------------------------------------------------


def comfyui_facts(comfyui_dir: str | Path, timeout: float = 600) -> dict[str, Any]:
    """Import ComfyUI (``comfyui_dir``) and the pack in a child process and report, as JSON:

    ``object_info``: the ``/object_info`` definition of every node type the workflows use
    (missing types are left out); ``validation``: ComfyUI's ``validate_prompt`` verdict on
    every API workflow. Both with an input folder stocked as a user's is (:func:`stock_input_folder`),
    so LoadImage lists, and validation finds, the examples' pictures. Raises RuntimeError if the child fails.
    """
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--facts", str(comfyui_dir)],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"reading ComfyUI failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _facts(comfyui_dir: str) -> dict[str, Any]:
    import asyncio

    # The build script's package (scripts/workflow_builder/) imports from the script's folder, as when the
    # script runs; this child process is the only place the tests import it.
    sys.path.insert(0, str(BUILD_SCRIPT.parent))
    from workflow_builder.comfyui_nodes import load_node_classes, node_info

    node_classes = load_node_classes(comfyui_dir)
    import execution  # ComfyUI's, importable now
    import folder_paths

    used = set()
    for path in [*API_DIR.glob("*.json"), *UI_DIR.glob("*.json")]:
        data = json.loads(path.read_text(encoding="utf-8"))
        if "nodes" in data:  # UI format
            used |= {node["type"] for node in data["nodes"]}
        else:
            used |= {node["class_type"] for node in data.values()}
    # A private input folder, as the test server has one: nothing is written into the checkout.
    with tempfile.TemporaryDirectory(prefix="va-input-") as input_dir:
        stock_input_folder(input_dir, comfyui_dir)
        folder_paths.set_input_directory(input_dir)
        object_info = {name: node_info(name, node_classes) for name in sorted(used) if name in node_classes}
        validation = {}
        for name in workflow_names():
            valid, error, outputs, node_errors = asyncio.run(
                execution.validate_prompt("check", api_workflow(name), None)
            )
            validation[name] = {"valid": valid, "error": error, "outputs": sorted(outputs), "node_errors": node_errors}
    return {"object_info": object_info, "validation": validation}


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--facts":
        sys.exit("usage: python tests/workflow_tools.py --facts COMFYUI_DIR")
    facts = _facts(sys.argv[2])
    print(json.dumps(facts, default=str))
