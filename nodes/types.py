"""The pack's socket types and what travels through them.

Each IF stage has a type of its own, so the canvas (and ComfyUI's prompt
validation for API graphs) refuses a Stage II model wired into Stage I.
"""

from __future__ import annotations

from dataclasses import dataclass

from comfy_api.latest import io

from ..sampling import PromptEmbeddings

CATEGORY = "visual_anagrams"

StageIModel = io.Custom("VA_IF_STAGE_I")
StageIIModel = io.Custom("VA_IF_STAGE_II")
StageIIIModel = io.Custom("VA_IF_STAGE_III")
TextEncoder = io.Custom("VA_T5_ENCODER")
Views = io.Custom("VA_VIEWS")  # a tuple of views, in prompt order
Prompts = io.Custom("VA_PROMPTS")  # EncodedPrompts


@dataclass(frozen=True)
class EncodedPrompts:
    """Per-view prompt embeddings plus the texts, for captions and Stage III."""

    embeddings: PromptEmbeddings
    texts: tuple[str, ...]  # the prompts as written (style prefix applied), view order
