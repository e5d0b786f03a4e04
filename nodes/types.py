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
Views = io.Custom("VA_VIEWS")  # a ViewChain: the views in prompt order, with their weights
Prompts = io.Custom("VA_PROMPTS")  # EncodedPrompts
ClipScorer = io.Custom("VA_CLIP")  # a ModelHandle of a CLIP scorer (the interface of sampling/clip_models.py)


class ViewChain(tuple):
    """The views of an illusion in prompt order (a tuple of views), each with its weight in the mix.

    The weights travel with the views, so view k's weight stays with view k however the chain is
    built. Weights of 1.0 everywhere are the paper's plain mean.
    """

    weights: tuple[float, ...]

    def __new__(cls, views=(), weights=None):
        chain = super().__new__(cls, views)
        chain.weights = tuple(float(w) for w in weights) if weights is not None else (1.0,) * len(chain)
        if len(chain.weights) != len(chain):
            raise ValueError(f"{len(chain.weights)} weights for {len(chain)} views")
        return chain

    def then(self, view, weight: float = 1.0) -> ViewChain:
        """This chain with ``view`` appended."""
        return ViewChain((*self, view), (*self.weights, weight))

    def sampler_weights(self) -> list[float] | None:
        """The weights for the samplers: None when all are 1.0, so the default mix is the plain mean, bit for bit."""
        return None if all(weight == 1.0 for weight in self.weights) else list(self.weights)


def view_weights(views) -> list[float] | None:
    """The sampler weights of what came through a views socket (a chain of an older pack: none)."""
    return views.sampler_weights() if isinstance(views, ViewChain) else None


@dataclass(frozen=True)
class EncodedPrompts:
    """Per-view prompt embeddings plus the texts, for captions and Stage III."""

    embeddings: PromptEmbeddings
    texts: tuple[str, ...]  # the prompts as written (style prefix applied), view order
