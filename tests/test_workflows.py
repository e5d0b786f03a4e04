"""The example workflows: UI files, their API twins and thumbnails agree with each other and with the nodes.

The ComfyUI-dependent tests read node definitions and ComfyUI's own prompt
validation from a child process (tests/workflow_tools.py) and run
``scripts/build_workflows.py --check``; they skip when COMFYUI_DIR is not set or
holds no ComfyUI (``bash scripts/test.sh`` provides ComfyUI 0.3.75).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from workflow_tools import (
    API_DIR,
    BUILD_SCRIPT,
    DEMO_MODEL,
    REPO,
    TINY_CLIP,
    UI_DIR,
    api_workflow,
    comfyui_facts,
    control_values,
    ui_to_api,
    ui_workflow,
    widget_inputs,
    with_tiny_models,
    workflow_names,
)

NAMES = [
    "digits_demo",
    "digits_from_picture",
    "digits_mtl",
    "flip",
    "hybrid",
    "hybrid_from_picture",
    "inpaint_hidden",
    "jigsaw",
    "leopard_mtl",
    "negate",
    "pick_best",
    "picture_flip",
    "rotate_cw",
    "three_views",
]
#: The examples that run the embedded demo model; the others run DeepFloyd IF with the paper's settings.
DEMO_NAMES = ["digits_demo", "digits_from_picture", "digits_mtl"]
PAPER_NAMES = [name for name in NAMES if name not in DEMO_NAMES]
#: The examples made from a picture: the file their LoadImage loads (ComfyUI's own example picture, or the
#: pack's handwritten 2 under the name nodes/example_pictures.py copies it to).
DIGIT_TWO = "visual_anagrams_digit_two.png"
PICTURES = {
    "digits_from_picture": DIGIT_TWO,
    "picture_flip": "example.png",
    "hybrid_from_picture": "example.png",
    "inpaint_hidden": "example.png",
}
#: The samplers' picture inputs (start image, mask, reference) each example sets, and the stages they feed.
STAGE_I, STAGE_II = "VisualAnagramsStageI", "VisualAnagramsStageII"
PICTURE_INPUTS = {
    "digits_from_picture": {STAGE_I: {"start_image"}},
    "picture_flip": {STAGE_I: {"start_image"}, STAGE_II: set()},
    "hybrid_from_picture": {STAGE_I: {"reference_image"}, STAGE_II: {"reference_image"}},
    "inpaint_hidden": {STAGE_I: {"start_image", "mask"}, STAGE_II: {"start_image", "mask"}},
}
PICTURE_SOCKETS = {"start_image", "mask", "reference_image"}
#: The examples with Anagram-MTL's options on: which sampler inputs they set.
MTL_OPTIONS = {
    "digits_mtl": ({"rectify": True, "anti_segregation": True}, None),
    "leopard_mtl": ({"rectify": True, "anti_segregation": True}, {"rectify": True}),
}
#: The examples that score Stage I's candidates with CLIP and refine only the best: (candidates, kept).
PICKS = {"pick_best": (8, 2)}
SCORE = "VisualAnagramsIllusionScore"
THUMBNAIL_MAX_BYTES = 60_000
NODE_TITLE_HEIGHT = 30
MODEL_INPUTS = {
    ("VisualAnagramsLoadStageI", "model"),
    ("VisualAnagramsLoadStageII", "model"),
    ("VisualAnagramsLoadStageIII", "model"),
    ("VisualAnagramsLoadT5", "encoder"),
    ("VisualAnagramsLoadCLIP", "clip"),
}


@pytest.fixture(scope="module")
def facts(comfyui_checkout):
    return comfyui_facts(comfyui_checkout)


@pytest.fixture(scope="module")
def object_info(facts):
    return facts["object_info"]


# -- the files, without ComfyUI -------------------------------------------------------------------------


def test_every_example_has_an_api_twin_and_a_thumbnail():
    assert workflow_names() == NAMES
    assert sorted(p.stem for p in UI_DIR.glob("*.json")) == NAMES
    assert sorted(p.stem for p in UI_DIR.glob("*.jpg")) == NAMES
    # The template browser lists every JSON file in example_workflows/ (a flat folder).
    assert not [p for p in UI_DIR.iterdir() if p.suffix not in (".json", ".jpg")]
    assert not [p for p in API_DIR.iterdir() if p.suffix != ".json"]


@pytest.mark.parametrize("name", NAMES)
def test_thumbnail_is_a_small_jpeg(name):
    path = UI_DIR / f"{name}.jpg"
    assert path.stat().st_size <= THUMBNAIL_MAX_BYTES
    with Image.open(path) as image:
        assert image.format == "JPEG"  # frontend 1.32 asks for <name>.jpg for custom node templates
        assert 200 <= image.width <= 800 and 150 <= image.height <= 800


@pytest.mark.parametrize("name", NAMES)
def test_ui_file_is_a_consistent_graph(name):
    ui = ui_workflow(name)
    assert ui["version"] == 0.4
    nodes = {node["id"]: node for node in ui["nodes"]}
    assert len(nodes) == len(ui["nodes"]) and ui["last_node_id"] == max(nodes)
    assert ui["last_link_id"] == max(link[0] for link in ui["links"])
    assert ui["groups"] == []
    for link_id, source, source_slot, target, target_slot, link_type in ui["links"]:
        output = nodes[source]["outputs"][source_slot]
        target_input = nodes[target]["inputs"][target_slot]
        assert link_id in output["links"]
        assert target_input["link"] == link_id
        assert output["type"] == target_input["type"] == link_type
    linked = {link[0] for link in ui["links"]}
    for node in ui["nodes"]:
        assert node["mode"] == 0 and node["flags"] == {}
        assert node["properties"]["Node name for S&R"] == node["type"]
        for slot in node["inputs"]:
            assert slot["link"] is None or slot["link"] in linked
            if "widget" in slot:
                assert slot["link"] is None and slot["widget"] == {"name": slot["name"]}
    # execution order: every node after the nodes it reads from
    for _, source, _, target, _, _ in ui["links"]:
        assert nodes[source]["order"] < nodes[target]["order"]
    assert sorted(node["order"] for node in ui["nodes"]) == list(range(len(nodes)))


@pytest.mark.parametrize("name", NAMES)
def test_ui_layout_flows_left_to_right_without_overlaps(name):
    ui = ui_workflow(name)
    boxes = {}
    for node in ui["nodes"]:
        (x, y), (width, height) = node["pos"], node["size"]
        boxes[node["id"]] = (x, y - NODE_TITLE_HEIGHT, x + width, y + height)
    for a, (ax0, ay0, ax1, ay1) in boxes.items():
        for b, (bx0, by0, bx1, by1) in boxes.items():
            if a < b:
                assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, f"nodes {a} and {b} overlap"
    nodes = {node["id"]: node for node in ui["nodes"]}
    for _, source, _, target, _, _ in ui["links"]:
        assert nodes[source]["pos"][0] <= nodes[target]["pos"][0], f"link {source} -> {target} goes right to left"


def test_settings_are_the_papers_defaults():
    expected_views = {
        "rotate_cw": ["identity", "rotate_cw"],
        "flip": ["identity", "flip"],
        "jigsaw": ["identity", "jigsaw"],
        "negate": ["identity", "negate"],
        "three_views": ["identity", "rotate_cw", "rotate_ccw"],
        "hybrid": ["low_pass", "high_pass"],
        "leopard_mtl": ["identity", "rotate_cw"],
        "picture_flip": ["identity", "flip"],
        "hybrid_from_picture": ["low_pass", "high_pass"],
        "inpaint_hidden": ["identity", "flip"],
        "pick_best": ["identity", "flip"],
    }
    expected_prompts = {
        "rotate_cw": ("an oil painting of", ["a snowy mountain village", "a horse"]),
        "flip": ("an oil painting of", ["people around a campfire", "an old man"]),
        "jigsaw": ("an oil painting of", ["a kitchen", "a teddy bear"]),
        "negate": ("a lithograph of", ["a waterfall", "a skull"]),
        "three_views": ("a watercolor of", ["a rabbit", "a duck", "a giraffe"]),
        "hybrid": ("a photo of", ["a waterfall", "a deer"]),
        "leopard_mtl": ("a charcoal drawing of", ["a leopard", "a savannah"]),
        "picture_flip": ("a child's drawing of", ["a girl in a pink dress on a hill", "a vase of flowers"]),
        # The published example's prompts ("" and "waterfalls", style "a lithograph of"): the encoder wants every
        # prompt filled, so the style is written into each prompt, which gives the published texts.
        "hybrid_from_picture": ("", ["a lithograph of", "a lithograph of waterfalls"]),
        "inpaint_hidden": ("a child's drawing of", ["a sun", "a flower"]),
        "pick_best": ("an oil painting of", ["people around a campfire", "an old man"]),
    }
    for name in PAPER_NAMES:
        api = api_workflow(name)
        by_type = {}
        for node in api.values():
            by_type.setdefault(node["class_type"], []).append(node["inputs"])
        (stage_1,), (stage_2,) = by_type["VisualAnagramsStageI"], by_type["VisualAnagramsStageII"]
        for sampler in (stage_1, stage_2):
            assert (sampler["seed"], sampler["steps"], sampler["guidance"]) == (0, 30, 10.0)
            assert (sampler["schedule"], sampler["reduction"]) == ("steps", "auto")
        # Stage II continues Stage I's randomness, so the example reproduces the paper's generate.py; after
        # picking, its images are candidates k, k', ... whose streams are not the first ones: its own seed.
        assert (stage_2["seed_mode"], stage_2["stage_1_steps"], stage_2["stage_1_schedule"]) == (
            "own seed" if name in PICKS else "continue Stage I",
            stage_1["steps"],
            stage_1["schedule"],
        )
        assert stage_1["candidates"] == PICKS.get(name, (2,))[0] and stage_2["noise_level"] == 50
        # Anagram-MTL's options: on (at MTL's settings) where the example says so, off everywhere else.
        stage_1_mtl, stage_2_mtl = MTL_OPTIONS.get(name, ({}, {}))
        assert stage_1["rectify"] is stage_1_mtl.get("rectify", False)
        assert stage_1["anti_segregation"] is stage_1_mtl.get("anti_segregation", False)
        assert (stage_1["anti_segregation_step"], stage_1["anti_segregation_steps"], stage_1["attention_size"]) == (
            5.0,
            26,
            0,
        )
        assert stage_2["rectify"] is stage_2_mtl.get("rectify", False)
        assert by_type["VisualAnagramsLoadStageI"][0]["model"] == "DeepFloyd/IF-I-M-v1.0"
        assert by_type["VisualAnagramsLoadStageII"][0]["model"] == "DeepFloyd/IF-II-M-v1.0"
        assert by_type["VisualAnagramsLoadT5"] == [
            {"encoder": "DeepFloyd/IF-I-XL-v1.0", "precision": "auto", "device": "default"}
        ]
        (encoder,) = by_type["VisualAnagramsPromptEncoder"]
        style, prompts = expected_prompts[name]
        assert encoder["style"] == style and encoder["unload_encoder"] is True
        assert [encoder[f"prompt_{k}"] for k in range(1, len(prompts) + 1)] == prompts
        assert all(encoder[f"prompt_{k}"] == "" for k in range(len(prompts) + 1, 9))

        # The view chain, followed from the node every consumer reads back to the first view.
        chain, node_id = [], encoder["views"][0]
        while node_id is not None:
            node = api[node_id]
            chain.append(node["class_type"].removeprefix("VisualAnagramsView_"))
            node_id = node["inputs"]["views"][0] if "views" in node["inputs"] else None
        assert chain[::-1] == expected_views[name]
        for consumer in (stage_1, stage_2, by_type["VisualAnagramsViewPreview"][0], *by_type.get(SCORE, [])):
            assert consumer["views"] == encoder["views"]
    jigsaw = [n for n in api_workflow("jigsaw").values() if n["class_type"] == "VisualAnagramsView_jigsaw"]
    assert jigsaw[0]["inputs"]["seed"] == 0
    for name in ("hybrid", "hybrid_from_picture"):
        hybrid = [n for n in api_workflow(name).values() if n["class_type"].endswith("_pass")]
        assert [n["inputs"]["sigma"] for n in hybrid] == [2.0, 2.0]


def samplers_of(api: dict) -> dict[str, dict]:
    return {n["class_type"]: n["inputs"] for n in api.values() if n["class_type"].startswith("VisualAnagramsStage")}


@pytest.mark.parametrize("name", NAMES)
def test_pictures_reach_the_samplers_they_are_for(name):
    api = api_workflow(name)
    loads = [node_id for node_id, node in api.items() if node["class_type"] == "LoadImage"]
    for class_type, inputs in samplers_of(api).items():
        linked = {socket for socket in PICTURE_SOCKETS if socket in inputs}
        assert linked == PICTURE_INPUTS.get(name, {}).get(class_type, set()), class_type
        for socket in linked - {"mask"}:
            assert inputs[socket] == [loads[0], 0]  # the picture itself (output 0: IMAGE)
    if name not in PICTURES:
        assert not loads and not any(n["class_type"] in ("SolidMask", "MaskComposite") for n in api.values())
        return
    (load,) = loads
    assert api[load]["inputs"] == {"image": PICTURES[name]}


def test_picture_examples_settings():
    """Start strengths, the reference's view and flags, and Stage II continuing Stage I's stream in step."""
    digits = samplers_of(api_workflow("digits_from_picture"))["VisualAnagramsStageI"]
    assert 0 < digits["strength"] < 1 and (digits["seed"], digits["candidates"], digits["guidance"]) == (0, 4, 4.0)

    flip = samplers_of(api_workflow("picture_flip"))
    # IF's image-to-image default; Stage II continues Stage I's stream, which ran only the strength's steps.
    assert flip["VisualAnagramsStageI"]["strength"] == 0.7
    assert flip["VisualAnagramsStageII"]["stage_1_strength"] == flip["VisualAnagramsStageI"]["strength"]
    assert flip["VisualAnagramsStageII"]["stage_1_reference"] is False

    hybrid = samplers_of(api_workflow("hybrid_from_picture"))
    for inputs in hybrid.values():
        assert (inputs["reference_view"], inputs["project_reference"]) == (1, True)
        assert inputs["reduction"] == "auto"  # "sum": every view is factorized
    assert hybrid["VisualAnagramsStageII"]["stage_1_reference"] is True
    assert hybrid["VisualAnagramsStageII"]["stage_1_strength"] == 1.0

    inpaint = api_workflow("inpaint_hidden")
    for inputs in samplers_of(inpaint).values():
        assert inputs["strength"] == 1.0
    stage_2 = samplers_of(inpaint)["VisualAnagramsStageII"]
    assert (stage_2["stage_1_strength"], stage_2["stage_1_reference"]) == (1.0, False)
    # The mask, from core nodes: nothing repainted, plus a repainted square half the picture's size, centred.
    (composite,) = [n["inputs"] for n in inpaint.values() if n["class_type"] == "MaskComposite"]
    keep, middle = inpaint[composite["destination"][0]]["inputs"], inpaint[composite["source"][0]]["inputs"]
    assert (keep["value"], keep["width"], keep["height"]) == (0.0, 768, 768)  # example.png is 768 x 768
    assert (middle["value"], middle["width"], middle["height"]) == (1.0, 384, 384)
    assert (composite["x"], composite["y"], composite["operation"]) == (192, 192, "add")
    assert stage_2["mask"] == samplers_of(inpaint)["VisualAnagramsStageI"]["mask"] == [composite_id(inpaint), 0]


def composite_id(api: dict) -> str:
    return next(node_id for node_id, node in api.items() if node["class_type"] == "MaskComposite")


def test_digits_demo_runs_the_embedded_model_without_stage_ii():
    api = api_workflow("digits_demo")
    by_type = {}
    for node in api.values():
        by_type.setdefault(node["class_type"], []).append(node["inputs"])
    assert by_type["VisualAnagramsLoadT5"] == [{"encoder": DEMO_MODEL, "precision": "auto", "device": "default"}]
    assert by_type["VisualAnagramsLoadStageI"] == [{"model": DEMO_MODEL, "dtype": "auto", "offload": "auto"}]
    assert not {"VisualAnagramsLoadStageII", "VisualAnagramsStageII", "VisualAnagramsStageIII"} & set(by_type)
    (stage_1,) = by_type["VisualAnagramsStageI"]
    # 15 steps: as good as 30 on this model (demo/evaluate.py --schedules), in half the time.
    assert (stage_1["seed"], stage_1["steps"], stage_1["guidance"], stage_1["candidates"]) == (0, 15, 4.0, 4)
    (encoder,) = by_type["VisualAnagramsPromptEncoder"]
    assert encoder["style"] == "" and (encoder["prompt_1"], encoder["prompt_2"]) == ("the digit two", "the digit five")
    assert [n["class_type"] for n in api.values() if n["class_type"].startswith("VisualAnagramsView_")] == [
        "VisualAnagramsView_identity",
        "VisualAnagramsView_flip",
    ]
    (upscale,) = by_type["ImageScaleBy"]
    assert api[upscale["image"][0]]["class_type"] == "VisualAnagramsStageI" and upscale["scale_by"] == 4.0
    assert (stage_1["rectify"], stage_1["anti_segregation"]) == (False, False)


def test_digits_from_picture_is_the_demo_started_from_the_handwritten_two():
    def settings(api: dict) -> dict[str, list[dict]]:
        """Each node's values by type; links, the picture and the savers' folders (their own) left out."""
        found = {}
        for node in api.values():
            if node["class_type"] != "LoadImage":
                ignored = ("start_image", "strength", "filename_prefix")
                values = {k: v for k, v in node["inputs"].items() if k not in ignored and not isinstance(v, list)}
                found.setdefault(node["class_type"], []).append(values)
        return found

    from_picture = api_workflow("digits_from_picture")
    # Models, prompts, views, sampler settings, upscaling and outputs: digits_demo's, but for the steps: the 30
    # its strengths were measured at (README, "Illusions from a picture").
    demo = settings(api_workflow("digits_demo"))
    (demo_stage_1,) = demo["VisualAnagramsStageI"]
    assert demo_stage_1["steps"] == 15
    demo_stage_1["steps"] = 30
    assert settings(from_picture) == demo
    stage_1 = samplers_of(from_picture)["VisualAnagramsStageI"]
    assert from_picture[stage_1["start_image"][0]]["inputs"]["image"] == DIGIT_TWO


def test_digits_mtl_is_the_demo_with_anagram_mtls_options():
    api = api_workflow("digits_mtl")
    (stage_1,) = [n["inputs"] for n in api.values() if n["class_type"] == "VisualAnagramsStageI"]
    assert (stage_1["seed"], stage_1["steps"], stage_1["guidance"], stage_1["candidates"]) == (0, 30, 4.0, 4)
    assert (stage_1["rectify"], stage_1["anti_segregation"]) == (True, True)
    loaders = [n["inputs"] for n in api.values() if n["class_type"].startswith("VisualAnagramsLoad")]
    assert [inputs.get("model", inputs.get("encoder")) for inputs in loaders] == [DEMO_MODEL, DEMO_MODEL]


@pytest.mark.parametrize("name", NAMES)
def test_every_image_is_saved(name):
    api = api_workflow(name)
    if name in DEMO_NAMES:  # 64 px illusions upscaled for viewing, saved under their own folder
        saves = [node for node in api.values() if node["class_type"] in ("SaveImage", "SaveAnimatedWEBP")]
        sources = sorted((api[n["inputs"]["images"][0]]["class_type"], n["inputs"]["images"][1]) for n in saves)
        assert sources == [("ImageScaleBy", 0), ("VisualAnagramsViewPreview", 0), ("VisualAnagramsViewPreview", 1)]
        folder = "visual_anagrams_demo" if name == "digits_demo" else f"visual_anagrams/{name}"
        assert sorted(n["inputs"]["filename_prefix"] for n in saves) == [
            f"{folder}/animation",
            f"{folder}/illusion",
            f"{folder}/views",
        ]
        return
    saves = [node for node in api.values() if node["class_type"] in ("SaveImage", "SaveAnimatedWEBP")]
    sources = sorted((api[n["inputs"]["images"][0]]["class_type"], n["inputs"]["images"][1]) for n in saves)
    # An example that picks its best candidates saves them captioned with their scores (output 1: scored) too.
    picked = [(SCORE, 1)] if name in PICKS else []
    assert sources == [
        *picked,
        ("VisualAnagramsStageII", 0),
        ("VisualAnagramsViewPreview", 0),
        ("VisualAnagramsViewPreview", 1),
    ]
    assert all(n["inputs"]["filename_prefix"].startswith(f"visual_anagrams/{name}") for n in saves)
    (webp,) = [n["inputs"] for n in saves if n["class_type"] == "SaveAnimatedWEBP"]
    assert (webp["fps"], webp["lossless"], webp["quality"], webp["method"]) == (24.0, False, 90, "default")


def test_pick_best_scores_stage_i_candidates_with_clip_and_refines_the_best_two():
    api = api_workflow("pick_best")
    (score_id,) = [node_id for node_id, node in api.items() if node["class_type"] == SCORE]
    score = api[score_id]["inputs"]
    samplers = samplers_of(api)
    # Stage I's 8 candidates -> the score -> its output 0 (best, best first) -> Stage II.
    assert api[score["images"][0]]["class_type"] == "VisualAnagramsStageI" and score["images"][1] == 0
    assert samplers["VisualAnagramsStageII"]["image"] == [score_id, 0]
    assert (score["rank_by"], score["top_k"], score["temperature"]) == ("both", 2, 0.01)
    assert (samplers["VisualAnagramsStageI"]["candidates"], score["top_k"]) == PICKS["pick_best"]
    # OpenAI's ViT-L/14 from the CLIP loader; the score reads the prompts the samplers read.
    clip = api[score["clip"][0]]
    assert clip["class_type"] == "VisualAnagramsLoadCLIP"
    assert clip["inputs"] == {"clip": "openai/clip-vit-large-patch14", "dtype": "auto"}
    assert score["prompts"] == samplers["VisualAnagramsStageI"]["prompts"]
    # Balancing stays off: the example changes which illusions are kept, not how they are drawn.
    assert not any(inputs["balance_views"] for inputs in samplers.values())
    saves = [n["inputs"] for n in api.values() if n["class_type"] == "SaveImage"]
    (scored,) = [inputs for inputs in saves if inputs["images"][0] == score_id]
    assert scored == {"images": [score_id, 1], "filename_prefix": "visual_anagrams/pick_best_scored"}


def test_with_tiny_models_swaps_models_steps_and_frames():
    original = api_workflow("three_views")
    tiny = with_tiny_models(original, steps=2)
    assert api_workflow("three_views") == original  # the file and the argument are left alone
    changed = {}
    for node_id, node in tiny.items():
        for name, value in node["inputs"].items():
            if value != original[node_id]["inputs"][name]:
                changed[(node["class_type"], name)] = value
    assert changed == {
        ("VisualAnagramsLoadStageI", "model"): "tiny-IF-I",
        ("VisualAnagramsLoadStageII", "model"): "tiny-IF-II",
        ("VisualAnagramsLoadT5", "encoder"): "tiny-t5",
        ("VisualAnagramsStageI", "steps"): 2,
        ("VisualAnagramsStageII", "steps"): 2,
        ("VisualAnagramsViewPreview", "frames_per_view"): 2,
    }
    smaller = with_tiny_models(original, steps=1, frames_per_view=3, hold_frames=0, candidates=1)
    preview = next(n for n in smaller.values() if n["class_type"] == "VisualAnagramsViewPreview")
    stage_1 = next(n for n in smaller.values() if n["class_type"] == "VisualAnagramsStageI")
    assert (preview["inputs"]["frames_per_view"], preview["inputs"]["hold_frames"]) == (3, 0)
    assert (stage_1["inputs"]["steps"], stage_1["inputs"]["candidates"]) == (1, 1)
    # The CLIP loader's Hub id becomes the tiny CLIP the test server holds.
    picked = with_tiny_models(api_workflow("pick_best"))
    clips = [n["inputs"]["clip"] for n in picked.values() if n["class_type"] == "VisualAnagramsLoadCLIP"]
    assert clips == [TINY_CLIP]


def test_with_tiny_models_keeps_the_embedded_demo_model():
    original = api_workflow("digits_demo")
    tiny = with_tiny_models(original, steps=2)
    loaders = [
        n["inputs"] for n in tiny.values() if n["class_type"] in ("VisualAnagramsLoadStageI", "VisualAnagramsLoadT5")
    ]
    assert [inputs.get("model", inputs.get("encoder")) for inputs in loaders] == [DEMO_MODEL, DEMO_MODEL]
    assert next(n for n in tiny.values() if n["class_type"] == "VisualAnagramsStageI")["inputs"]["steps"] == 2


def test_api_workflow_names_the_choices_when_missing():
    with pytest.raises(FileNotFoundError, match="flip"):
        api_workflow("no_such_workflow")


# -- against ComfyUI's node definitions ---------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_ui_and_api_twin_describe_the_same_graph(name, object_info):
    ui = ui_workflow(name)
    assert ui_to_api(ui, object_info) == api_workflow(name)
    # Seeds (the samplers' and the jigsaw's) are fixed in the UI, so the examples reproduce.
    controls = control_values(ui, object_info)
    assert controls and {mode for _, _, mode in controls} == {"fixed"}


def test_every_node_type_exists(object_info):
    used = {node["class_type"] for name in NAMES for node in api_workflow(name).values()}
    assert used <= set(object_info), f"unknown node types: {sorted(used - set(object_info))}"
    for class_type in used:
        assert class_type.startswith("VisualAnagrams") or class_type in (
            "SaveImage",
            "SaveAnimatedWEBP",
            "ImageScaleBy",
            "LoadImage",
            "SolidMask",
            "MaskComposite",
        )


@pytest.mark.parametrize("name", NAMES)
def test_every_value_is_allowed_by_the_schema(name, object_info):
    for node_id, node in api_workflow(name).items():
        info = object_info[node["class_type"]]
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        required = set(info["input"].get("required", {}))
        assert required <= set(node["inputs"]), f"node {node_id}: missing {required - set(node['inputs'])}"
        widgets = {widget for widget, _ in widget_inputs(info)}
        for input_name, value in node["inputs"].items():
            assert input_name in specs, f"node {node_id} ({node['class_type']}) has no input {input_name!r}"
            spec = specs[input_name]
            kind = "COMBO" if isinstance(spec[0], list) else spec[0]
            options = (spec[1] if len(spec) > 1 else None) or {}
            where = f"node {node_id} ({node['class_type']}).{input_name}={value!r}"
            if input_name not in widgets:
                assert isinstance(value, list) and len(value) == 2, f"{where}: a socket takes a link"
                assert kind == object_info[api_workflow(name)[value[0]]["class_type"]]["output"][value[1]], where
                continue
            if kind == "COMBO":
                choices = spec[0] if isinstance(spec[0], list) else options["options"]
                # Model names depend on the user's folders; the Hub ids are listed today, but need not be.
                if (node["class_type"], input_name) not in MODEL_INPUTS:
                    assert value in choices, f"{where} is not one of {choices}"
            elif kind in ("INT", "FLOAT"):
                assert isinstance(value, (int, float)) and not isinstance(value, bool), where
                if kind == "INT":
                    assert float(value).is_integer(), where
                assert options.get("min", value) <= value <= options.get("max", value), where
            elif kind == "BOOLEAN":
                assert isinstance(value, bool), where
            elif kind == "STRING":
                assert isinstance(value, str), where


@pytest.mark.parametrize("name", NAMES)
def test_comfyui_accepts_the_api_workflow(name, facts):
    verdict = facts["validation"][name]
    assert verdict["valid"], json.dumps(verdict, indent=2)
    assert not verdict["node_errors"]


def test_build_script_check_passes(comfyui_checkout):
    comfyui_dir = comfyui_checkout
    completed = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--check"],
        check=False,
        cwd=REPO,
        env={**os.environ, "COMFYUI_DIR": str(comfyui_dir)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
