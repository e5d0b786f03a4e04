"""ComfyUI adapters (V3 schema). Thin: schema, validation, memory and progress;
the maths lives in ``sampling`` and ``views``.

Only finished nodes are registered here.
"""

from comfy_api.latest import ComfyExtension, io


class VisualAnagramsExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return []
