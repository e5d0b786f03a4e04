"""What each example workflow is: its views, prompts and style, and the settings its nodes run with.

The IF examples use the paper's published defaults (DESIGN.md section 1); ``digits_demo`` runs the
embedded digits model with the settings measured for it (demo/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .repo_modules import pack_submodule

#: The paper's own choice of models for its figures (IF-I-M + IF-II-M), and T5 from IF-I-XL
#: (every IF-I repository ships the same T5-XXL).
STAGE_I_MODEL = "DeepFloyd/IF-I-M-v1.0"
STAGE_II_MODEL = "DeepFloyd/IF-II-M-v1.0"
T5_MODEL = "DeepFloyd/IF-I-XL-v1.0"
SEED = 0
SEED_CONTROL = "fixed"  # the UI's "control after generate": fixed, so the examples reproduce
OIL_PAINTING = "an oil painting of"  # the paper's tip: styles work better than "a photo of"

LOADER = {"dtype": "auto", "offload": "auto"}
T5_LOADER = {"encoder": T5_MODEL, "precision": "auto", "device": "default"}
STAGE_I = {"seed": SEED, "steps": 30, "schedule": "steps", "guidance": 10.0, "reduction": "auto", "candidates": 2}
# Stage II continues Stage I's random stream, as the paper's generate.py does, so an example reproduces the
# paper's images for its seed: its seed, Stage I steps and Stage I schedule repeat Stage I's.
STAGE_II = {
    "seed": SEED,
    "steps": 30,
    "schedule": "steps",
    "guidance": 10.0,
    "reduction": "auto",
    "noise_level": 50,
    "seed_mode": "continue Stage I",
    "stage_1_steps": STAGE_I["steps"],
    "stage_1_schedule": STAGE_I["schedule"],
}
PREVIEW = {"frames_per_view": 24, "hold_frames": 8}
#: The view preview's size: its illusion viewer (picture, controls, view chips) needs about 500 px.
PREVIEW_SIZE = (380, 520)
ANIMATION = {"fps": 24.0, "lossless": False, "quality": 90, "method": "default"}

#: The embedded demo model (demo/IF-I-digits: a tiny Stage I and its tiny T5, both inside the pack), as
#: the loaders list it, and the sampler settings measured for it (demo/README.md): 64 px, no Stage II.
DEMO_MODEL = pack_submodule("sampling.if_models").EMBEDDED_DEMO
DEMO_STAGE_I = {"seed": SEED, "steps": 30, "schedule": "steps", "guidance": 4.0, "reduction": "auto", "candidates": 4}
DEMO_UPSCALE = {"upscale_method": "bicubic", "scale_by": 4.0}  # 64 -> 256 px, for a visible picture
DEMO_PREFIX = "visual_anagrams_demo"

#: Anagram-MTL's two model-free techniques, at the published settings (the samplers' defaults once on).
MTL_STAGE_I = {"rectify": True, "anti_segregation": True}
MTL_STAGE_II = {"rectify": True}


@dataclass(frozen=True)
class Illusion:
    """One example workflow: a chain of views, one prompt per view, a style.

    ``demo`` workflows run the pack's embedded digits model (Stage I only, no download)
    instead of DeepFloyd IF. ``stage_1_options`` / ``stage_2_options`` set sampler inputs
    beyond the shared settings (Anagram-MTL's options).
    """

    name: str
    views: tuple[tuple[str, dict[str, Any]], ...]  # (view name, its parameters), in prompt order
    prompts: tuple[str, ...]
    style: str = OIL_PAINTING
    demo: bool = False
    stage_1_options: dict[str, Any] = field(default_factory=dict)
    stage_2_options: dict[str, Any] = field(default_factory=dict)
    output_folder: str = ""  # where its files are saved; empty: visual_anagrams/<name>

    def __post_init__(self) -> None:
        if len(self.views) != len(self.prompts):
            raise ValueError(f"{self.name}: {len(self.views)} views but {len(self.prompts)} prompts")

    @property
    def folder(self) -> str:
        return self.output_folder or f"visual_anagrams/{self.name}"


WORKFLOWS: tuple[Illusion, ...] = (
    # Runs anywhere with no download: the embedded digits model draws a digit that reads as another
    # digit once flipped upside down.
    Illusion(
        "digits_demo",
        (("identity", {}), ("flip", {})),
        ("the digit two", "the digit five"),
        style="",
        demo=True,
        output_folder=DEMO_PREFIX,
    ),
    # The same demo with Anagram-MTL's rectification and anti-segregation on, to compare with it (on this
    # model they change little: README, "Anagram-MTL's options").
    Illusion(
        "digits_mtl",
        (("identity", {}), ("flip", {})),
        ("the digit two", "the digit five"),
        style="",
        demo=True,
        stage_1_options=MTL_STAGE_I,
    ),
    Illusion("rotate_cw", (("identity", {}), ("rotate_cw", {})), ("a snowy mountain village", "a horse")),
    Illusion("flip", (("identity", {}), ("flip", {})), ("people around a campfire", "an old man")),
    Illusion("jigsaw", (("identity", {}), ("jigsaw", {"seed": 0})), ("a kitchen", "a teddy bear")),
    Illusion("negate", (("identity", {}), ("negate", {})), ("a waterfall", "a skull"), style="a lithograph of"),
    Illusion(
        "three_views",
        (("identity", {}), ("rotate_cw", {}), ("rotate_ccw", {})),
        ("a rabbit", "a duck", "a giraffe"),
        style="a watercolor of",
    ),
    # Anagram-MTL's own example (its README: a charcoal leopard that turns into a savannah), with its
    # rectification and anti-segregation on; the paper's other settings as in every IF example.
    Illusion(
        "leopard_mtl",
        (("identity", {}), ("rotate_cw", {})),
        ("a leopard", "a savannah"),
        style="a charcoal drawing of",
        stage_1_options=MTL_STAGE_I,
        stage_2_options=MTL_STAGE_II,
    ),
    # Factorized (hybrid image): low frequencies follow prompt 1, high frequencies prompt 2; the
    # samplers' reduction "auto" picks "sum" because every view is factorized.
    Illusion(
        "hybrid",
        (("low_pass", {"sigma": 2.0}), ("high_pass", {"sigma": 2.0})),
        ("a waterfall", "a deer"),
        style="a photo of",
    ),
)
