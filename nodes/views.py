"""View nodes: one node per view, each with its own parameters, chained into an ordered list.

The k-th view of the chain pairs with the k-th prompt of the prompt encoder.
The nodes are generated from the view registry, so every view's widgets,
defaults and tooltips come from its ``PARAMS``.
"""

from __future__ import annotations

import math
from typing import ClassVar

from comfy_api.latest import io

from ..sampling.inputs import MAX_VIEWS
from ..views import VIEW_CLASSES, ParamSpec, View, ViewError, make_view
from .labels import node_label
from .sockets import check_sockets
from .types import CATEGORY, ViewChain, Views

WEIGHT_TOOLTIP = (
    "How much this view's noise estimate counts in the mix (relative to the other views' weights; the "
    "paper: all 1). Raise it when this view's subject is too faint, lower it when it dominates."
)


def _widget(spec: ParamSpec) -> io.Input:
    tooltip = f"{spec.description} Allowed: {spec.allowed()}."
    if spec.type is str:
        return io.Combo.Input(spec.name, options=list(spec.choices), default=spec.default, tooltip=tooltip)
    if spec.type is int:
        # A view's seed fixes its arrangement: it must not re-roll after every run, which the
        # frontend does to any INT named "seed" unless told otherwise.
        return io.Int.Input(
            spec.name, default=spec.default, min=spec.min, max=spec.max, tooltip=tooltip, control_after_generate=False
        )
    return io.Float.Input(spec.name, default=spec.default, min=spec.min, max=spec.max, step=0.01, tooltip=tooltip)


class ViewNode(io.ComfyNode):
    """Adds one view to the chain. Subclasses name the view class."""

    view_class: ClassVar[type[View]]

    @classmethod
    def define_schema(cls) -> io.Schema:
        view_class = cls.view_class
        description = view_class.description
        if view_class.is_failure:
            description += f" Documented failure of the paper: {view_class.failure_note}"
        elif view_class.kind == "factorized":
            description += " Factorized view for hybrid images: use it with reduction 'sum' (the samplers' 'auto')."
        return io.Schema(
            node_id=f"VisualAnagramsView_{view_class.name}",
            display_name=f"View: {view_class.label}",
            category=f"{CATEGORY}/views" + ("/failures" if view_class.is_failure else ""),
            description=description,
            inputs=[
                Views.Input(
                    "views",
                    display_name="views before this one",
                    optional=True,
                    tooltip="Earlier views of the illusion. This view goes after them: view k pairs with prompt k.",
                ),
                *(_widget(spec) for spec in view_class.PARAMS),
                # Optional and last, so workflows saved before it still load (and validate) unchanged.
                io.Float.Input(
                    "weight", default=1.0, min=0.0, max=10.0, step=0.05, optional=True, tooltip=WEIGHT_TOOLTIP
                ),
            ],
            outputs=[
                Views.Output(
                    display_name="views (this one last)",
                    tooltip="The chain with this view appended: wire it to the next view node, or to the prompt "
                    "encoder, the samplers and the view preview.",
                )
            ],
        )

    @classmethod
    def execute(cls, views=None, weight=1.0, **params) -> io.NodeOutput:
        check_sockets(cls, views=views)
        chain = views if isinstance(views, ViewChain) else ViewChain(views or ())
        label = node_label(cls)
        if len(chain) >= MAX_VIEWS:
            raise ValueError(
                f"{label}: the chain already holds {len(chain)} views; an illusion takes at most {MAX_VIEWS}. "
                "Remove a view node from the chain."
            )
        try:
            view = make_view(cls.view_class.name, **params)
        except ViewError as error:
            raise ValueError(f"{label}: {error}") from error
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"{label}: weight: must be a number >= 0, got {weight}")
        return io.NodeOutput(chain.then(view, weight))


VIEW_NODES: list[type[io.ComfyNode]] = [
    type(f"View_{name}", (ViewNode,), {"view_class": view_class}) for name, view_class in VIEW_CLASSES.items()
]
