"""Error labels: every message a node raises starts with the node's display name, as the canvas shows it.

The display name has one home, the node's schema; messages read it from there instead of restating it.
"""

from __future__ import annotations

from comfy_api.latest import io


def node_label(node_cls: type[io.ComfyNode]) -> str:
    """The node's display name (its node id when it has none)."""
    # ComfyUI caches the finalized schema on the class once it has built it (SCHEMA); before that, build it.
    schema = node_cls.SCHEMA or node_cls.GET_SCHEMA()
    return schema.display_name or schema.node_id
