#!/usr/bin/env python
"""Build the example workflows: UI format for ComfyUI's template browser, API format twins, thumbnails.

Each workflow is described once (``WORKFLOWS`` below, the paper's settings). From
that description and the *live* node schemas -- the pack's nodes and ComfyUI's core
nodes, read from a ComfyUI checkout exactly as its ``/object_info`` route reports
them -- the script writes:

    example_workflows/<name>.json   UI format (what the frontend saves, version 0.4);
                                    ComfyUI lists these in its template browser
    example_workflows/<name>.jpg    the thumbnail the template browser shows
    api_workflows/<name>.json       API format (what ``app.graphToPrompt()`` sends
                                    to ``POST /prompt``), for headless runs

Widget order, sockets and slot types come from the schemas, so re-running the
script after a schema change rewrites the files (or fails, naming the input, when a
described value no longer fits).

    python scripts/build_workflows.py            # write the files
    python scripts/build_workflows.py --check    # exit 1 if the committed files differ

ComfyUI must be importable: ``--comfyui DIR``, else ``COMFYUI_DIR``, else
``.cache/comfyui`` (where ``scripts/test.sh`` unpacks ComfyUI 0.3.75). Run it with
the Python of that ComfyUI's environment (torch included).

``--check`` compares the JSON files byte for byte. Thumbnails are pictures whose
exact bytes depend on the installed Pillow and torch, so ``--check`` only verifies
that each exists, is a JPEG of the expected size and stays under the size budget.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import io
import json
import logging
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
UI_DIR = REPO / "example_workflows"
API_DIR = REPO / "api_workflows"
DEFAULT_COMFYUI_DIR = REPO / ".cache" / "comfyui"

#: The frontend version ComfyUI 0.3.75 pins (comfyui-frontend-package); written into
#: ``extra.frontendVersion`` as the frontend does when it saves a workflow.
FRONTEND_VERSION = "1.32.9"
UI_FORMAT_VERSION = 0.4
THUMBNAIL_MAX_BYTES = 60_000
THUMBNAIL_WIDTH = 400

# ---------------------------------------------------------------------------------------------
# The workflows (settings: the paper's published defaults, DESIGN.md section 1)
# ---------------------------------------------------------------------------------------------

#: The paper's own choice of models for its figures (IF-I-M + IF-II-M), and T5 from IF-I-XL
#: (every IF-I repository ships the same T5-XXL).
STAGE_I_MODEL = "DeepFloyd/IF-I-M-v1.0"
STAGE_II_MODEL = "DeepFloyd/IF-II-M-v1.0"
T5_MODEL = "DeepFloyd/IF-I-XL-v1.0"
SEED = 0
SEED_CONTROL = "fixed"  # the UI's "control after generate": fixed, so the examples reproduce
OIL_PAINTING = "an oil painting of"  # the paper's tip: styles work better than "a photo of"

LOADER = {"dtype": "auto", "offload": "auto"}
T5_LOADER = {"encoder": T5_MODEL, "precision": "auto", "device": "default"}
STAGE_I = {"seed": SEED, "steps": 30, "schedule": "steps", "guidance": 10.0, "reduction": "auto", "candidates": 2}
STAGE_II = {"seed": SEED, "steps": 30, "schedule": "steps", "guidance": 10.0, "reduction": "auto", "noise_level": 50}
PREVIEW = {"frames_per_view": 24, "hold_frames": 8}
#: The view preview's size: its illusion viewer (picture, controls, view chips) needs about 500 px.
PREVIEW_SIZE = (380, 520)
ANIMATION = {"fps": 24.0, "lossless": False, "quality": 90, "method": "default"}


@dataclass(frozen=True)
class Illusion:
    """One example workflow: a chain of views, one prompt per view, a style.

    ``demo`` workflows run the pack's embedded digits model (Stage I only, no download)
    instead of DeepFloyd IF.
    """

    name: str
    views: tuple[tuple[str, dict[str, Any]], ...]  # (view name, its parameters), in prompt order
    prompts: tuple[str, ...]
    style: str = OIL_PAINTING
    demo: bool = False

    def __post_init__(self) -> None:
        if len(self.views) != len(self.prompts):
            raise ValueError(f"{self.name}: {len(self.views)} views but {len(self.prompts)} prompts")


#: The embedded demo model (demo/IF-I-digits: a tiny Stage I and its tiny T5, both inside the pack), as
#: the loaders list it, and the sampler settings measured for it (demo/README.md): 64 px, no Stage II.
DEMO_MODEL = "embedded: digits demo (64 px)"
DEMO_STAGE_I = {"seed": SEED, "steps": 30, "schedule": "steps", "guidance": 4.0, "reduction": "auto", "candidates": 4}
DEMO_UPSCALE = {"upscale_method": "bicubic", "scale_by": 4.0}  # 64 -> 256 px, for a visible picture
DEMO_PREFIX = "visual_anagrams_demo"

WORKFLOWS: tuple[Illusion, ...] = (
    # Runs anywhere with no download: the embedded digits model draws a digit that reads as another
    # digit once flipped upside down.
    Illusion("digits_demo", (("identity", {}), ("flip", {})), ("the digit two", "the digit five"), style="",
             demo=True),
    Illusion("rotate_cw", (("identity", {}), ("rotate_cw", {})), ("a snowy mountain village", "a horse")),
    Illusion("flip", (("identity", {}), ("flip", {})), ("people around a campfire", "an old man")),
    Illusion("jigsaw", (("identity", {}), ("jigsaw", {"seed": 0})), ("a kitchen", "a teddy bear")),
    Illusion("negate", (("identity", {}), ("negate", {})), ("a waterfall", "a skull"), style="a lithograph of"),
    Illusion(
        "three_views",
        (("identity", {}), ("rotate_cw", {}), ("rotate_ccw", {})),
        ("a rabbit", "a duck", "a giraffe"),
        style="a watercolor of",
    ),
    # Factorized (hybrid image): low frequencies follow prompt 1, high frequencies prompt 2; the
    # samplers' reduction "auto" picks "sum" because every view is factorized.
    Illusion(
        "hybrid",
        (("low_pass", {"sigma": 2.0}), ("high_pass", {"sigma": 2.0})),
        ("a waterfall", "a deer"),
        style="a photo of",
    ),
)

# ---------------------------------------------------------------------------------------------
# ComfyUI: import it and read the node schemas the way its server reports them
# ---------------------------------------------------------------------------------------------


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


def _load_pack():
    tests_dir = str(REPO / "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    from pack import load_pack  # the pack imported the way ComfyUI imports it

    return load_pack()


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
            extension = asyncio.run(_load_pack().comfy_entrypoint())
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


# ---------------------------------------------------------------------------------------------
# The frontend's reading of a schema: which inputs are sockets, which are widgets
# ---------------------------------------------------------------------------------------------

#: Input types the frontend (1.32) draws as widgets; every other type is a socket.
WIDGET_TYPES = {"INT", "FLOAT", "BOOLEAN", "STRING", "COMBO"}
#: INT inputs with these names get a "control after generate" widget unless the schema says otherwise.
SEED_NAMES = ("seed", "noise_seed")


@dataclass(frozen=True)
class Slot:
    name: str
    type: str
    optional: bool
    options: dict[str, Any]


@dataclass(frozen=True)
class NodeLayout:
    """A node type as the frontend builds it: sockets first, then one input slot per widget."""

    class_type: str
    display_name: str
    sockets: tuple[Slot, ...]
    widgets: tuple[Slot, ...]
    outputs: tuple[tuple[str, str], ...]  # (name, type)

    @property
    def inputs(self) -> tuple[Slot, ...]:
        return self.sockets + self.widgets

    def socket_index(self, name: str) -> int:
        for index, slot in enumerate(self.sockets):
            if slot.name == name:
                return index
        raise KeyError(f"{self.class_type} has no socket input '{name}' (sockets: {[s.name for s in self.sockets]})")

    def widget(self, name: str) -> Slot:
        for slot in self.widgets:
            if slot.name == name:
                return slot
        raise KeyError(f"{self.class_type} has no widget '{name}' (widgets: {[s.name for s in self.widgets]})")


def has_control_widget(slot: Slot) -> bool:
    """Whether the frontend adds a "control after generate" combo after this widget (a second value)."""
    control = slot.options.get("control_after_generate")
    if slot.type == "INT":
        return bool(control) if control is not None else slot.name in SEED_NAMES
    if slot.type == "COMBO":
        return bool(control)
    return False


def node_layout(info: dict[str, Any]) -> NodeLayout:
    slots = []
    order = info.get("input_order") or {key: list(value) for key, value in info["input"].items()}
    for group in ("required", "optional"):
        specs = info["input"].get(group, {})
        for name in order.get(group, list(specs)):
            spec = specs[name]
            kind, options = spec[0], (spec[1] if len(spec) > 1 else {}) or {}
            if isinstance(kind, list):
                kind, options = "COMBO", {**options, "options": kind}
            slots.append(Slot(name, kind, group == "optional", options))
    sockets = tuple(s for s in slots if s.type not in WIDGET_TYPES or s.options.get("forceInput"))
    widgets = tuple(s for s in slots if s not in sockets)
    names = info.get("output_name") or info["output"]
    return NodeLayout(
        class_type=info["name"],
        display_name=info.get("display_name") or info["name"],
        sockets=sockets,
        widgets=widgets,
        outputs=tuple(zip(names, info["output"])),
    )


def default_widget_value(slot: Slot) -> Any:
    if "default" in slot.options:
        return slot.options["default"]
    if slot.type == "COMBO":
        return slot.options["options"][0]
    return {"INT": 0, "FLOAT": 0.0, "BOOLEAN": False, "STRING": ""}[slot.type]


def check_widget_value(class_type: str, slot: Slot, value: Any, model_names: bool = False) -> None:
    """Raise ValueError unless ``value`` is allowed by the schema (combo options, number bounds)."""
    where = f"{class_type}.{slot.name}={value!r}"
    if slot.type == "COMBO":
        if not model_names and value not in slot.options["options"]:
            raise ValueError(f"{where} is not one of {slot.options['options']}")
    elif slot.type in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} is not a number")
        if slot.type == "INT" and not float(value).is_integer():
            raise ValueError(f"{where} is not an integer")
        if "min" in slot.options and value < slot.options["min"]:
            raise ValueError(f"{where} is below the minimum {slot.options['min']}")
        if "max" in slot.options and value > slot.options["max"]:
            raise ValueError(f"{where} is above the maximum {slot.options['max']}")
    elif slot.type == "BOOLEAN" and not isinstance(value, bool):
        raise ValueError(f"{where} is not a boolean")
    elif slot.type == "STRING" and not isinstance(value, str):
        raise ValueError(f"{where} is not a string")


# ---------------------------------------------------------------------------------------------
# A graph, and its two serialisations
# ---------------------------------------------------------------------------------------------

NODE_TITLE_HEIGHT = 30  # litegraph draws the title bar above ``pos``
SLOT_HEIGHT = 20
WIDGET_HEIGHT = 24
MULTILINE_HEIGHT = 54  # a multiline STRING's minimum height in frontend 1.32
MIN_NODE_WIDTH = 270
COLUMN_GAP = 80
ROW_GAP = 50


@dataclass
class Node:
    id: int
    layout: NodeLayout
    values: dict[str, Any]  # widget name -> value
    links: dict[str, tuple[int, int]]  # socket name -> (source node id, source output slot)
    title: str | None = None
    column: int = 0
    width: int = MIN_NODE_WIDTH
    height: int | None = None  # at least (and by default) the frontend's minimum for the schema
    pos: tuple[int, int] = (0, 0)
    order: int = 0

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, max(self.height or 0, min_height(self.layout)))


def min_height(layout: NodeLayout) -> int:
    """The frontend's computed minimum node height (measured in frontend 1.32.9)."""
    rows = max(len(layout.sockets), len(layout.outputs))
    widgets = 0
    for slot in layout.widgets:
        multiline = slot.type == "STRING" and slot.options.get("multiline")
        widgets += MULTILINE_HEIGHT if multiline else WIDGET_HEIGHT
        if has_control_widget(slot):
            widgets += WIDGET_HEIGHT
    return rows * SLOT_HEIGHT + widgets + (14 if layout.widgets else 6)


@dataclass
class Graph:
    name: str
    layouts: dict[str, NodeLayout]
    nodes: list[Node] = field(default_factory=list)

    def add(
        self,
        class_type: str,
        column: int,
        values: dict[str, Any] | None = None,
        links: dict[str, tuple[Node, int]] | None = None,
        title: str | None = None,
        width: int = MIN_NODE_WIDTH,
        height: int | None = None,
    ) -> Node:
        layout = self.layouts[class_type]
        values = dict(values or {})
        for name in values:
            layout.widget(name)  # raises, naming the node, if the schema lost the input
        full = {slot.name: values.get(slot.name, default_widget_value(slot)) for slot in layout.widgets}
        resolved = {}
        for socket, (source, slot) in (links or {}).items():
            layout.socket_index(socket)
            if slot >= len(source.layout.outputs):
                raise KeyError(f"{source.layout.class_type} has no output {slot}")
            resolved[socket] = (source.id, slot)
        missing = [s.name for s in layout.sockets if not s.optional and s.name not in resolved]
        if missing:
            raise ValueError(f"{self.name}: {class_type} needs its inputs {missing} connected")
        node = Node(len(self.nodes) + 1, layout, full, resolved, title, column, max(width, MIN_NODE_WIDTH), height)
        self.nodes.append(node)
        return node

    def by_id(self, node_id: int) -> Node:
        return self.nodes[node_id - 1]

    # -- layout -----------------------------------------------------------------------------

    def arrange(self) -> None:
        """Columns left to right, nodes stacked top to bottom in each column, no overlaps."""
        x = 0
        for column in sorted({node.column for node in self.nodes}):
            members = [node for node in self.nodes if node.column == column]
            y = 0
            for node in members:
                node.pos = (x, y)
                y += node.size[1] + NODE_TITLE_HEIGHT + ROW_GAP
            x += max(node.size[0] for node in members) + COLUMN_GAP

    def number_execution_order(self) -> None:
        """``order``: a topological order (sources first, then by id), as litegraph stores it."""
        remaining = {node.id: {source for source, _ in node.links.values()} for node in self.nodes}
        order = 0
        while remaining:
            ready = sorted(node_id for node_id, sources in remaining.items() if not sources & remaining.keys())
            if not ready:
                raise ValueError(f"{self.name}: the graph has a cycle")
            for node_id in ready:
                self.by_id(node_id).order = order
                order += 1
                del remaining[node_id]

    # -- serialisation ----------------------------------------------------------------------

    def link_table(self) -> list[list[Any]]:
        """Links as the frontend saves them: [id, from node, from slot, to node, to slot, type], by target."""
        table = []
        for node in self.nodes:
            for socket in node.layout.sockets:
                if socket.name in node.links:
                    source_id, source_slot = node.links[socket.name]
                    link_type = self.by_id(source_id).layout.outputs[source_slot][1]
                    table.append(
                        [len(table) + 1, source_id, source_slot, node.id, node.layout.socket_index(socket.name), link_type]
                    )
        return table

    def ui(self) -> dict[str, Any]:
        links = self.link_table()
        ui_nodes = []
        for node in self.nodes:
            inputs = []
            for socket in node.layout.sockets:
                entry = {"localized_name": socket.name, "name": socket.name}
                if socket.optional:
                    entry["shape"] = 7  # litegraph's hollow circle for optional inputs
                entry["type"] = socket.type
                entry["link"] = next((link[0] for link in links if link[3] == node.id and link[4] == len(inputs)), None)
                inputs.append(entry)
            for slot in node.layout.widgets:
                entry = {"localized_name": slot.name, "name": slot.name}
                if slot.optional:
                    entry["shape"] = 7
                entry.update(type=slot.type, widget={"name": slot.name}, link=None)
                inputs.append(entry)
            outputs = []
            for index, (name, output_type) in enumerate(node.layout.outputs):
                targets = [link[0] for link in links if link[1] == node.id and link[2] == index]
                outputs.append({"localized_name": name, "name": name, "type": output_type, "links": targets or None})
            entry = {
                "id": node.id,
                "type": node.layout.class_type,
                "pos": list(node.pos),
                "size": list(node.size),
                "flags": {},
                "order": node.order,
                "mode": 0,
                "inputs": inputs,
                "outputs": outputs,
            }
            if node.title:
                entry["title"] = node.title
            entry["properties"] = {"Node name for S&R": node.layout.class_type}
            values = []  # (the frontend writes [] for a node without widgets once it has loaded it)
            for slot in node.layout.widgets:
                values.append(node.values[slot.name])
                if has_control_widget(slot):
                    values.append(SEED_CONTROL)
            entry["widgets_values"] = values
            ui_nodes.append(entry)
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-visual-anagrams/example_workflows/{self.name}")),
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(links),
            "nodes": ui_nodes,
            "links": links,
            "groups": [],
            "config": {},
            "extra": {"ds": self.viewport(), "frontendVersion": FRONTEND_VERSION, "workflowRendererVersion": "LG"},
            "version": UI_FORMAT_VERSION,
        }

    def viewport(self, width: float = 1600, height: float = 900) -> dict[str, Any]:
        """A canvas offset and scale that show the whole graph in a 1600 x 900 window, clear of the
        frontend's side bar (left) and its menu, tabs and run bar (top)."""
        left, top, right_margin, bottom_margin = 90, 130, 30, 30
        right = max(node.pos[0] + node.size[0] for node in self.nodes)
        bottom = max(node.pos[1] + node.size[1] for node in self.nodes) + NODE_TITLE_HEIGHT
        scale = min(1.0, (width - left - right_margin) / right, (height - top - bottom_margin) / bottom)
        scale = int(scale * 100) / 100
        return {"scale": scale, "offset": [round(left / scale, 1), round(top / scale + NODE_TITLE_HEIGHT, 1)]}

    def api(self) -> dict[str, Any]:
        """What the frontend's ``graphToPrompt()`` sends: widget values, then links; no UI state."""
        prompt = {}
        for node in self.nodes:
            inputs: dict[str, Any] = {slot.name: node.values[slot.name] for slot in node.layout.widgets}
            for socket in node.layout.sockets:
                if socket.name in node.links:
                    source_id, source_slot = node.links[socket.name]
                    inputs[socket.name] = [str(source_id), source_slot]
            prompt[str(node.id)] = {
                "inputs": inputs,
                "class_type": node.layout.class_type,
                "_meta": {"title": node.title or node.layout.display_name},
            }
        return prompt


# ---------------------------------------------------------------------------------------------
# The graph of one illusion
# ---------------------------------------------------------------------------------------------

VIEW_NODE_PREFIX = "VisualAnagramsView_"
REQUIRED_NODE_TYPES = (
    "VisualAnagramsLoadT5",
    "VisualAnagramsPromptEncoder",
    "VisualAnagramsLoadStageI",
    "VisualAnagramsLoadStageII",
    "VisualAnagramsStageI",
    "VisualAnagramsStageII",
    "VisualAnagramsViewPreview",
    "SaveImage",
    "SaveAnimatedWEBP",
    "ImageScaleBy",
)


def node_types_used() -> list[str]:
    views = sorted({VIEW_NODE_PREFIX + view for illusion in WORKFLOWS for view, _ in illusion.views})
    return [*REQUIRED_NODE_TYPES, *views]


def illusion_graph(illusion: Illusion, layouts: dict[str, NodeLayout]) -> Graph:
    """DeepFloyd IF: Stage I at 64 px, Stage II to 256 px, the 256 px illusions saved and previewed."""
    if illusion.demo:
        return demo_graph(illusion, layouts)
    graph = Graph(illusion.name, layouts)
    prefix = f"visual_anagrams/{illusion.name}"

    # Column 0: the text encoder and the view chain. Column 1: the prompts.
    t5, views, prompts = add_views_and_prompts(graph, illusion, T5_LOADER, unload_encoder=True)
    # Column 2: the models. Column 3: the samplers.
    stage_1_model = graph.add("VisualAnagramsLoadStageI", 2, {"model": STAGE_I_MODEL, **LOADER}, width=300)
    stage_2_model = graph.add("VisualAnagramsLoadStageII", 2, {"model": STAGE_II_MODEL, **LOADER}, width=300)
    stage_1 = graph.add("VisualAnagramsStageI", 3, STAGE_I,
                        {"model": (stage_1_model, 0), "prompts": (prompts, 0), "views": (views, 0)}, width=300)
    stage_2 = graph.add("VisualAnagramsStageII", 3, STAGE_II,
                        {"model": (stage_2_model, 0), "prompts": (prompts, 0), "views": (views, 0),
                         "image": (stage_1, 0)}, width=300)
    # Columns 4 and 5: save and preview.
    add_outputs(graph, stage_2, views, prompts, column=4, illusion_title="Save illusions (256 px)",
                prefixes=(prefix, f"{prefix}_views", f"{prefix}_animation"))
    return finish(graph)


def demo_graph(illusion: Illusion, layouts: dict[str, NodeLayout]) -> Graph:
    """The embedded digits model: T5 and Stage I from the pack itself, 64 px illusions upscaled 4x to be seen."""
    graph = Graph(illusion.name, layouts)
    t5, views, prompts = add_views_and_prompts(graph, illusion, {**T5_LOADER, "encoder": DEMO_MODEL},
                                               unload_encoder=False)
    model = graph.add("VisualAnagramsLoadStageI", 2, {"model": DEMO_MODEL, **LOADER}, width=300)
    stage_1 = graph.add("VisualAnagramsStageI", 2, DEMO_STAGE_I,
                        {"model": (model, 0), "prompts": (prompts, 0), "views": (views, 0)}, width=300)
    upscaled = graph.add("ImageScaleBy", 2, DEMO_UPSCALE, {"image": (stage_1, 0)}, title="Upscale 4x (to see it)",
                         width=300)
    add_outputs(graph, upscaled, views, prompts, column=3, illusion_title="Save illusions",
                prefixes=(f"{DEMO_PREFIX}/illusion", f"{DEMO_PREFIX}/views", f"{DEMO_PREFIX}/animation"))
    return finish(graph)


def add_views_and_prompts(graph: Graph, illusion: Illusion, t5_values: dict[str, Any], *,
                          unload_encoder: bool) -> tuple[Node, Node, Node]:
    """Column 0: the T5 loader, then the view chain (view k pairs with prompt k); column 1: the prompt
    encoder. Returns (T5 loader, last view, prompt encoder)."""
    t5 = graph.add("VisualAnagramsLoadT5", 0, t5_values, width=300)
    views = None
    for index, (view, params) in enumerate(illusion.views, start=1):
        class_type = VIEW_NODE_PREFIX + view
        label = graph.layouts[class_type].display_name.removeprefix("View: ")
        views = graph.add(class_type, 0, params, {"views": (views, 0)} if views else None,
                          title=f"View {index}: {label}", width=300)
    prompts_values = {"style": illusion.style, "unload_encoder": unload_encoder}
    prompts_values.update({f"prompt_{k}": prompt for k, prompt in enumerate(illusion.prompts, start=1)})
    prompts = graph.add("VisualAnagramsPromptEncoder", 1, prompts_values,
                        {"text_encoder": (t5, 0), "views": (views, 0)}, width=400)
    return t5, views, prompts


def add_outputs(graph: Graph, image: Node, views: Node, prompts: Node, *, column: int, illusion_title: str,
                prefixes: tuple[str, str, str]) -> None:
    """Column ``column``: save the illusions, then the view preview (tall enough for its viewer, with
    nothing below it to overlap); the next column: save its grid and its animation."""
    illusion_prefix, grid_prefix, animation_prefix = prefixes
    graph.add("SaveImage", column, {"filename_prefix": illusion_prefix}, {"images": (image, 0)},
              title=illusion_title, width=360, height=400)
    preview = graph.add("VisualAnagramsViewPreview", column, PREVIEW,
                        {"image": (image, 0), "views": (views, 0), "prompts": (prompts, 0)},
                        width=PREVIEW_SIZE[0], height=PREVIEW_SIZE[1])
    graph.add("SaveImage", column + 1, {"filename_prefix": grid_prefix}, {"images": (preview, 0)},
              title="Save view grid", width=440, height=400)
    graph.add("SaveAnimatedWEBP", column + 1, {"filename_prefix": animation_prefix, **ANIMATION},
              {"images": (preview, 1)}, title="Save animation", width=380, height=420)


def finish(graph: Graph) -> Graph:
    """Lay the graph out, number its execution order and check every widget value against the schema
    (the Hub ids and the embedded model are among the loaders' options)."""
    graph.arrange()
    graph.number_execution_order()
    for node in graph.nodes:
        for slot in node.layout.widgets:
            check_widget_value(node.layout.class_type, slot, node.values[slot.name])
    return graph


# ---------------------------------------------------------------------------------------------
# Thumbnails: what the views do, drawn with the pack's own views on a test picture
# ---------------------------------------------------------------------------------------------


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def test_picture(size: int = 256):
    """A picture whose orientation, colours and detail all show: sky and sand, a sun, a big 'R'."""
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(picture)
    for y in range(size):  # sky blue at the top to sand at the bottom
        t = y / (size - 1)
        draw.line([(0, y), (size, y)], fill=(int(90 + 150 * t), int(160 + 50 * t), int(235 - 120 * t)))
    draw.ellipse([size * 0.06, size * 0.06, size * 0.28, size * 0.28], fill=(255, 205, 40))
    font = _font(int(size * 0.78))
    draw.text((size * 0.55, size * 0.55), "R", font=font, anchor="mm", fill=(150, 25, 35),
              stroke_width=max(2, size // 40), stroke_fill=(150, 25, 35))
    return picture


def _wrap(text: str, font, width: int, max_lines: int) -> list[str]:
    """``text`` in lines no wider than ``width`` px (the last line cut with an ellipsis if needed)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    for index, line in enumerate(lines):
        while font.getlength(line) > width and len(line) > 1:
            line = line[:-2] + "…"
        lines[index] = line
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1].rstrip("…") + "…"
    return lines


def demo_result(illusion: Illusion):
    """The demo workflow's first illusion (its seed, steps and guidance), sampled with the embedded model
    through the pack's own loading and sampling code: (1, 3, 64, 64) in [-1, 1]."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_evaluate", REPO / "demo" / "evaluate.py")
    evaluate = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = evaluate  # dataclasses look their module up there
    spec.loader.exec_module(evaluate)
    model = evaluate.load_demo()
    prompts = [f"{illusion.style} {prompt}".strip() for prompt in illusion.prompts]
    return evaluate.sample(model, [name for name, _ in illusion.views], prompts, seeds=1, seed=DEMO_STAGE_I["seed"],
                           steps=DEMO_STAGE_I["steps"], guidance=DEMO_STAGE_I["guidance"])


def thumbnail(illusion: Illusion, views_module) -> bytes:
    """The views of ``illusion`` applied to :func:`test_picture` (for a demo workflow: to the result it
    draws), side by side, captioned with the prompts."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image, ImageDraw

    count = len(illusion.views)
    margin, gap, line_height = 12, 10, 16
    panel = (THUMBNAIL_WIDTH - 2 * margin - (count - 1) * gap) // count
    if illusion.demo:
        pixels = F.interpolate(demo_result(illusion), size=(256, 256), mode="bicubic", align_corners=False)
        note = "The demo model's own result (seed 0) under each view."
    else:
        picture = test_picture(256)
        pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        note = "Diagram: the views applied to a test picture, not a generated result."
    views = [views_module.make_view(name, **params) for name, params in illusion.views]

    title_font, caption_font, label_font, note_font = _font(14), _font(13), _font(12), _font(11)
    labels = [_wrap(f"{index}. {view.label}", label_font, panel, 2) for index, view in enumerate(views, start=1)]
    captions = [_wrap(f"{illusion.style} {prompt}".strip(), caption_font, panel, 4) for prompt in illusion.prompts]
    label_height = line_height * max(len(lines) for lines in labels)
    caption_height = 8 + label_height + line_height * max(len(lines) for lines in captions)
    header, footer = 28, 24
    height = header + panel + caption_height + footer
    canvas = Image.new("RGB", (THUMBNAIL_WIDTH, height), "white")
    draw = ImageDraw.Draw(canvas)
    kind = "Hybrid image" if all(view.kind == "factorized" for view in views) else "Visual anagram"
    title = f"{kind}: {illusion.name.replace('_', ' ')}" + (" (embedded model)" if illusion.demo else "")
    draw.text((margin, 7), title, font=title_font, fill=(30, 30, 30))

    for index, (view, label, caption) in enumerate(zip(views, labels, captions)):
        shown = view.preview(pixels)[0].permute(1, 2, 0)
        shown = ((shown.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        x = margin + index * (panel + gap)
        canvas.paste(Image.fromarray(shown).resize((panel, panel), Image.LANCZOS), (x, header))
        y = header + panel + 6
        for line in label:
            draw.text((x, y), line, font=label_font, fill=(110, 110, 110))
            y += line_height
        y = header + panel + 6 + label_height
        for line in caption:
            draw.text((x, y), line, font=caption_font, fill=(20, 20, 20))
            y += line_height
    draw.text((margin, height - footer + 6), note, font=note_font, fill=(140, 140, 140))

    for quality in (88, 80, 70, 60):
        buffer = io.BytesIO()
        canvas.save(buffer, "JPEG", quality=quality, optimize=True, progressive=True)
        if buffer.tell() <= THUMBNAIL_MAX_BYTES:
            return buffer.getvalue()
    raise ValueError(f"{illusion.name}: the thumbnail does not fit in {THUMBNAIL_MAX_BYTES} bytes")


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def build(comfyui_dir: Path | str | None = None) -> dict[Path, str]:
    """Every JSON file this script writes, path -> text."""
    node_classes = load_node_classes(comfyui_dir)
    missing = [name for name in node_types_used() if name not in node_classes]
    if missing:
        raise KeyError(f"node types not found in ComfyUI or the pack: {missing}")
    layouts = {name: node_layout(node_info(name, node_classes)) for name in node_types_used()}
    files = {}
    for illusion in WORKFLOWS:
        graph = illusion_graph(illusion, layouts)
        files[UI_DIR / f"{illusion.name}.json"] = to_json(graph.ui())
        files[API_DIR / f"{illusion.name}.json"] = to_json(graph.api())
    return files


def thumbnail_paths() -> dict[Path, Illusion]:
    return {UI_DIR / f"{illusion.name}.jpg": illusion for illusion in WORKFLOWS}


def check_thumbnail(path: Path) -> str | None:
    """A problem with the thumbnail at ``path``, or None."""
    from PIL import Image

    if not path.is_file():
        return "missing"
    if path.stat().st_size > THUMBNAIL_MAX_BYTES:
        return f"{path.stat().st_size} bytes, over {THUMBNAIL_MAX_BYTES}"
    with Image.open(path) as image:
        if image.format != "JPEG":
            return f"a {image.format}, not a JPEG"
        if image.width != THUMBNAIL_WIDTH:
            return f"{image.width} px wide, not {THUMBNAIL_WIDTH}"
    return None


def stale_files() -> list[Path]:
    """JSON or thumbnail files in the output folders that no workflow produces."""
    expected = {UI_DIR / f"{i.name}{suffix}" for i in WORKFLOWS for suffix in (".json", ".jpg")}
    expected |= {API_DIR / f"{i.name}.json" for i in WORKFLOWS}
    found = [*UI_DIR.glob("*.json"), *UI_DIR.glob("*.jpg"), *UI_DIR.glob("*.webp"), *API_DIR.glob("*.json")]
    return sorted(path for path in found if path not in expected)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed files differ")
    parser.add_argument("--comfyui", help="ComfyUI directory (default: $COMFYUI_DIR, else .cache/comfyui)")
    parser.add_argument("--no-thumbnails", action="store_true", help="write the JSON files only")
    args = parser.parse_args(argv)

    try:
        files = build(args.comfyui)
    except ComfyUIUnavailable as error:
        print(f"build_workflows: {error}", file=sys.stderr)
        return 2

    if args.check:
        problems = []
        for path, text in files.items():
            if not path.is_file():
                problems.append(f"{path.relative_to(REPO)}: missing")
            elif path.read_text(encoding="utf-8") != text:
                problems.append(f"{path.relative_to(REPO)}: differs from what the script writes")
        for path in thumbnail_paths():
            problem = check_thumbnail(path)
            if problem:
                problems.append(f"{path.relative_to(REPO)}: {problem}")
        problems += [f"{path.relative_to(REPO)}: not produced by any workflow" for path in stale_files()]
        if problems:
            print("build_workflows --check: the workflow files are out of date "
                  "(run python scripts/build_workflows.py):", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            return 1
        print(f"build_workflows --check: {len(files)} workflow files and {len(WORKFLOWS)} thumbnails up to date")
        return 0

    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    written = len(files)
    if not args.no_thumbnails:
        views_module = importlib.import_module(f"{_load_pack().__name__}.views")
        for path, illusion in thumbnail_paths().items():
            path.write_bytes(thumbnail(illusion, views_module))
            written += 1
    for path in stale_files():
        print(f"build_workflows: {path.relative_to(REPO)} is not produced by any workflow; delete it", file=sys.stderr)
    print(f"build_workflows: wrote {written} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
