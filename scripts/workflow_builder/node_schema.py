"""A node schema (its ``/object_info``) read the way the frontend reads it: which inputs are sockets, which
are widgets, what a widget holds by default and which values it accepts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Input types the frontend (1.32) draws as widgets; every other type is a socket. IMAGEUPLOAD is the
#: frontend's own (see UPLOAD_OPTIONS).
WIDGET_TYPES = {"INT", "FLOAT", "BOOLEAN", "STRING", "COMBO", "IMAGEUPLOAD"}
#: INT inputs with these names get a "control after generate" widget unless the schema says otherwise.
SEED_NAMES = ("seed", "noise_seed")
#: Combo options that make the frontend add an upload button (its Comfy.UploadImage extension) after the
#: required inputs: a widget named "upload", saved in ``widgets_values`` as "image", never sent to the server.
UPLOAD_OPTIONS = ("image_upload", "animated_image_upload", "video_upload")
UPLOAD_WIDGET = "upload"
UPLOAD_WIDGET_VALUE = "image"
UPLOAD_WIDGET_LABEL = "choose file to upload"  # its localized name, as the frontend saves it


@dataclass(frozen=True)
class Slot:
    name: str
    type: str
    optional: bool
    options: dict[str, Any]
    frontend_only: bool = False  # a widget of the frontend's own, not an input of the node (the upload button)


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

    def output_slot(self, name: str) -> int:
        for index, (output_name, _) in enumerate(self.outputs):
            if output_name == name:
                return index
        raise KeyError(f"{self.class_type} has no output '{name}' (outputs: {[name for name, _ in self.outputs]})")

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
        if group == "required" and any(s.type == "COMBO" and _has_upload(s) for s in slots):
            upload = {"default": UPLOAD_WIDGET_VALUE, "localized_name": UPLOAD_WIDGET_LABEL}
            slots.append(Slot(UPLOAD_WIDGET, "IMAGEUPLOAD", False, upload, frontend_only=True))
    sockets = tuple(s for s in slots if s.type not in WIDGET_TYPES or s.options.get("forceInput"))
    widgets = tuple(s for s in slots if s not in sockets)
    names = info.get("output_name") or info["output"]
    return NodeLayout(
        class_type=info["name"],
        display_name=info.get("display_name") or info["name"],
        sockets=sockets,
        widgets=widgets,
        outputs=tuple(zip(names, info["output"], strict=True)),
    )


def _has_upload(slot: Slot) -> bool:
    return any(slot.options.get(option) for option in UPLOAD_OPTIONS)


def default_widget_value(slot: Slot) -> Any:
    if "default" in slot.options:
        return slot.options["default"]
    if slot.type == "COMBO":
        return slot.options["options"][0]
    return {"INT": 0, "FLOAT": 0.0, "BOOLEAN": False, "STRING": ""}[slot.type]


def check_widget_value(class_type: str, slot: Slot, value: Any) -> None:
    """Raise ValueError unless ``value`` is allowed by the schema (combo options, number bounds).

    Model names are checked like any combo: the examples' Hub ids and the embedded demo model are among
    the loaders' options on every machine, whatever its model folders hold. A picture's name is not: the
    options are the files of this machine's input folder (examples.py names the pictures every ComfyUI
    has there, its own and the pack's).
    """
    where = f"{class_type}.{slot.name}={value!r}"
    if slot.frontend_only:
        if value != slot.options["default"]:
            raise ValueError(f"{where}: the frontend saves {slot.options['default']!r} here")
    elif slot.type == "COMBO" and _has_upload(slot):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where} is not a file name")
    elif slot.type == "COMBO":
        if value not in slot.options["options"]:
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
