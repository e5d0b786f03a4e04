"""What each example workflow is: its views, prompts and style, the picture it starts from, and the settings
its nodes run with.

The IF examples use the paper's published defaults (DESIGN.md section 1); ``digits_demo`` runs the
embedded digits model with the settings measured for it (demo/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .repo_modules import example_pictures, pack_submodule

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
#: The demo workflow's steps: the fewest whose illusion success on the digits model is within two points of
#: 30 steps' (demo/evaluate.py --schedules, 20 seeds: 52 % at 15 steps, 51 % at 30; README "Fewer steps").
DEMO_STEPS = 15
DEMO_STAGE_I = {"seed": SEED, "steps": 30, "schedule": "steps", "guidance": 4.0, "reduction": "auto", "candidates": 4}
DEMO_UPSCALE = {"upscale_method": "bicubic", "scale_by": 4.0}  # 64 -> 256 px, for a visible picture
DEMO_PREFIX = "visual_anagrams_demo"

#: Anagram-MTL's two model-free techniques, at the published settings (the samplers' defaults once on).
MTL_STAGE_I = {"rectify": True, "anti_segregation": True}
MTL_STAGE_II = {"rectify": True}

#: Picking the best candidates (the Illusion Score node, the paper's alignment and concealment): OpenAI's CLIP
#: ViT-L/14 (the CLIP loader's first Hub id), ranked by both scores at the paper's temperature (CLIP's own, 0.01).
CLIP_LOADER = {"clip": pack_submodule("sampling.clip_models").CLIP_HUB_IDS[0], "dtype": "auto"}
SCORE = {"rank_by": "both", "temperature": pack_submodule("sampling.illusion_scores").PAPER_TEMPERATURE}
#: Stage II refines the picks, whichever candidates they were: "continue Stage I" would continue the random
#: streams of candidates 1, 2, ... rather than the picks' (the sampler's tooltip: give seed + k for one pick),
#: so Stage II draws its own noise.
PICKED_STAGE_II = {"seed_mode": "own seed"}


@dataclass(frozen=True)
class Picture:
    """A picture in ComfyUI's input folder, by the name core LoadImage lists it under."""

    name: str
    width: int
    height: int
    #: The pack's own copy (``examples/pictures/``, copied into the input folder when ComfyUI loads the pack);
    #: None for a picture ComfyUI itself ships in its input folder.
    pack_file: Path | None = None


#: ComfyUI's own example picture, in every ComfyUI's input folder: a child's drawing of a blonde girl in a pink
#: dress on a green hill under a blue sky with clouds.
COMFYUI_EXAMPLE = Picture("example.png", 768, 768)
#: A real handwritten "2" in the demo model's own rendering (examples/pictures/README.md).
DIGIT_TWO = Picture(
    example_pictures().example_picture_name("digit_two"),
    64,
    64,
    pack_file=example_pictures().PICTURES_DIR / "digit_two.png",
)

#: How much of the demo's schedule redraws the handwritten 2 (0: the picture as is, 1: from pure noise): 0.9
#: measured best (README, "Illusions from a picture": 95 % of 20 seeds read both views; 0.5 / 0.7: 55 / 65 %).
DIGITS_START_STRENGTH = 0.9
#: IF's image-to-image default (diffusers' ``IFImg2ImgPipeline``: strength 0.7).
IF_START_STRENGTH = 0.7


@dataclass(frozen=True)
class Illusion:
    """One example workflow: a chain of views, one prompt per view, a style.

    ``demo`` workflows run the pack's embedded digits model (Stage I only, no download)
    instead of DeepFloyd IF. ``stage_1_options`` / ``stage_2_options`` set sampler inputs
    beyond the shared settings (Anagram-MTL's options, a picture's strength or reference view).

    ``keep_best`` > 0 puts CLIP between the stages: the Illusion Score node ranks Stage I's candidates and
    passes the best ``keep_best`` to Stage II; the picks are also saved captioned with their scores.

    An illusion from a picture loads ``picture`` with core LoadImage and wires it to the samplers' input
    ``picture_input`` (``start_image`` or ``reference_image``) on the stages ``picture_stages``;
    ``repaint_middle`` adds a mask made of core nodes (no painting needed) that repaints the picture's
    middle, half its width and height, on the same stages.
    """

    name: str
    views: tuple[tuple[str, dict[str, Any]], ...]  # (view name, its parameters), in prompt order
    prompts: tuple[str, ...]
    style: str = OIL_PAINTING
    demo: bool = False
    stage_1_options: dict[str, Any] = field(default_factory=dict)
    stage_2_options: dict[str, Any] = field(default_factory=dict)
    output_folder: str = ""  # where its files are saved; empty: visual_anagrams/<name>
    picture: Picture | None = None
    picture_input: str = "start_image"
    picture_stages: tuple[int, ...] = (1,)
    repaint_middle: bool = False
    keep_best: int = 0

    def __post_init__(self) -> None:
        if len(self.views) != len(self.prompts):
            raise ValueError(f"{self.name}: {len(self.views)} views but {len(self.prompts)} prompts")
        if self.repaint_middle and (self.picture is None or self.picture_input != "start_image"):
            raise ValueError(f"{self.name}: a mask repaints part of a start image; give the start picture")
        if self.demo and self.picture_stages != (1,):
            raise ValueError(f"{self.name}: the demo model has no Stage II to give the picture to")
        if self.keep_best:
            if self.demo:
                raise ValueError(f"{self.name}: the demo model has no Stage II to refine the picks")
            if not 0 < self.keep_best < self.candidates:
                raise ValueError(
                    f"{self.name}: keep_best {self.keep_best}: keep 1 to {self.candidates - 1} of the "
                    f"{self.candidates} candidates"
                )
            if self.stage_2_options.get("seed_mode") != PICKED_STAGE_II["seed_mode"]:
                raise ValueError(f"{self.name}: Stage II refines picked candidates: give it {PICKED_STAGE_II}")

    @property
    def candidates(self) -> int:
        """How many candidates Stage I draws."""
        return self.stage_1_options.get("candidates", (DEMO_STAGE_I if self.demo else STAGE_I)["candidates"])

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
        stage_1_options={"steps": DEMO_STEPS},
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
    # From a picture: a real handwritten 2 (image-to-image, on the embedded model) redrawn so that it also
    # reads as a 5 upside down, where digits_demo draws its 2 from noise.
    Illusion(
        "digits_from_picture",
        (("identity", {}), ("flip", {})),
        ("the digit two", "the digit five"),
        style="",
        demo=True,
        stage_1_options={"strength": DIGITS_START_STRENGTH},
        picture=DIGIT_TWO,
    ),
    # From a picture: ComfyUI's example drawing, redrawn (IF's image-to-image strength) so that upside down it
    # shows a vase of flowers. Stage II continues Stage I's random stream, which skipped the steps the
    # strength left out: stage_1_strength repeats it so the streams line up.
    Illusion(
        "picture_flip",
        (("identity", {}), ("flip", {})),
        ("a girl in a pink dress on a hill", "a vase of flowers"),
        style="a child's drawing of",
        stage_1_options={"strength": IF_START_STRENGTH},
        stage_2_options={"stage_1_strength": IF_START_STRENGTH},
        picture=COMFYUI_EXAMPLE,
    ),
    # An inverse problem (the paper's hybrid images from a reference): the picture fixes the low frequencies
    # (view 1), the samplers draw only the fine detail, which reads as waterfalls up close. The published
    # example leaves the fixed view's prompt empty (its text is the style alone); the prompt encoder wants
    # every prompt filled, so the style is written into each prompt instead.
    Illusion(
        "hybrid_from_picture",
        (("low_pass", {"sigma": 2.0}), ("high_pass", {"sigma": 2.0})),
        ("a lithograph of", "a lithograph of waterfalls"),
        style="",
        stage_1_options={"reference_view": 1, "project_reference": True},
        stage_2_options={"reference_view": 1, "project_reference": True, "stage_1_reference": True},
        picture=COMFYUI_EXAMPLE,
        picture_input="reference_image",
        picture_stages=(1, 2),
    ),
    # Inpainting: the picture stays as it is outside a mask, and its middle is redrawn as an anagram (a sun
    # that reads as a flower upside down), on both stages.
    Illusion(
        "inpaint_hidden",
        (("identity", {}), ("flip", {})),
        ("a sun", "a flower"),
        style="a child's drawing of",
        stage_1_options={"strength": 1.0},
        stage_2_options={"strength": 1.0},
        picture=COMFYUI_EXAMPLE,
        picture_stages=(1, 2),
        repaint_middle=True,
    ),
    # Most samples are not good illusions (the paper's showcase is hand-picked): Stage I draws 8 candidates of
    # the flip example, CLIP ranks them by the paper's alignment and concealment, and only the best 2 go on to
    # Stage II; the two picks are saved with their scores too.
    Illusion(
        "pick_best",
        (("identity", {}), ("flip", {})),
        ("people around a campfire", "an old man"),
        stage_1_options={"candidates": 8},
        stage_2_options=PICKED_STAGE_II,
        keep_best=2,
    ),
)
