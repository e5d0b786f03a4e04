"""The pack's nodes in a real ComfyUI server, driven through its HTTP API and websocket."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import torch
from PIL import Image

from comfy_server import PromptRejected, comfyui_dir
from pack import import_submodule
from tiny_graphs import NO_PROMPTS, prompt_nodes, save, stage_1_nodes, stage_2_nodes
from workflow_tools import DEMO_MODEL, api_workflow, stock_input_folder, with_tiny_models, workflow_names

views_module = import_submodule("views")

PACK_NODES = {
    "VisualAnagramsLoadStageI",
    "VisualAnagramsLoadStageII",
    "VisualAnagramsLoadStageIII",
    "VisualAnagramsLoadT5",
    "VisualAnagramsPromptEncoder",
    "VisualAnagramsStageI",
    "VisualAnagramsStageII",
    "VisualAnagramsStageIII",
    "VisualAnagramsViewPreview",
    "VisualAnagramsLoadCLIP",
    "VisualAnagramsIllusionScore",
} | {f"VisualAnagramsView_{name}" for name in views_module.VIEW_CLASSES}


def flip_graph(
    *,
    steps=2,
    candidates=2,
    second_view=("VisualAnagramsView_flip", {}),
    prompts=None,
    stage_1_model="tiny-IF-I",
    frames=4,
):
    """Loaders -> two views -> prompts -> Stage I -> Stage II -> saves and the view preview."""
    sampler = {"seed": 3, "steps": steps}
    return {
        **prompt_nodes(prompts, second_view=second_view),
        **stage_1_nodes(model=stage_1_model, candidates=candidates, **sampler),
        **stage_2_nodes(["6", 0], **sampler),
        "9": save(["8", 0], "va/stage2"),
        "10": save(["6", 0], "va/stage1"),
        "11": {
            "class_type": "VisualAnagramsViewPreview",
            "inputs": {
                "image": ["8", 0],
                "views": ["3", 0],
                "prompts": ["4", 0],
                "frames_per_view": frames,
                "hold_frames": 1,
            },
        },
        "12": save(["11", 0], "va/grid"),
        "13": {"class_type": "PreviewImage", "inputs": {"images": ["11", 1]}},
    }


def images_of(comfy_server, result, node_id):
    return [comfy_server.open_image(ref) for ref in result.images if ref.node_id == node_id]


def assert_still_serving(comfy_server):
    assert comfy_server.system_stats()["system"]


def execution_error(comfy_server, graph) -> dict:
    result = comfy_server.run(graph, check=False)
    assert result.status == "error", result.status_messages
    return result.error


# -- the nodes are there ------------------------------------------------------------------------


def test_object_info_lists_every_node_with_inputs_outputs_and_tooltips(comfy_server):
    info = comfy_server.object_info()
    assert PACK_NODES <= set(info), sorted(PACK_NODES - set(info))
    for node_id in PACK_NODES:
        node = info[node_id]
        assert node["category"].startswith("visual_anagrams"), node_id
        assert node["display_name"] and node["description"], node_id
        assert node["output"], node_id
        for section in ("required", "optional"):
            for name, (_kind, *options) in node["input"].get(section, {}).items():
                assert options and options[0].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_view_nodes_carry_the_papers_defaults(comfy_server):
    info = comfy_server.object_info()
    required = lambda node: info[node]["input"]["required"]  # noqa: E731
    assert required("VisualAnagramsView_patch_permute")["patches_per_side"][1]["default"] == 8
    assert required("VisualAnagramsView_pixel_permute")["patches_per_side"][1]["default"] == 64
    assert required("VisualAnagramsView_skew")["factor"][1]["default"] == 1.5
    assert required("VisualAnagramsView_inner_circle")["radius"][1]["default"] == 0.375
    assert required("VisualAnagramsView_low_pass")["sigma"][1]["default"] == 2.0
    stage_1 = required("VisualAnagramsStageI")
    assert stage_1["steps"][1]["default"] == 30 and stage_1["guidance"][1]["default"] == 10.0
    assert stage_1["seed"][1]["control_after_generate"] is True
    # A view's seed is its arrangement: it stays put between runs.
    assert required("VisualAnagramsView_jigsaw")["seed"][1]["control_after_generate"] is False
    assert required("VisualAnagramsStageII")["noise_level"][1]["default"] == 50
    # The loaders list the tiny models of the right stage only, and the Hub ids.
    stage_1_models = required("VisualAnagramsLoadStageI")["model"][1]["options"]
    assert "tiny-IF-I" in stage_1_models and "tiny-IF-II" not in stage_1_models
    assert "DeepFloyd/IF-I-XL-v1.0" in stage_1_models


def test_loaders_list_the_embedded_demo_model_for_stage_i_and_t5_only(comfy_server):
    info = comfy_server.object_info()
    options = lambda node, name: info[node]["input"]["required"][name][1]["options"]  # noqa: E731
    # Found in the pack itself, not in ComfyUI's model folders (which hold only the tiny test models).
    assert DEMO_MODEL in options("VisualAnagramsLoadStageI", "model")
    assert DEMO_MODEL in options("VisualAnagramsLoadT5", "encoder")
    assert DEMO_MODEL not in options("VisualAnagramsLoadStageII", "model")
    assert DEMO_MODEL not in options("VisualAnagramsLoadStageIII", "model")
    assert not list((comfy_server.models_dir / "diffusers").glob("*digits*"))


# -- a whole run --------------------------------------------------------------------------------


def test_flip_illusion_runs_with_progress_previews_and_expected_images(comfy_server):
    result = comfy_server.run(flip_graph(steps=2, candidates=2), timeout=600)
    stage_1 = images_of(comfy_server, result, "10")
    stage_2 = images_of(comfy_server, result, "9")
    grid = images_of(comfy_server, result, "12")
    frames = images_of(comfy_server, result, "13")
    assert [image.size for image in stage_1] == [(64, 64)] * 2
    assert [image.size for image in stage_2] == [(256, 256)] * 2
    assert len(grid) == 1 and grid[0].size[0] == 2 * 256 and grid[0].size[1] > 2 * 256  # 2 views x 2 rows + captions
    # Identity has nothing to animate: one transition (4 frames), hold, back, hold.
    assert len(frames) == 4 + 1 + 4 + 1 and frames[0].size == (384, 384)
    progress_nodes = {m.data.get("node") for m in result.messages_of("progress")}
    assert {"6", "8"} <= progress_nodes
    assert len(result.previews) >= 4  # one per sampling step of each stage
    assert result.previews[0].image().size[0] > 0


def test_seed_makes_runs_repeatable_and_changing_it_changes_the_image(comfy_server):
    first = comfy_server.run(flip_graph(steps=1, candidates=1), timeout=600)
    again = comfy_server.run(
        {
            **flip_graph(steps=1, candidates=1),
            "99": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "va/again"}},
        },
        timeout=600,
    )
    graph = flip_graph(steps=1, candidates=1)
    graph["6"]["inputs"]["seed"] = 4
    other = comfy_server.run(graph, timeout=600)
    pixels = lambda result, node: images_of(comfy_server, result, node)[0].tobytes()  # noqa: E731
    assert pixels(first, "10") == pixels(again, "99")
    assert pixels(first, "10") != pixels(other, "10")


def test_changing_only_the_seed_does_not_reload_or_re_encode(comfy_server):
    comfy_server.run(flip_graph(steps=1, candidates=1), timeout=600)
    graph = flip_graph(steps=1, candidates=1)
    graph["6"]["inputs"]["seed"] = 11
    result = comfy_server.run(graph, timeout=600)
    cached = {node for message in result.messages_of("execution_cached") for node in message.data["nodes"]}
    assert {"1", "2", "3", "4", "5", "7"} <= cached  # loaders, views and the prompt encoder
    executed = {m.data.get("node") for m in result.messages_of("executing")}
    assert "6" in executed and "4" not in executed


def viewer_graph(views=("identity", "flip", "negate", "jigsaw"), size=128, frames=3):
    """An image -> a view chain -> (T5 + prompts) -> the view preview, with nothing after it."""
    graph = {
        "1": {
            "class_type": "VisualAnagramsLoadT5",
            "inputs": {"encoder": "tiny-t5", "precision": "auto", "device": "default"},
        },
        "2": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": 2, "color": 0x3366CC},
        },
    }
    previous = None
    for index, name in enumerate(views):
        node_id = str(10 + index)
        inputs = {spec.name: spec.default for spec in views_module.VIEW_CLASSES[name].PARAMS}
        if previous:
            inputs["views"] = [previous, 0]
        graph[node_id] = {"class_type": f"VisualAnagramsView_{name}", "inputs": inputs}
        previous = node_id
    prompts = {f"prompt_{k + 1}": f"thing {k + 1}" for k in range(len(views))}
    graph["3"] = {
        "class_type": "VisualAnagramsPromptEncoder",
        "inputs": {
            "text_encoder": ["1", 0],
            "views": [previous, 0],
            "style": "a photo of",
            "negative": "",
            "unload_encoder": False,
            **NO_PROMPTS,
            **prompts,
        },
    }
    graph["4"] = {
        "class_type": "VisualAnagramsViewPreview",
        "inputs": {
            "image": ["2", 0],
            "views": [previous, 0],
            "prompts": ["3", 0],
            "frames_per_view": frames,
            "hold_frames": 2,
        },
    }
    return graph


def test_view_preview_is_an_output_node_sending_the_viewer_pictures_captions_and_motions(comfy_server):
    result = comfy_server.run(viewer_graph(), timeout=300)
    # Nothing reads its outputs, yet it ran: an output node, its viewer data in the history.
    (viewer,) = result.outputs["4"]["visual_anagrams_viewer"]
    assert [view["name"] for view in viewer["views"]] == ["identity", "flip", "negate", "jigsaw"]
    assert [view["mode"] for view in viewer["views"]] == ["still", "css", "css", "frames"]
    assert [view["caption"] for view in viewer["views"]] == [f"a photo of thing {k}" for k in range(1, 5)]
    assert viewer["views"][1]["css"] == {
        "from": {"transform": "rotate(0deg) rotateX(0deg)", "filter": "invert(0)"},
        "to": {"transform": "rotate(0deg) rotateX(180deg)", "filter": "invert(0)"},
    }
    assert viewer["views"][2]["css"]["to"] == {"transform": "rotate(0deg) rotateX(0deg)", "filter": "invert(1)"}
    assert (viewer["frames_per_view"], viewer["hold_frames"]) == (3, 2)
    assert viewer["picture_fraction"] == pytest.approx(128 / 192)
    pictures = [comfy_server.open_image(ref) for ref in viewer["images"]]
    assert [picture.size for picture in pictures] == [(128, 128)] * 2  # the whole batch
    assert pictures[0].convert("RGB").getpixel((5, 5)) == (0x33, 0x66, 0xCC)
    # One sprite sheet per picture for the jigsaw: its frames, row by row, on a white canvas 1.5x the picture.
    sprites = viewer["views"][3]["sprites"]
    assert len(sprites) == 2 and all(ref["type"] == "temp" for ref in sprites + viewer["images"])
    for sprite in sprites:
        sheet = comfy_server.open_image(sprite)
        assert sprite["frames"] == 3 and sprite["frame_size"] == 192
        assert sprite["columns"] * sprite["rows"] >= 3
        assert sheet.size == (sprite["columns"] * 192, sprite["rows"] * 192)
        corner, middle = sheet.convert("RGB").getpixel((3, 3)), sheet.convert("RGB").getpixel((96, 96))
        assert min(corner) > 245  # the white margin of the first frame
        assert max(abs(a - b) for a, b in zip(middle, (0x33, 0x66, 0xCC), strict=True)) < 12  # the picture (lossy WEBP)
    assert not result.images  # the viewer's files are no "images" the frontend would draw a second time


def test_view_preview_shows_a_hybrids_fine_detail_as_the_picture_at_rest(comfy_server):
    result = comfy_server.run(viewer_graph(views=("low_pass", "high_pass")), timeout=300)
    (viewer,) = result.outputs["4"]["visual_anagrams_viewer"]
    # Up close (the picture) reads as the high-pass prompt; stepping back (the frames) as the low-pass one.
    assert [view["mode"] for view in viewer["views"]] == ["frames", "still"]
    assert "sprites" not in viewer["views"][1] and len(viewer["views"][0]["sprites"]) == 2


def test_saved_png_carries_the_workflow(comfy_server):
    workflow = {"nodes": [], "links": [], "version": 0.4, "extra": {"marker": "visual-anagrams"}}
    result = comfy_server.run(
        flip_graph(steps=1, candidates=1), timeout=600, extra_data={"extra_pnginfo": {"workflow": workflow}}
    )
    ref = next(ref for ref in result.images if ref.node_id == "9")
    png = Image.open(io.BytesIO(comfy_server.fetch_image(ref)))
    assert "visual-anagrams" in png.info["workflow"]
    assert "VisualAnagramsStageII" in png.info["prompt"]


def test_interrupt_stops_a_run_within_a_step_and_the_next_prompt_runs(comfy_server):
    graph = flip_graph(steps=400, candidates=1)
    for node in ("8", "9", "11", "12", "13"):  # Stage I alone: each step is short
        graph.pop(node)
    listener = comfy_server.ws
    prompt_id = comfy_server.queue(graph)
    listener.wait_for(
        lambda m: m.type == "progress" and m.prompt_id == prompt_id and m.data.get("node") == "6", timeout=300
    )
    comfy_server.interrupt()
    interrupted_at = time.monotonic()
    entry = comfy_server.wait(prompt_id, timeout=120)
    stopped_after = time.monotonic() - interrupted_at
    kinds = [kind for kind, _ in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds
    steps_seen = [m.data["value"] for m in listener.messages(prompt_id, "progress") if m.data.get("node") == "6"]
    assert max(steps_seen) < 400
    assert stopped_after < 30
    comfy_server.run(flip_graph(steps=1, candidates=1), timeout=600)


@pytest.fixture(scope="module")
def example_inputs(comfy_server):
    """The server's input folder as a user's is: the pack copied its example pictures there when it loaded,
    and ComfyUI's own example.png, which a checkout ships in its input folder, is copied from there (the test
    server's input folder is private and starts empty)."""
    stock_input_folder(comfy_server.input_dir, comfyui_dir())
    return comfy_server


@pytest.mark.parametrize("name", workflow_names())
def test_every_api_example_runs_with_the_tiny_models(example_inputs, name):
    comfy_server = example_inputs
    # Two steps, so the examples with anti-segregation refine once (never after the last step).
    graph = with_tiny_models(api_workflow(name), steps=2, frames_per_view=2, hold_frames=0)
    result = comfy_server.run(graph, timeout=900)
    # Each saver by what it saves (ComfyUI runs output nodes in no promised order).
    saved = {}
    for ref in result.images:
        source = graph[graph[ref.node_id]["inputs"]["images"][0]]["class_type"]
        saved.setdefault((graph[ref.node_id]["class_type"], source), []).append(comfy_server.open_image(ref))
    candidates = next(n["inputs"]["candidates"] for n in graph.values() if n["class_type"] == "VisualAnagramsStageI")
    views = sum(n["class_type"].startswith("VisualAnagramsView_") for n in graph.values())
    # An example that picks its best candidates (the tiny CLIP scores them) goes on with top_k of them, and saves
    # those picks at Stage I's 64 px, each with a caption strip below it giving its scores.
    scores = [n["inputs"] for n in graph.values() if n["class_type"] == "VisualAnagramsIllusionScore"]
    kept = scores[0]["top_k"] if scores else candidates
    if scores:
        scored = saved[("SaveImage", "VisualAnagramsIllusionScore")]
        assert len(scored) == kept < candidates
        assert all(image.width == 64 and image.height > 64 for image in scored)
    # The paper's examples save Stage II's 256 px; the digits demo its 64 px Stage I upscaled 4x.
    illusions = saved.get(("SaveImage", "VisualAnagramsStageII")) or saved[("SaveImage", "ImageScaleBy")]
    grid = saved[("SaveImage", "VisualAnagramsViewPreview")]
    assert [image.size for image in illusions] == [(256, 256)] * kept
    assert len(grid) == 1 and grid[0].size[0] == views * 256
    (animation,) = saved[("SaveAnimatedWEBP", "VisualAnagramsViewPreview")]
    assert animation.size == (384, 384) and animation.n_frames >= 2
    first = animation.convert("RGB").tobytes()
    animation.seek(1)
    assert animation.convert("RGB").tobytes() != first  # it moves


def test_digits_demo_runs_for_real_on_the_embedded_model(comfy_server):
    """The README's first command: the demo workflow exactly as shipped (embedded model, its own steps)."""
    graph = api_workflow("digits_demo")
    result = comfy_server.run(graph, timeout=900)
    by_prefix = {}
    for ref in result.images:
        by_prefix.setdefault(graph[ref.node_id]["inputs"]["filename_prefix"], []).append(ref)
    assert sorted(by_prefix) == [
        "visual_anagrams_demo/animation",
        "visual_anagrams_demo/illusion",
        "visual_anagrams_demo/views",
    ]
    illusions = [comfy_server.open_image(ref).convert("RGB") for ref in by_prefix["visual_anagrams_demo/illusion"]]
    assert [image.size for image in illusions] == [(256, 256)] * 4
    (grid,) = [comfy_server.open_image(ref) for ref in by_prefix["visual_anagrams_demo/views"]]
    assert grid.size[0] == 2 * 256
    (animation,) = [comfy_server.open_image(ref) for ref in by_prefix["visual_anagrams_demo/animation"]]
    assert animation.n_frames > 10

    # The illusions are the sampler's 64 px pictures, upscaled 4x: shrunk back they are digits-like pictures
    # (paper-coloured margin, some ink); whether they read as "2" and "5" is tests/test_demo_model.py's job.
    pixels = (
        torch.stack(
            [torch.from_numpy(np.asarray(image.resize((64, 64), Image.BOX), dtype=np.float32)) for image in illusions]
        ).permute(0, 3, 1, 2)
        / 127.5
        - 1
    )
    assert pixels.shape == (4, 3, 64, 64)
    margin = torch.cat([pixels[..., :6, :].flatten(2), pixels[..., -6:, :].flatten(2)], dim=2)
    assert margin.mean() > 0.3  # light paper around the digit
    assert (pixels.mean(1) < -0.2).float().mean() > 0.02  # dark ink somewhere


def saved_by_prefix(comfy_server, graph, result) -> dict[str, list]:
    """The run's saved pictures, by their saver's filename prefix."""
    found = {}
    for ref in result.images:
        found.setdefault(graph[ref.node_id]["inputs"]["filename_prefix"], []).append(comfy_server.open_image(ref))
    return found


def shrunk_to_model_space(images) -> torch.Tensor:
    """The demo's 256 px saved illusions back at the sampler's 64 px, in [-1, 1]: (K, 3, 64, 64)."""
    pixels = [np.asarray(image.convert("RGB").resize((64, 64), Image.BOX), dtype=np.float32) for image in images]
    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2) / 127.5 - 1


def test_digits_from_picture_runs_for_real_on_the_embedded_model(comfy_server):
    """The picture example on the embedded model, as shipped: LoadImage finds the handwritten 2 the pack
    copied into the input folder when ComfyUI loaded it, and Stage I starts from it."""
    picture_file = comfy_server.input_dir / "visual_anagrams_digit_two.png"
    assert picture_file.is_file()
    graph = api_workflow("digits_from_picture")
    saved = saved_by_prefix(comfy_server, graph, comfy_server.run(graph, timeout=900))
    folder = "visual_anagrams/digits_from_picture"
    assert sorted(saved) == [f"{folder}/animation", f"{folder}/illusion", f"{folder}/views"]
    assert [image.size for image in saved[f"{folder}/illusion"]] == [(256, 256)] * 4
    (grid,) = saved[f"{folder}/views"]
    assert grid.size[0] == 2 * 256

    # Without its start picture the workflow is digits_demo's (tests/test_workflows.py checks that): run that
    # sampler alone, saving only its illusions, to compare candidate k with candidate k (the same seed).
    left_out = ("LoadImage", "VisualAnagramsViewPreview", "SaveImage", "SaveAnimatedWEBP")
    text_only = {i: n for i, n in api_workflow("digits_from_picture").items() if n["class_type"] not in left_out}
    for node_id, node in text_only.items():
        node["inputs"].pop("start_image", None)
        if node["class_type"] == "ImageScaleBy":
            upscale = node_id
    text_only["save"] = save([upscale, 0], "visual_anagrams/digits_text_only")
    from_noise = saved_by_prefix(comfy_server, text_only, comfy_server.run(text_only, timeout=900))

    picture = shrunk_to_model_space(saved[f"{folder}/illusion"])
    noise = shrunk_to_model_space(from_noise["visual_anagrams/digits_text_only"])
    start = shrunk_to_model_space([Image.open(picture_file)])
    # Every candidate differs from the same seed's text-only one, and stays nearer the handwritten 2
    # (measured: 0.05-0.06 from it at strength 0.7, against 0.15-0.22 for the text-only candidates).
    assert all((picture[k] - noise[k]).abs().mean() > 0.02 for k in range(4))
    assert ((picture - start).abs().mean((1, 2, 3)) < (noise - start).abs().mean((1, 2, 3))).all()


# -- bad input: an error naming the node and the fix, and the server keeps serving ---------------


def test_stage_ii_model_wired_into_stage_i_is_refused_by_validation(comfy_server):
    graph = flip_graph()
    graph["6"]["inputs"]["model"] = ["7", 0]
    with pytest.raises(PromptRejected) as rejected:
        comfy_server.queue(graph)
    assert "6" in rejected.value.body.get("node_errors", {})
    assert_still_serving(comfy_server)


def test_a_model_from_the_hub_while_offline_names_the_licence_and_the_token(comfy_server):
    error = execution_error(comfy_server, flip_graph(stage_1_model="DeepFloyd/IF-I-M-v1.0"))
    assert error["node_type"] == "VisualAnagramsLoadStageI"
    message = error["exception_message"]
    assert "IF Stage I Loader" in message and "licence" in message and "HF_TOKEN" in message
    assert "models/diffusers" in message
    assert_still_serving(comfy_server)


def test_more_prompts_than_views_names_the_prompt_and_the_fix(comfy_server):
    graph = flip_graph(prompts={"prompt_1": "a horse", "prompt_2": "a deer", "prompt_3": "a duck"})
    error = execution_error(comfy_server, graph)
    assert error["node_type"] == "VisualAnagramsPromptEncoder"
    assert "prompt for view 3" in error["exception_message"] and "add a view" in error["exception_message"]
    assert_still_serving(comfy_server)


def test_prompts_for_another_view_chain_are_refused_by_the_sampler(comfy_server):
    graph = flip_graph()
    graph["20"] = {"class_type": "VisualAnagramsView_rotate_cw", "inputs": {"views": ["3", 0]}}
    graph["6"]["inputs"]["views"] = ["20", 0]
    error = execution_error(comfy_server, graph)
    assert error["node_type"] == "VisualAnagramsStageI"
    assert "2 prompts for 3 views" in error["exception_message"]
    assert_still_serving(comfy_server)


def test_view_parameters_that_do_not_fit_the_image_are_named(comfy_server):
    graph = flip_graph(second_view=("VisualAnagramsView_patch_permute", {"patches_per_side": 7, "seed": 0}))
    error = execution_error(comfy_server, graph)
    assert error["node_type"] == "VisualAnagramsStageI"
    assert "patch_permute" in error["exception_message"] and "64 px" in error["exception_message"]
    assert_still_serving(comfy_server)


def test_out_of_range_widget_values_are_refused_by_validation(comfy_server):
    graph = flip_graph(second_view=("VisualAnagramsView_inner_circle", {"radius": 0.9}))
    with pytest.raises(PromptRejected) as rejected:
        comfy_server.queue(graph)
    assert "3" in rejected.value.body.get("node_errors", {})
    assert_still_serving(comfy_server)


def test_stage_ii_resizes_an_image_of_another_size(comfy_server):
    graph = flip_graph(steps=1, candidates=1)
    graph["30"] = {"class_type": "EmptyImage", "inputs": {"width": 100, "height": 100, "batch_size": 3, "color": 0}}
    graph["8"]["inputs"]["image"] = ["30", 0]
    result = comfy_server.run(graph, timeout=600)
    assert [image.size for image in images_of(comfy_server, result, "9")] == [(256, 256)] * 3
    assert "resized to 64x64" in comfy_server.log_text()


def test_comfyui_can_unload_the_models_and_the_next_run_reloads_them(comfy_server):
    def stage_1_pixels(seed):
        graph = flip_graph(steps=1, candidates=1)
        graph["6"]["inputs"]["seed"] = seed
        result = comfy_server.run(graph, timeout=600)
        return images_of(comfy_server, result, "10")[0].tobytes() if result.images else None

    before = stage_1_pixels(6)
    stage_1_pixels(5)
    # ComfyUI acts on /free after its next prompt; the loaders' cached outputs survive it.
    assert comfy_server.request("POST", "/free", {"unload_models": True}).status == 200
    stage_1_pixels(5)
    mark = comfy_server.log_mark()
    after = stage_1_pixels(6)  # the sampler runs again with the loader's handle: the UNet is loaded back
    assert after == before
    assert "Requested to load ComfyManaged" in comfy_server.log_text(since=mark)
