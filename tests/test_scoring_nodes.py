"""CLIP scoring through a real ComfyUI: the CLIP loader's list and refusals, the Illusion Score node's ranking
(checked against the core's, computed here on the same pictures), the samplers' view balancing, and hostile
API values. The server's models/clip_vision holds the tiny random CLIP (tests/tiny_clip.py)."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch

from comfy_server import PromptRejected
from pack import import_submodule
from tiny_graphs import prompt_nodes, save, stage_1_nodes
from workflow_tools import DEMO_MODEL, TINY_CLIP

clip_models = import_submodule("sampling.clip_models")
illusion_scores = import_submodule("sampling.illusion_scores")
views_module = import_submodule("views")

LOADER = "VisualAnagramsLoadCLIP"
SCORE = "VisualAnagramsIllusionScore"
LOADER_LABEL = "CLIP Loader (illusion scoring)"
SCORE_LABEL = "Illusion Score"
STAGE_I_LABEL = "Anagram Sampler (Stage I)"
DIGITS = {"prompt_1": "the digit two", "prompt_2": "the digit five"}
CANDIDATES = 4


def clip_loader(clip: str = TINY_CLIP, dtype: str = "auto") -> dict:
    return {"class_type": LOADER, "inputs": {"clip": clip, "dtype": dtype}}


def score_node(images: list, **inputs) -> dict:
    """Illusion Score over ``images`` (a link), the CLIP at "20", the views at "3" and the prompts at "4"."""
    defaults = {"rank_by": "both", "top_k": 2, "temperature": 0.01}
    links = {"clip": ["20", 0], "images": images, "views": ["3", 0], "prompts": ["4", 0]}
    return {"class_type": SCORE, "inputs": {**links, **defaults, **inputs}}


def show(link: list) -> dict:
    """ComfyUI's Preview as Text: the value lands in the history's outputs, one text per list item."""
    return {"class_type": "PreviewAny", "inputs": {"source": link}}


def digits_front() -> dict:
    """The digits demo's front (embedded T5, identity + flip, no style) and the tiny CLIP at "20"."""
    return {**prompt_nodes(DIGITS, style="", encoder=DEMO_MODEL), "20": clip_loader()}


def texts(result, node_id: str) -> list[str]:
    return list(result.outputs[node_id]["text"])


def images_of(comfy_server, result, node_id: str):
    return [comfy_server.open_image(ref).convert("RGB") for ref in result.images if ref.node_id == node_id]


def rejection(comfy_server, graph) -> str:
    with pytest.raises(PromptRejected) as caught:
        comfy_server.run(graph)
    return json.dumps(caught.value.body)


def assert_still_serving(comfy_server) -> None:
    assert comfy_server.system_stats()["system"]


# -- the loader and the sockets ------------------------------------------------------------------------------


def test_the_schemas_offer_the_clip_where_it_is_used(comfy_server):
    info = comfy_server.object_info()
    loader = info[LOADER]
    assert loader["category"] == "visual_anagrams/loaders" and loader["output"] == ["VA_CLIP"]
    options = loader["input"]["required"]["clip"][1]["options"]
    assert options[0] == TINY_CLIP and options[1:] == list(clip_models.CLIP_HUB_IDS)
    assert loader["input"]["required"]["dtype"][1]["options"] == ["auto", "fp16", "bf16", "fp32"]

    score = info[SCORE]
    assert score["output"] == ["IMAGE", "IMAGE", "STRING", "FLOAT", "FLOAT", "INT"]
    assert score["output_is_list"] == [False, False, False, True, True, True]
    required = score["input"]["required"]
    assert required["clip"][0] == "VA_CLIP" and required["prompts"][0] == "VA_PROMPTS"
    assert required["rank_by"][1]["options"] == list(illusion_scores.RANK_BY)
    assert required["rank_by"][1]["default"] == "both"
    assert (required["top_k"][1]["default"], required["top_k"][1]["min"]) == (2, 1)
    temperature = required["temperature"][1]
    assert (temperature["default"], temperature["min"], temperature["max"]) == (0.01, 0.001, 1.0)

    for sampler in ("VisualAnagramsStageI", "VisualAnagramsStageII"):
        optional = info[sampler]["input"]["optional"]
        assert optional["balance_views"][1]["default"] is False
        assert optional["balancing_clip"][0] == "VA_CLIP"
        # New widgets come last, so the values of workflows saved before them keep their places.
        order = info[sampler]["input_order"]["optional"]
        assert order[-2:] == ["balance_views", "balancing_clip"]
    names = list(info)
    assert names.index(LOADER) < names.index("VisualAnagramsPromptEncoder")
    assert names.index("VisualAnagramsStageII") < names.index(SCORE) < names.index("VisualAnagramsStageIII")


def test_the_loader_lists_clip_folders_only_and_refuses_the_rest(comfy_server):
    """A GLIDE folder is listed (and its broken files are named when it loads); a broken config, a vision
    encoder alone and an unlisted name are refused by validation with the valid choices."""
    clip_vision = comfy_server.models_dir / "clip_vision"
    glide, broken, vision_only = clip_vision / "glide-clip", clip_vision / "broken-clip", clip_vision / "vision-only"
    try:
        glide.mkdir()
        for name in ("clip_image_enc.pt", "clip_text_enc.pt", "bpe_simple_vocab_16e6.txt.gz"):
            (glide / name).write_bytes(b"not a checkpoint")
        broken.mkdir()
        (broken / "config.json").write_text("{not json")
        vision_only.mkdir()
        (vision_only / "config.json").write_text(json.dumps({"model_type": "clip_vision_model"}))
        deadline = time.monotonic() + 10
        while True:  # listings are cached for a moment (nodes/model_lists.py)
            options = comfy_server.object_info(LOADER)[LOADER]["input"]["required"]["clip"][1]["options"]
            if "glide-clip" in options or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert options[:2] == ["glide-clip", TINY_CLIP], options
        assert "broken-clip" not in options and "vision-only" not in options

        graph = {**digits_front(), "30": show(["20", 0])}
        for name, reason in (
            ("broken-clip", "that folder is broken"),
            ("vision-only", "it is not a model this loader lists"),
            ("../clip_vision/tiny-clip", "it is not a model this loader lists"),
        ):
            graph["20"] = clip_loader(name)
            body = rejection(comfy_server, graph)
            assert f"{LOADER_LABEL}: clip '{name}' cannot be loaded: {reason}" in body, body
            assert f"'{TINY_CLIP}'" in body and "models/clip_vision" in body, body

        graph["20"] = clip_loader("glide-clip")
        result = comfy_server.run(graph, check=False)
        assert result.status == "error"
        message = result.error["exception_message"]
        assert message.startswith(f"{LOADER_LABEL}: clip 'glide-clip': "), message
        assert "bpe_simple_vocab_16e6.txt.gz" in message, message
    finally:
        for folder in (glide, broken, vision_only):
            shutil.rmtree(folder, ignore_errors=True)
    assert_still_serving(comfy_server)


# -- scoring and ranking -------------------------------------------------------------------------------------


def test_illusion_score_ranks_the_candidates_as_the_core_does(comfy_server, tmp_path):
    """Digits candidates are drawn and saved, read back by LoadImage (so the server scores exactly the 8-bit
    pictures this test reads), scored and ranked; the core's ranking of the same pictures with the same
    tiny CLIP, computed here, must agree, and so must the numbers."""
    drawn = comfy_server.run(
        {
            **digits_front(),
            **stage_1_nodes(model=DEMO_MODEL, candidates=CANDIDATES, steps=3, guidance=4.0),
            "9": save(["6", 0], "va/score_candidates"),
        },
        timeout=600,
    )
    refs = [ref for ref in drawn.images if ref.node_id == "9"]
    assert len(refs) == CANDIDATES
    candidates = [comfy_server.open_image(ref).convert("RGB") for ref in refs]

    graph = digits_front()
    for index, ref in enumerate(refs):
        graph[f"4{index}"] = {
            "class_type": "LoadImage",
            "inputs": {"image": f"{ref.subfolder}/{ref.filename} [output]"},
        }
    batch = ["40", 0]
    for index in range(1, CANDIDATES):
        graph[f"5{index}"] = {"class_type": "ImageBatch", "inputs": {"image1": batch, "image2": [f"4{index}", 0]}}
        batch = [f"5{index}", 0]
    graph.update(
        {
            "21": score_node(batch, top_k=2),
            "22": save(["21", 0], "va/score_best"),
            "23": save(["21", 1], "va/score_scored"),
            "24": show(["21", 2]),
            "25": show(["21", 3]),
            "26": show(["21", 4]),
            "27": show(["21", 5]),
            # More than the batch holds: every candidate, ranked.
            "28": score_node(batch, top_k=100, rank_by="alignment"),
            "29": show(["28", 5]),
        }
    )
    result = comfy_server.run(graph, timeout=600)

    pixels = torch.from_numpy(np.stack([np.asarray(image, dtype=np.float32) / 255.0 for image in candidates]))
    scorer = clip_models.load_clip(comfy_server.models_dir / "clip_vision" / TINY_CLIP, device="cpu")
    views = [views_module.make_view("identity"), views_module.make_view("flip")]
    scores = illusion_scores.score_illusions(
        scorer, pixels.movedim(-1, 1) * 2 - 1, views, list(DIGITS.values()), temperature=0.01
    )
    order = illusion_scores.rank_candidates(scores, "both")

    assert [int(text) for text in texts(result, "27")] == [k + 1 for k in order[:2]]
    for node_id, expected in (("25", scores.alignment), ("26", scores.concealment)):
        assert [float(text) for text in texts(result, node_id)] == pytest.approx(
            [float(expected[k]) for k in order[:2]], abs=1e-5
        )
    best = images_of(comfy_server, result, "22")
    assert [image.tobytes() for image in best] == [candidates[k].tobytes() for k in order[:2]]
    scored = images_of(comfy_server, result, "23")
    assert len(scored) == 2
    for picture, captioned in zip(best, scored, strict=True):
        assert captioned.size[0] == 64 and captioned.size[1] > 64  # a caption strip under the picture
        assert captioned.crop((0, 0, 64, 64)).tobytes() == picture.tobytes()

    (report,) = texts(result, "24")
    lines = report.splitlines()
    header = next(index for index, line in enumerate(lines) if line.startswith("place"))
    assert lines[header].split() == ["place", "candidate", "A", "C", "S_11", "S_22"]
    rows = [line.split() for line in lines[header + 1 : header + 1 + CANDIDATES]]
    assert [row[0] for row in rows] == ["#1", "#2", "#3", "#4"]
    assert [int(row[1]) for row in rows] == [k + 1 for k in order]
    for row, k in zip(rows, order, strict=True):
        diagonal = scores.similarities[k].diagonal()
        expected = [scores.alignment[k], scores.concealment[k], *diagonal]
        assert [float(value) for value in row[2:]] == pytest.approx([float(v) for v in expected], abs=2e-4)
    assert "the digit two" in report and "min_i S_ii" in report

    by_alignment = illusion_scores.rank_candidates(scores, "alignment")
    assert [int(text) for text in texts(result, "29")] == [k + 1 for k in by_alignment]


# -- balancing in the samplers -------------------------------------------------------------------------------


def balancing_graph(**sampler) -> dict:
    """Stage I on the tiny IF (2 steps, 2 candidates) with the tiny CLIP at "20", saved at "9"."""
    return {
        **prompt_nodes(),
        **stage_1_nodes(steps=2, candidates=2, **sampler),
        "20": clip_loader(),
        "9": save(["6", 0], "va/balancing"),
    }


def test_balance_views_uses_the_clip_and_off_is_the_plain_run(comfy_server):
    def pixels(**sampler) -> list[bytes]:
        result = comfy_server.run(balancing_graph(**sampler), timeout=600)
        return [image.tobytes() for image in images_of(comfy_server, result, "9")]

    plain = pixels()
    # Off, a linked CLIP is not used: the same bytes as a graph written before the option.
    assert pixels(balance_views=False, balancing_clip=["20", 0]) == plain
    balanced = pixels(balance_views=True, balancing_clip=["20", 0])
    assert len(balanced) == 2 and balanced != plain

    result = comfy_server.run(balancing_graph(balance_views=True), check=False, timeout=600)
    assert result.status == "error"
    message = result.error["exception_message"]
    assert message.startswith(f"{STAGE_I_LABEL}: balance_views needs a CLIP"), message
    assert "connect a CLIP Loader (illusion scoring) to balancing_clip" in message
    assert_still_serving(comfy_server)


# -- hostile values ------------------------------------------------------------------------------------------


def odd_image(*, batch=2, size=64, fill="0.5") -> dict:
    return {"class_type": "HarnessOddImage", "inputs": {"batch": batch, "size": size, "channels": 3, "fill": fill}}


def hostile_graph(**score_inputs) -> dict:
    """Illusion Score over two flat test pictures (the harness's), its outputs shown."""
    return {**digits_front(), "10": odd_image(), "21": score_node(["10", 0], **score_inputs), "24": show(["21", 2])}


@pytest.mark.parametrize(
    "inputs, expected",
    [
        ({"top_k": 0}, "top_k"),
        ({"top_k": -3}, "top_k"),
        ({"top_k": 10**30}, "top_k"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("nan")}, "NaN or infinite"),
        ({"rank_by": "beauty"}, "is not one of its choices"),
    ],
    ids=["top_k-0", "top_k-negative", "top_k-huge", "temperature-0", "temperature-nan", "rank_by-unlisted"],
)
def test_hostile_widget_values_are_refused_before_anything_runs(comfy_server, inputs, expected):
    body = rejection(comfy_server, hostile_graph(**inputs))
    assert expected in body, body


def _clip_literal(graph):
    graph["21"]["inputs"]["clip"] = TINY_CLIP


def _nan_pixels(graph):
    graph["10"] = odd_image(fill="nan")


def _not_square(graph):
    graph["10"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0}}


def _view_that_does_not_fit(graph):
    graph["3"] = {
        "class_type": "VisualAnagramsView_patch_permute",
        "inputs": {"views": ["2", 0], "patches_per_side": 8, "seed": 0},
    }
    graph["10"] = odd_image(size=60)


def _prompts_of_another_chain(graph):
    graph["30"] = {"class_type": "VisualAnagramsView_rotate_cw", "inputs": {"views": ["3", 0]}}
    graph["21"]["inputs"]["views"] = ["30", 0]


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            _clip_literal,
            f"clip: got the text '{TINY_CLIP}' where a link is expected. Connect the output of {LOADER_LABEL}",
        ),
        (_nan_pixels, "images: 24576 pixel values are NaN or infinite (images 1, 2 of 2)"),
        (_not_square, "images: views need square images, got 64x48 px"),
        (_view_that_does_not_fit, "views: view 2 (Patch permutation) cannot show 60 px images"),
        (_prompts_of_another_chain, "prompts: 2 prompts for 3 views. Connect the prompts encoded for this view chain"),
    ],
    ids=["clip-literal", "nan-pixels", "not-square", "view-does-not-fit", "prompts-of-another-chain"],
)
def test_inputs_that_cannot_be_scored_name_the_input_and_the_fix(comfy_server, change, expected):
    graph = hostile_graph()
    change(graph)
    result = comfy_server.run(graph, check=False, timeout=600)
    assert result.status == "error", result.status_messages
    message = result.error["exception_message"]
    assert message.startswith(f"{SCORE_LABEL}: "), message
    assert expected in message, message
    assert_still_serving(comfy_server)
