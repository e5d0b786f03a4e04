"""A graph in its two file formats: the UI format the frontend saves (and its template browser opens), and
the API format its ``graphToPrompt()`` sends to ``POST /prompt``."""

from __future__ import annotations

import uuid
from typing import Any

from .graph import NODE_TITLE_HEIGHT, Graph
from .node_schema import has_control_widget

#: The frontend version ComfyUI 0.3.75 pins (comfyui-frontend-package); written into
#: ``extra.frontendVersion`` as the frontend does when it saves a workflow.
FRONTEND_VERSION = "1.32.9"
UI_FORMAT_VERSION = 0.4
OPTIONAL_INPUT_SHAPE = 7  # litegraph's hollow circle for optional inputs


def link_table(graph: Graph) -> list[list[Any]]:
    """Links as the frontend saves them: [id, from node, from slot, to node, to slot, type], by target."""
    table = []
    for node in graph.nodes:
        for socket in node.layout.sockets:
            if socket.name in node.links:
                source_id, source_slot = node.links[socket.name]
                link_type = graph.by_id(source_id).layout.outputs[source_slot][1]
                table.append(
                    [len(table) + 1, source_id, source_slot, node.id, node.layout.socket_index(socket.name), link_type]
                )
    return table


def to_ui_format(graph: Graph, control_after_generate: str) -> dict[str, Any]:
    """The workflow as the frontend saves it; every "control after generate" widget set to
    ``control_after_generate`` (``fixed``, ``randomize``, ...)."""
    links = link_table(graph)
    ui_nodes = []
    for node in graph.nodes:
        inputs = []
        for socket in node.layout.sockets:
            entry = {"localized_name": socket.name, "name": socket.name}
            if socket.optional:
                entry["shape"] = OPTIONAL_INPUT_SHAPE
            entry["type"] = socket.type
            entry["link"] = next((link[0] for link in links if link[3] == node.id and link[4] == len(inputs)), None)
            inputs.append(entry)
        for slot in node.layout.widgets:
            entry = {"localized_name": slot.options.get("localized_name", slot.name), "name": slot.name}
            if slot.optional:
                entry["shape"] = OPTIONAL_INPUT_SHAPE
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
                values.append(control_after_generate)
        entry["widgets_values"] = values
        ui_nodes.append(entry)
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-visual-anagrams/example_workflows/{graph.name}")),
        "revision": 0,
        "last_node_id": len(graph.nodes),
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": viewport(graph), "frontendVersion": FRONTEND_VERSION, "workflowRendererVersion": "LG"},
        "version": UI_FORMAT_VERSION,
    }


def viewport(graph: Graph, width: float = 1600, height: float = 900) -> dict[str, Any]:
    """A canvas offset and scale that show the whole graph in a 1600 x 900 window, clear of the
    frontend's side bar (left) and its menu, tabs and run bar (top)."""
    left, top, right_margin, bottom_margin = 90, 130, 30, 30
    right = max(node.pos[0] + node.size[0] for node in graph.nodes)
    bottom = max(node.pos[1] + node.size[1] for node in graph.nodes) + NODE_TITLE_HEIGHT
    scale = min(1.0, (width - left - right_margin) / right, (height - top - bottom_margin) / bottom)
    scale = int(scale * 100) / 100
    return {"scale": scale, "offset": [round(left / scale, 1), round(top / scale + NODE_TITLE_HEIGHT, 1)]}


def to_api_format(graph: Graph) -> dict[str, Any]:
    """What the frontend's ``graphToPrompt()`` sends: widget values, then links; no UI state."""
    prompt = {}
    for node in graph.nodes:
        inputs: dict[str, Any] = {
            slot.name: node.values[slot.name] for slot in node.layout.widgets if not slot.frontend_only
        }
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
