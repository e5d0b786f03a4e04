"""Illusions from a picture through a real ComfyUI: the samplers' start image, strength, mask and reference
inputs, from pictures core Load Image reads out of the input folder, as a user's would be.

The maths is tests/test_pictures.py's; here: the sockets and widgets reach the core, unconnected ones change
nothing, pictures are resized or refused by name, and what comes out of Save Image is what the core promises.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pack import import_submodule
from tiny_graphs import SAMPLER_DEFAULTS, prompt_nodes, save, stage_1_nodes, stage_2_nodes

sampling = import_submodule("sampling")
stages = import_submodule("sampling.stages")
views = import_submodule("views")

STAGE_I = "Anagram Sampler (Stage I)"
STAGE_II = "Anagram Upscaler (Stage II)"
STEPS = 2
PROMPTS = ["an oil painting of people around a campfire", "an oil painting of an old man"]
HOLE = slice(16, 48)  # the square a mask repaints, in 64 px pictures (x4 at 256 px)


# -- pictures in the input folder -----------------------------------------------------------------------


def smooth_levels(width: int, height: int, seed: int) -> np.ndarray:
    """A colourful, smooth (H, W, 3) uint8 picture in [20, 235]: no level near the ends, where saving clips."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    channels = [
        0.5 + 0.4 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * x + rng.uniform(0.5, 2) * y + rng.uniform()))
        for _ in range(3)
    ]
    return np.round(20 + 215 * np.stack(channels, -1)).astype(np.uint8)


def with_hole(levels: np.ndarray, scale: int = 1) -> np.ndarray:
    """RGBA: transparent (Load Image's mask 1, repaint) in the centre square, opaque elsewhere."""
    alpha = np.full(levels.shape[:2], 255, np.uint8)
    hole = slice(HOLE.start * scale, HOLE.stop * scale)
    alpha[hole, hole] = 0
    return np.dstack([levels, alpha])


PICTURES = {
    "start": smooth_levels(64, 64, 1),
    "hole": with_hole(smooth_levels(64, 64, 2)),
    "small": smooth_levels(48, 48, 3),
    "wide": smooth_levels(64, 48, 4),
    "reference": smooth_levels(64, 64, 5),
    "hole_256": with_hole(smooth_levels(256, 256, 6), scale=4),
}


@pytest.fixture(scope="module")
def pictures(comfy_server) -> dict[str, str]:
    """Each picture written as a PNG into the server's input folder; name -> Load Image's file name."""
    names = {}
    for name, levels in PICTURES.items():
        names[name] = f"va_pictures_{name}.png"
        Image.fromarray(levels).save(comfy_server.input_dir / names[name])
    return names


def load(file_name: str) -> dict:
    return {"class_type": "LoadImage", "inputs": {"image": file_name}}


def rgb(name: str) -> np.ndarray:
    return PICTURES[name][..., :3].astype(np.int16)


def saved(comfy_server, result, node_id: str) -> list[np.ndarray]:
    return [
        np.asarray(comfy_server.open_image(ref).convert("RGB"), dtype=np.int16)
        for ref in result.images
        if ref.node_id == node_id
    ]


def stage_1(node_id: str, *, prompts="4", views_at="3", candidates=1, **inputs) -> dict:
    """A Stage I sampler on the loader "5" (from stage_1_nodes), 2 steps."""
    return {
        node_id: {
            "class_type": "VisualAnagramsStageI",
            "inputs": {
                "model": ["5", 0],
                "prompts": [prompts, 0],
                "views": [views_at, 0],
                "candidates": candidates,
                **SAMPLER_DEFAULTS,
                "steps": STEPS,
                **inputs,
            },
        }
    }


def error_message(comfy_server, graph) -> str:
    result = comfy_server.run(graph, check=False, timeout=300)
    assert result.status == "error", result.status_messages
    return result.error["exception_message"]


# -- unconnected, nothing changes -----------------------------------------------------------------------


def test_without_pictures_the_new_widgets_change_nothing(comfy_server):
    def cascade(**picture_widgets):
        return {
            **prompt_nodes(),
            **stage_1_nodes(steps=STEPS, **picture_widgets),
            **stage_2_nodes(["6", 0], **picture_widgets),
            "9": save(["6", 0], "va/pictures_none_1"),
            "10": save(["8", 0], "va/pictures_none_2"),
        }

    before = comfy_server.run(cascade(), timeout=300)
    # A strength without a start image, a reference view without a reference: ignored, as the tooltips say.
    widgets = comfy_server.run(cascade(strength=0.35, reference_view=2, project_reference=False), timeout=300)
    for node_id in ("9", "10"):
        plain = [image.tobytes() for image in saved(comfy_server, before, node_id)]
        assert plain and plain == [image.tobytes() for image in saved(comfy_server, widgets, node_id)]


# -- Stage I: start image, strength, mask, reference ---------------------------------------------------


def test_stage_1_start_image_mask_and_reference_do_what_they_say(comfy_server, pictures):
    graph = {
        **prompt_nodes(),
        **stage_1_nodes(steps=STEPS, start_image=["20", 0], strength=0.0),
        "9": save(["6", 0], "va/pictures_strength_0"),
        "20": load(pictures["start"]),
        "21": load(pictures["hole"]),
        "22": load(pictures["small"]),
        "23": load(pictures["reference"]),
        # The mask: start from the picture with a hole, repaint the hole (strength 1: from pure noise there).
        **stage_1("11", start_image=["21", 0], mask=["21", 1], strength=1.0, candidates=2),
        "12": save(["11", 0], "va/pictures_mask"),
        # A 48 px picture: resized to 64 px, and the run goes on.
        **stage_1("13", start_image=["22", 0], strength=0.5),
        "14": save(["13", 0], "va/pictures_small"),
        # Grey levels from a reference: grayscale (view 1) / colour, a second chain of views and prompts.
        "30": {"class_type": "VisualAnagramsView_grayscale", "inputs": {}},
        "31": {"class_type": "VisualAnagramsView_color", "inputs": {"views": ["30", 0]}},
        "32": {**prompt_nodes()["4"], "inputs": {**prompt_nodes()["4"]["inputs"], "views": ["31", 0]}},
        **stage_1("15", prompts="32", views_at="31", reference_image=["23", 0], reference_view=1),
        "16": save(["15", 0], "va/pictures_reference"),
        **stage_1(
            "17", prompts="32", views_at="31", reference_image=["23", 0], reference_view=1, project_reference=False
        ),
        "18": save(["17", 0], "va/pictures_reference_published"),
    }
    mark = comfy_server.log_mark()
    result = comfy_server.run(graph, timeout=300)

    # Strength 0: the picture itself (SaveImage truncates 255 x, so one level at most).
    [kept] = saved(comfy_server, result, "9")
    assert np.abs(kept - rgb("start")).max() <= 1

    # The mask: outside it the picture, inside it a new drawing, in every candidate.
    masked = saved(comfy_server, result, "12")
    assert len(masked) == 2
    inside = np.zeros((64, 64), bool)
    inside[HOLE, HOLE] = True
    for image in masked:
        assert np.abs(image - rgb("hole"))[~inside].max() <= 1
        assert np.abs(image - rgb("hole"))[inside].mean() > 10

    [small] = saved(comfy_server, result, "14")
    assert small.shape == (64, 64, 3)
    log = comfy_server.log_text(since=mark)
    assert f"{STAGE_I}: start_image is 48x48 px, resized to 64x64 px (Stage I's size)." in log

    # The reference's grey levels, where no channel was clipped by saving (8-bit truncation: 1-2 levels).
    reference_grey = rgb("reference").mean(-1)
    [projected] = saved(comfy_server, result, "16")
    unclipped = ((projected > 0) & (projected < 255)).all(-1)
    assert unclipped.mean() > 0.5
    assert np.abs(projected.mean(-1) - reference_grey)[unclipped].max() <= 2
    # Without the projection, the published loop: its last step leaves the grey levels off.
    [published] = saved(comfy_server, result, "18")
    assert np.abs(published.mean(-1) - reference_grey)[unclipped].max() > 2


# -- refused, by node and input --------------------------------------------------------------------------


def refused_graph(pictures, *, loads=("start",), candidates=1, **inputs) -> dict:
    graph = {**prompt_nodes(), **stage_1_nodes(steps=STEPS, candidates=candidates, **inputs)}
    graph["9"] = save(["6", 0], "va/pictures_refused")
    for index, name in enumerate(loads):
        graph[str(20 + index)] = load(pictures[name])
    return graph


REFUSALS = {
    "non-square": (
        {"loads": ("wide",), "start_image": ["20", 0]},
        f"{STAGE_I}: start_image: is 64x48 px, and illusions are square. Crop it square first: Image Crop, or "
        "Upscale Image with crop 'center'.",
    ),
    "empty mask": (
        # A picture without alpha: Load Image's mask is 64x64 zeros.
        {"start_image": ["20", 0], "mask": ["20", 1]},
        f"{STAGE_I}: mask: repaints nothing: no value reaches 0.5 at 64x64 px (1 = repaint). Paint the region to "
        "repaint: right-click the Load Image node > Open in MaskEditor; a picture without alpha gives an empty mask.",
    ),
    "mask without start image": (
        {"loads": ("hole",), "mask": ["20", 1]},
        f"{STAGE_I}: mask: a mask says which part of the start image to repaint: give the start image too",
    ),
    "four channels": (
        {"start_image": ["40", 0]},
        f"{STAGE_I}: start_image: has 4 channels; views and IF work on RGB images",
    ),
    "batch": (
        {"candidates": 2, "reference_image": ["41", 0]},
        f"{STAGE_I}: reference_image: holds a batch of 3 for 2 candidates: give one for all of them, or one for each.",
    ),
    "NaN": (
        {"start_image": ["42", 0]},
        f"{STAGE_I}: start_image: 12288 values are NaN or infinite.",
    ),
    "not a split view": (
        {"reference_image": ["20", 0], "reference_view": 2},
        f"{STAGE_I}: reference view: view 2 (flip) is not part of a split of the image into components",
    ),
    "a literal for the mask": (
        {"start_image": ["20", 0], "mask": 3},
        f"{STAGE_I}: mask: got the number 3 where a link is expected. Connect a MASK output (such as Load Image's)",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_pictures_the_sampler_cannot_use_are_refused_by_node_input_and_fix(comfy_server, pictures, case):
    inputs, expected = REFUSALS[case]
    graph = refused_graph(pictures, **inputs)
    graph["40"] = {"class_type": "JoinImageWithAlpha", "inputs": {"image": ["20", 0], "alpha": ["20", 1]}}
    graph["41"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["20", 0], "amount": 3}}
    graph["42"] = {"class_type": "HarnessOddImage", "inputs": {"batch": 1, "size": 64, "channels": 3, "fill": "nan"}}
    assert error_message(comfy_server, graph).startswith(expected)


# -- Stage II ----------------------------------------------------------------------------------------------


def test_stage_2_keeps_the_picture_outside_its_mask_at_256_px(comfy_server, pictures):
    graph = {
        **prompt_nodes(),
        # Strength 1: the hole is drawn from pure noise (the tiny models change little in one step of 0.8).
        **stage_2_nodes(["20", 0], steps=STEPS, start_image=["21", 0], mask=["21", 1], strength=1.0),
        "9": save(["8", 0], "va/pictures_stage_2_mask"),
        "20": load(pictures["start"]),
        "21": load(pictures["hole_256"]),
    }
    [image] = saved(comfy_server, comfy_server.run(graph, timeout=300), "9")
    inside = np.zeros((256, 256), bool)
    inside[4 * HOLE.start : 4 * HOLE.stop, 4 * HOLE.start : 4 * HOLE.stop] = True
    assert np.abs(image - rgb("hole_256"))[~inside].max() <= 1
    assert np.abs(image - rgb("hole_256"))[inside].mean() > 10


def test_continuing_a_stage_1_that_ran_from_a_picture_replays_its_generators(
    comfy_server, pictures, encode, stage_2_pipe
):
    """'continue Stage I' with Stage I's strength and reference: the generators the core says Stage I left."""
    # 3 of 4 steps with a reference draw 2 + 3 times, the plain run 3 times, strength alone 2, the reference
    # alone 7: each setting ignored would continue other generators. (Strength 0.5 would draw 1 + 2 = 3.)
    seed, stage_1_steps, strength = 7, 4, 0.75
    fp32 = {"dtype": "fp32", "offload": "none"}
    graph = {
        **prompt_nodes(precision="fp32"),
        **stage_2_nodes(
            ["20", 0],
            steps=STEPS,
            seed=seed,
            seed_mode="continue Stage I",
            stage_1_steps=stage_1_steps,
            stage_1_strength=strength,
            stage_1_reference=True,
            **fp32,
        ),
        "9": save(["8", 0], "va/pictures_continued"),
        "20": load(pictures["start"]),
    }
    [continued] = saved(comfy_server, comfy_server.run(graph, timeout=300), "9")

    generators = stages.stage_1_generators_after(
        seed,
        1,
        stage_2_pipe.scheduler,
        sample_shape=(3, 64, 64),
        num_inference_steps=stage_1_steps,
        strength=strength,
        reference=True,
    )
    # Not vacuous: Stage I's defaults (strength 1, no reference) leave other generators, so other noise.
    plain = stages.stage_1_generators_after(
        seed, 1, stage_2_pipe.scheduler, sample_shape=(3, 64, 64), num_inference_steps=stage_1_steps
    )
    assert not torch.equal(generators[0].get_state(), plain[0].get_state())
    low_res = torch.from_numpy(rgb("start")).float().div(255).permute(2, 0, 1)[None] * 2 - 1
    expected = sampling.sample_stage_2(
        stage_2_pipe.unet,
        stage_2_pipe.scheduler,
        stage_2_pipe.image_noising_scheduler,
        low_res,
        [views.make_view(name) for name in ("identity", "flip")],
        sampling.PromptEmbeddings(*encode(PROMPTS)),
        seed=seed,
        generators=generators,
        num_inference_steps=STEPS,
        guidance_scale=SAMPLER_DEFAULTS["guidance"],
        noise_level=50,
    ).images
    expected_levels = np.clip(255 * ((expected[0] + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy(), 0, 255)
    assert np.abs(continued - expected_levels.astype(np.uint8).astype(np.int16)).max() <= 1
