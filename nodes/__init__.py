"""ComfyUI adapters (V3 schema). Thin: schema, validation, memory and progress;
the maths lives in ``sampling`` and ``views``."""

from comfy_api.latest import ComfyExtension, io

from .loaders import LoadStageI, LoadStageII, LoadStageIII, LoadTextEncoder
from .preview import ViewPreview
from .prompts import AnagramPromptEncoder
from .samplers import AnagramStageI, AnagramStageII
from .upscale import NaiveStageIII
from .views import VIEW_NODES


class VisualAnagramsExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [
            LoadStageI,
            LoadStageII,
            LoadStageIII,
            LoadTextEncoder,
            AnagramPromptEncoder,
            *VIEW_NODES,
            AnagramStageI,
            AnagramStageII,
            NaiveStageIII,
            ViewPreview,
        ]
