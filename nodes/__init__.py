"""ComfyUI adapters (V3 schema). Thin: schema, validation, memory and progress;
the maths lives in ``sampling`` and ``views``."""

from comfy_api.latest import ComfyExtension, io

from .clip_loader import LoadCLIP
from .example_pictures import install_example_pictures
from .loaders import LoadStageI, LoadStageII, LoadStageIII, LoadTextEncoder
from .preview import ViewPreview
from .prompt_guard import install_prompt_guard
from .prompts import AnagramPromptEncoder
from .samplers import AnagramStageI, AnagramStageII
from .scoring import IllusionScore
from .upscale import NaiveStageIII
from .views import VIEW_NODES

#: Every node of the pack, in the order the node library lists them.
NODE_CLASSES: list[type[io.ComfyNode]] = [
    LoadStageI,
    LoadStageII,
    LoadStageIII,
    LoadTextEncoder,
    LoadCLIP,
    AnagramPromptEncoder,
    *VIEW_NODES,
    AnagramStageI,
    AnagramStageII,
    IllusionScore,
    NaiveStageIII,
    ViewPreview,
]


class VisualAnagramsExtension(ComfyExtension):
    async def on_load(self) -> None:
        install_example_pictures()
        install_prompt_guard()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODE_CLASSES)
