"""API-format graphs over the tiny offline models, for the tests that queue prompts on a real ComfyUI.

Every such test wires the same front: the T5 loader ("1"), a chain of two views ("2" -> "3"), the prompt
encoder ("4"), then Stage I ("5" loader, "6" sampler) and Stage II ("7" loader, "8" sampler). The pieces
here build those nodes under those ids, so a test spells out only what it changes::

    graph = {**prompt_nodes(), **stage_1_nodes(steps=2), "9": save(["6", 0], "va/stage1")}
"""

from __future__ import annotations

from typing import Any

T5 = "VisualAnagramsLoadT5"
STAGE_I_LOADER = "VisualAnagramsLoadStageI"
STAGE_II_LOADER = "VisualAnagramsLoadStageII"

#: Every prompt box of the encoder left empty (tests fill the ones their views need).
NO_PROMPTS = {f"prompt_{k}": "" for k in range(1, 9)}
#: Sampler inputs every test shares unless it says otherwise: 1 quick step, the paper's guidance.
SAMPLER_DEFAULTS = {"seed": 0, "steps": 1, "schedule": "steps", "guidance": 10.0, "reduction": "auto"}


def prompt_nodes(
    prompts: dict[str, str] | None = None,
    *,
    second_view: tuple[str, dict[str, Any]] = ("VisualAnagramsView_flip", {}),
    style: str = "an oil painting of",
    encoder: str = "tiny-t5",
    precision: str = "auto",
) -> dict:
    """ "1" T5 loader, "2" identity -> "3" ``second_view``, "4" the prompt encoder (view chain at "3")."""
    view_class, view_params = second_view
    return {
        "1": {"class_type": T5, "inputs": {"encoder": encoder, "precision": precision, "device": "default"}},
        "2": {"class_type": "VisualAnagramsView_identity", "inputs": {}},
        "3": {"class_type": view_class, "inputs": {"views": ["2", 0], **view_params}},
        "4": {
            "class_type": "VisualAnagramsPromptEncoder",
            "inputs": {
                "text_encoder": ["1", 0],
                "views": ["3", 0],
                "style": style,
                "negative": "",
                "unload_encoder": False,
                **NO_PROMPTS,
                **(prompts or {"prompt_1": "people around a campfire", "prompt_2": "an old man"}),
            },
        },
    }


def stage_1_nodes(
    *, model: Any = "tiny-IF-I", dtype: str = "auto", offload: str = "auto", candidates: int = 1, **sampler
) -> dict:
    """ "5" the Stage I loader, "6" the Stage I sampler over the prompts at "4" and the views at "3"."""
    return {
        "5": {"class_type": STAGE_I_LOADER, "inputs": {"model": model, "dtype": dtype, "offload": offload}},
        "6": {
            "class_type": "VisualAnagramsStageI",
            "inputs": {
                "model": ["5", 0],
                "prompts": ["4", 0],
                "views": ["3", 0],
                "candidates": candidates,
                **SAMPLER_DEFAULTS,
                **sampler,
            },
        },
    }


def stage_2_nodes(image: list, *, dtype: str = "auto", offload: str = "auto", noise_level: int = 50, **sampler) -> dict:
    """ "7" the Stage II loader, "8" the Stage II sampler refining ``image`` (a link) with the prompts at "4"."""
    return {
        "7": {"class_type": STAGE_II_LOADER, "inputs": {"model": "tiny-IF-II", "dtype": dtype, "offload": offload}},
        "8": {
            "class_type": "VisualAnagramsStageII",
            "inputs": {
                "model": ["7", 0],
                "prompts": ["4", 0],
                "views": ["3", 0],
                "image": image,
                "noise_level": noise_level,
                **SAMPLER_DEFAULTS,
                **sampler,
            },
        },
    }


def save(images: list, prefix: str) -> dict:
    """A core SaveImage node for the images at ``images`` (a link)."""
    return {"class_type": "SaveImage", "inputs": {"images": images, "filename_prefix": prefix}}
