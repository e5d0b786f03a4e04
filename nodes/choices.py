"""Combo values outside their lists, refused before a prompt runs.

ComfyUI 0.3.75 checks a combo's value against its options only for V1 nodes, whose INPUT_TYPES give
the options list as the input's type; a V3 node's combo reports the type "COMBO", so its value is
never checked (``validate_inputs`` in execution.py tests ``isinstance(input_type, list)``). Any
string typed into API JSON, ``../../etc/passwd`` included, reaches the node. The prompt guard
(prompt_guard.py) asks this module for the pack's nodes before ComfyUI validates the prompt, and
answers with ComfyUI's own error type, ``value_not_in_list``, listing the valid choices.

Inputs a node validates itself (the arguments of its ``validate_inputs``, such as the loaders' model
lists) are left to it; linked inputs are left to the link.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from comfy_api.latest import io

from .labels import node_label
from .sockets import input_title

#: Choices listed in a message, at most; longer lists say how many there are.
LISTED_CHOICES = 20


def _self_validated(node_cls: type[io.ComfyNode]) -> set[str]:
    """The inputs a node's own validate_inputs takes by name."""
    if node_cls.validate_inputs.__func__ is io.ComfyNode.validate_inputs.__func__:
        return set()
    return set(inspect.signature(node_cls.validate_inputs).parameters)


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def _choices_text(options: list) -> str:
    if len(options) > LISTED_CHOICES:
        return f"one of the {len(options)} choices the node lists"
    return "one of: " + ", ".join(repr(option) for option in options)


def unknown_choices(node_cls: type[io.ComfyNode], inputs: dict[str, Any]) -> list[dict]:
    """ComfyUI-style errors for the combo values of one node that are not among its options."""
    schema = node_cls.FINALIZE_SCHEMA()  # fresh, as ComfyUI's validation reads it: model lists change
    skip = _self_validated(node_cls)
    errors = []
    for spec in schema.inputs:
        if not isinstance(spec, io.Combo.Input) or spec.id in skip or spec.id not in inputs:
            continue
        value = inputs[spec.id]
        if isinstance(value, dict) and "__value__" in value:
            value = value["__value__"]
        if _is_link(value) or value in spec.options:
            continue
        shown = ascii(value) if isinstance(value, str) else repr(value)
        message = (
            f"{node_label(node_cls)}: {input_title(spec)}: {shown[:80]} is not one of its choices. "
            f"Choose {_choices_text(spec.options)}."
        )
        errors.append(
            {
                "type": "value_not_in_list",
                "message": message,
                "details": message,
                "extra_info": {"input_name": spec.id, "received_value": value},
            }
        )
    return errors


def check_choice(label: str, input_name: str, value: object, options: Sequence[str]) -> None:
    """ComfyUI does not check V3 combo values against their options: a node checks its own."""
    if value not in options:
        raise ValueError(f"{label}: {input_name} {value!r} is not one of {', '.join(options)}: pick one of those")
