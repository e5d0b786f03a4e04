"""What arrives through a socket is what a link brings, not a value typed into API JSON.

On the canvas a socket only takes a link. API JSON can put a literal where the link belongs
(``"views": 3``, ``"model": "tiny-IF-I"``, ``"prompts": {...}``, ``"image": null``), and ComfyUI
checks literals only against its own widget types (INT, FLOAT, STRING, BOOLEAN, combos): for any
other type the literal reaches the node's ``execute`` as it is, and ends in an AttributeError far
inside. Every node of the pack calls :func:`check_sockets` first; it reads the node's schema, so it
knows each node's sockets without a list per node.

A link can only bring what the output at its other end produced (ComfyUI refuses a link between
different types), so telling a literal from a link is exactly telling a JSON value from anything
else.
"""

from __future__ import annotations

from typing import Any

from comfy_api.latest import io

from .labels import node_label
from .types import ClipScorer, Prompts, StageIIIModel, StageIIModel, StageIModel, TextEncoder, Views

#: The socket types checked: the pack's own types, IMAGE and MASK.
SOCKET_TYPES = frozenset(
    str(kind.io_type)
    for kind in (StageIModel, StageIIModel, StageIIIModel, TextEncoder, ClipScorer, Views, Prompts, io.Image, io.Mask)
)

#: What JSON can carry: anything else came through a link.
JSON_VALUES = (type(None), bool, int, float, str, list, dict)

#: Said once per input, because "link" means nothing to someone writing API JSON.
LINK_SYNTAX = 'in API JSON a link is ["<node id>", <output index>]'


def input_title(spec: io.Input) -> str:
    """An input as the canvas names it, with its API name when that differs."""
    if spec.display_name and spec.display_name != spec.id:
        return f"{spec.display_name} ({spec.id})"
    return spec.id


def describe_literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the value {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the text {shown!a}"
    return "a list" if isinstance(value, list) else "an object"


def _producers(io_type: str) -> str:
    """The pack's nodes whose output has this type, by display name."""
    # The node list lives in the package's __init__, which imports this module: read it when needed.
    from . import NODE_CLASSES

    names = []
    for node_cls in NODE_CLASSES:
        schema = node_cls.GET_SCHEMA()
        if any(str(output.io_type) == io_type for output in schema.outputs) and schema.display_name not in names:
            names.append(schema.display_name)
    if io_type == str(Views.io_type):
        return "a View node's output"
    if io_type == str(io.Mask.io_type):
        return "a MASK output (such as Load Image's)"
    if len(names) == 1:
        return f"the output of {names[0]}"
    if io_type == str(io.Image.io_type):
        return f"an IMAGE output (such as {names[0]}'s)"
    return "an output of type " + io_type + (f" ({', '.join(names)})" if names else "")


def check_sockets(node_cls: type[io.ComfyNode], **values: Any) -> None:
    """Raise a TypeError naming the node, the input and the fix when a socket got a literal.

    Pass the node's inputs by name; widgets are ignored. An optional socket given null counts
    as not connected (the node sees None either way).
    """
    schema = node_cls.SCHEMA or node_cls.GET_SCHEMA()
    for spec in schema.inputs:
        if spec.id not in values or str(spec.io_type) not in SOCKET_TYPES:
            continue
        value = values[spec.id]
        if value is None and spec.optional:
            continue
        if isinstance(value, JSON_VALUES):
            raise TypeError(
                f"{node_label(node_cls)}: {input_title(spec)}: got {describe_literal(value)} where a link is "
                f"expected. Connect {_producers(str(spec.io_type))} to it ({LINK_SYNTAX})."
            )
