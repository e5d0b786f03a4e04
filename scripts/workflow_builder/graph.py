"""A workflow graph: nodes built from their schemas, the links between them, their execution order and
where each sits on the canvas (columns left to right, no overlaps)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .node_schema import NodeLayout, default_widget_value, has_control_widget

# Sizes in canvas pixels, as frontend 1.32.9 draws them.
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
