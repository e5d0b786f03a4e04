"""A hostile API client against the pack in a real ComfyUI (the standing hostile-input suite).

Families: prompts whose shape would kill ComfyUI's prompt worker; values outside the inputs' bounds;
wrong types (strings for numbers, literals where links belong, missing inputs, unknown nodes, links
to nothing, cycles); path traversal typed into every combo and text input; an unclear-message family
(images the views cannot show, text that is not text); cancel mid-run; memory over repeated runs; and
the preview's cost on a large image. After every case the server must still run a good prompt.

Model-name traversal and broken model folders are tests/test_hostile_models.py's.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from comfy_server import PromptRejected
from pack import PACK_DIR, import_submodule
from tiny_graphs import prompt_nodes, stage_1_nodes

views_module = import_submodule("views")

TRAVERSALS = ("../../../../../../etc/passwd", "/etc/passwd")
_colours = itertools.count(1)


# -- graphs ---------------------------------------------------------------------------------------


def preview_graph(*, size: int = 64, height: int | None = None, colour: int | None = None) -> dict:
    """An image -> identity, flip -> the view preview (cheap: no model)."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {
                "width": size,
                "height": height or size,
                "batch_size": 1,
                "color": next(_colours) if colour is None else colour,
            },
        },
        "2": {"class_type": "VisualAnagramsView_identity", "inputs": {}},
        "3": {"class_type": "VisualAnagramsView_flip", "inputs": {"views": ["2", 0]}},
        "4": {
            "class_type": "VisualAnagramsViewPreview",
            "inputs": {"image": ["1", 0], "views": ["3", 0], "frames_per_view": 2, "hold_frames": 0},
        },
    }


def sampler_graph(*, seed: int = 0, steps: int = 1, prompts: dict | None = None, style: str = "a photo of") -> dict:
    """Tiny T5 -> identity, flip -> prompts -> tiny Stage I (64 px) -> PreviewImage."""
    prompts = prompts or {"prompt_1": "a campfire", "prompt_2": "an old man"}
    return {
        **prompt_nodes(prompts, style=style),
        **stage_1_nodes(seed=seed, steps=steps, guidance=7.0),
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }


def assert_still_serving(comfy_server) -> None:
    """The worker is alive: a fresh (uncached) prompt through the pack's nodes runs to success."""
    result = comfy_server.run(preview_graph(), timeout=120)
    assert result.ok, result.status_messages


def rejection(comfy_server, prompt) -> PromptRejected:
    with pytest.raises(PromptRejected) as caught:
        comfy_server.queue(prompt)
    return caught.value


def all_error_text(rejected: PromptRejected) -> str:
    return json.dumps({"error": rejected.error, "node_errors": rejected.node_errors})


def node_error_inputs(rejected: PromptRejected, node_id: str) -> set[str]:
    errors = rejected.node_errors.get(node_id, {}).get("errors", [])
    return {error.get("extra_info", {}).get("input_name") for error in errors}


# -- 1. prompts whose shape killed the prompt worker -------------------------------------------------


def with_node(node_id: str, node) -> dict:
    graph = preview_graph()
    graph[node_id] = node
    return graph


MALFORMED = {
    # ComfyUI validated View: Identity's inputs by name only (it has no required one), so a list
    # passed, and the worker died building cache keys: 'list' object has no attribute 'keys'.
    "identity inputs as an empty list (PHP's json_encode)": (
        with_node("2", {"class_type": "VisualAnagramsView_identity", "inputs": []}),
        "2",
        ["View: Identity", "inputs", "{}"],
    ),
    "identity inputs as a string": (
        with_node("2", {"class_type": "VisualAnagramsView_identity", "inputs": "views"}),
        "2",
        ["View: Identity", "inputs"],
    ),
    # Nodes no output depends on are never validated: a core node kills the worker the same way.
    "unlinked core node with list inputs": (
        with_node("9", {"class_type": "EmptyImage", "inputs": []}),
        "9",
        ["inputs", "JSON object"],
    ),
    "unlinked node without inputs": (with_node("9", {"class_type": "EmptyImage"}), "9", ["inputs", "missing"]),
    "node that is a number": (with_node("9", 5), "9", ["node 9", "JSON object"]),
    "class_type that is a list": (
        with_node("9", {"class_type": ["EmptyImage"], "inputs": {}}),
        "9",
        ["class_type", "string"],
    ),
    "NaN guidance": (None, "6", ["guidance", "NaN"]),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_prompts_get_a_400_naming_the_node_and_the_worker_lives(comfy_server, case):
    graph, node_id, words = MALFORMED[case]
    if graph is None:  # Python's JSON reads NaN, which JSON has not, and NaN passes every min/max check
        graph = sampler_graph()
        graph["6"]["inputs"]["guidance"] = float("nan")
    rejected = rejection(comfy_server, graph)
    assert rejected.status == 400
    assert node_id in rejected.node_errors, rejected
    message = rejected.node_errors[node_id]["errors"][0]["message"]
    assert all(word in message for word in words), message
    assert_still_serving(comfy_server)


def test_a_prompt_that_is_not_an_object_gets_a_400(comfy_server):
    response = comfy_server.request("POST", "/prompt", {"prompt": [{"class_type": "EmptyImage", "inputs": {}}]})
    assert response.status == 400, response.body
    assert "prompt: must be a JSON object" in response.json()["error"]["message"]
    assert_still_serving(comfy_server)


# -- 2. validation bounds and wrong types: ComfyUI's 400s still come through ------------------------------


def _set(node_id: str, name: str, value):
    def change(graph):
        graph[node_id]["inputs"][name] = value

    return change


def _drop(node_id: str, name: str):
    def change(graph):
        del graph[node_id]["inputs"][name]

    return change


def _add(node_id: str, node: dict):
    def change(graph):
        graph[node_id] = node

    return change


def _cycle(graph):
    graph["2"]["inputs"]["views"] = ["3", 0]  # identity <- flip <- identity


REFUSED = {
    "steps 0": (_set("6", "steps", 0), "6", "steps"),
    "steps above max": (_set("6", "steps", 1001), "6", "steps"),
    "negative guidance": (_set("6", "guidance", -1.0), "6", "guidance"),
    "infinite guidance": (_set("6", "guidance", float("inf")), "6", "guidance"),
    "negative seed": (_set("6", "seed", -1), "6", "seed"),
    "seed beyond 2**64": (_set("6", "seed", 2**64), "6", "seed"),
    "seed far beyond 2**64": (_set("6", "seed", 10**40), "6", "seed"),
    "candidates 0": (_set("6", "candidates", 0), "6", "candidates"),
    "unknown reduction": (_set("6", "reduction", "max"), "6", "reduction"),
    "unknown schedule": (_set("6", "schedule", "fast1"), "6", "schedule"),
    "unknown dtype": (_set("5", "dtype", "float128"), "5", "dtype"),
    "string for steps": (_set("6", "steps", "thirty"), "6", "steps"),
    "list for guidance": (_set("6", "guidance", [1, 2, 3]), "6", "guidance"),
    "object for guidance": (_set("6", "guidance", {"value": 3}), "6", "guidance"),
    "missing steps": (_drop("6", "steps"), "6", "steps"),
    "missing prompts socket": (_drop("6", "prompts"), "6", "prompts"),
    "link to a missing node": (_set("6", "views", ["99", 0]), None, None),
    "link to a missing output": (_set("6", "views", ["3", 5]), None, None),
    "link of the wrong type": (_set("6", "views", ["4", 0]), "6", "views"),
    "cycle": (_cycle, None, None),
    "unknown class_type": (_add("9", {"class_type": "NoSuchNode", "inputs": {}}), None, None),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_out_of_bounds_and_wrong_types_are_refused_at_validation(comfy_server, case):
    change, node_id, input_name = REFUSED[case]
    graph = sampler_graph()
    change(graph)
    rejected = rejection(comfy_server, graph)
    assert rejected.status == 400
    if input_name is not None:
        assert input_name in node_error_inputs(rejected, node_id), all_error_text(rejected)
    assert_still_serving(comfy_server)


# -- 3. literals where links belong: the node says which input wants a link ----------------------------


def stage_iii_graph(model="tiny", image=None, prompts=None) -> dict:
    graph = sampler_graph()
    graph["8"] = {
        "class_type": "VisualAnagramsStageIII",
        "inputs": {
            "model": model,
            "image": ["6", 0] if image is None else image,
            "prompts": ["4", 0] if prompts is None else prompts,
            "seed": 0,
            "steps": 1,
            "guidance": 9.0,
            "noise_level": 0,
        },
    }
    graph["9"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    return graph


def _preview_literal(name, value):
    graph = preview_graph()
    graph["4"]["inputs"][name] = value
    return graph


def _sampler_literal(node_id, name, value):
    graph = sampler_graph()
    graph[node_id]["inputs"][name] = value
    return graph


LITERALS = {
    "int for the preview's views": (_preview_literal("views", 3), "Illusion View Preview", "views", "the number 3"),
    "null for the preview's image": (_preview_literal("image", None), "Illusion View Preview", "image", "null"),
    "object for the preview's prompts": (
        _preview_literal("prompts", {"texts": ["a"]}),
        "Illusion View Preview",
        "prompts",
        "an object",
    ),
    "string for a view node's views": (
        with_node("3", {"class_type": "VisualAnagramsView_flip", "inputs": {"views": "identity"}}),
        "View: Flip upside down",
        "views before this one (views)",
        "the text 'identity'",
    ),
    "string for the encoder's text_encoder": (
        _sampler_literal("4", "text_encoder", "tiny-t5"),
        "Anagram Prompt Encoder",
        "text_encoder",
        "the text 'tiny-t5'",
    ),
    "object for the encoder's views": (
        _sampler_literal("4", "views", {"0": "flip"}),
        "Anagram Prompt Encoder",
        "views",
        "an object",
    ),
    "string for Stage I's model": (
        _sampler_literal("6", "model", "tiny-IF-I"),
        "Anagram Sampler (Stage I)",
        "model",
        "the text 'tiny-IF-I'",
    ),
    "object for Stage I's prompts": (
        _sampler_literal("6", "prompts", {"texts": []}),
        "Anagram Sampler (Stage I)",
        "prompts",
        "an object",
    ),
    "string for Stage III's model": (
        stage_iii_graph(model="x4-upscaler"),
        "Naive x4 Upscaler (Stage III)",
        "model",
        "the text 'x4-upscaler'",
    ),
}


@pytest.mark.parametrize("case", list(LITERALS))
def test_literals_where_links_belong_name_the_node_the_input_and_the_link(comfy_server, case):
    graph, label, input_name, described = LITERALS[case]
    result = comfy_server.run(graph, check=False, timeout=120)
    assert result.status == "error", result.status_messages
    message = result.error["exception_message"]
    assert message.startswith(f"{label}: {input_name}"), message
    assert described in message and "link" in message and '["<node id>", <output index>]' in message, message
    assert_still_serving(comfy_server)


# -- 4. images the views cannot show, text that is not text ------------------------------------------------


def test_non_square_and_four_channel_images_into_the_preview_say_what_to_do(comfy_server):
    result = comfy_server.run(preview_graph(size=64, height=32), check=False)
    message = result.error["exception_message"]
    assert message.startswith("Illusion View Preview: image: views need square images, got 64x32 px."), message

    graph = preview_graph()
    graph["5"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}}
    graph["6"] = {"class_type": "JoinImageWithAlpha", "inputs": {"image": ["1", 0], "alpha": ["5", 0]}}
    graph["4"]["inputs"]["image"] = ["6", 0]
    message = comfy_server.run(graph, check=False).error["exception_message"]
    assert message.startswith("Illusion View Preview: image: has 4 channels;") and "RGB" in message, message
    assert_still_serving(comfy_server)


def test_a_lone_surrogate_in_a_prompt_names_the_prompt_field(comfy_server):
    graph = sampler_graph(prompts={"prompt_1": "a campfire", "prompt_2": "an \ud800old man"})
    result = comfy_server.run(graph, check=False)
    message = result.error["exception_message"]
    assert message.startswith(
        "Anagram Prompt Encoder: prompt for view 2 (prompt_2): character 4 is a lone UTF-16 surrogate"
    ), message
    assert "Remove it" in message
    assert_still_serving(comfy_server)


# Neither an empty batch nor a 1-channel IMAGE can be made from ComfyUI's core nodes, so these run
# the node in a Python with ComfyUI's own modules (the server's interpreter and COMFYUI_DIR).
IN_PROCESS = textwrap.dedent("""
    import importlib, importlib.util, json, sys, tempfile
    sys.path.insert(0, sys.argv[1])
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    import folder_paths
    folder_paths.set_temp_directory(tempfile.mkdtemp())
    import torch
    spec = importlib.util.spec_from_file_location("va_pack", sys.argv[2] + "/__init__.py",
                                                  submodule_search_locations=[sys.argv[2]])
    module = importlib.util.module_from_spec(spec)
    sys.modules["va_pack"] = module
    spec.loader.exec_module(module)
    ViewPreview = importlib.import_module("va_pack.nodes.preview").ViewPreview
    chain = tuple(importlib.import_module("va_pack.views").make_view(name) for name in ("identity", "flip"))
    messages = {}
    for case, image in {"empty": torch.zeros(0, 64, 64, 3), "one channel": torch.zeros(1, 64, 64, 1)}.items():
        try:
            ViewPreview.execute(image=image, views=chain, frames_per_view=2, hold_frames=0)
        except ValueError as error:
            messages[case] = str(error)
    print(json.dumps(messages))
""")


def test_an_empty_batch_and_a_one_channel_image_into_the_preview_say_what_to_do(comfyui_checkout):
    completed = subprocess.run(
        [os.environ.get("COMFYUI_PYTHON") or sys.executable, "-c", IN_PROCESS, str(comfyui_checkout), str(PACK_DIR)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    messages = json.loads(completed.stdout.strip().splitlines()[-1])
    assert messages["empty"].startswith("Illusion View Preview: image: the batch is empty (0 images)."), messages
    assert messages["one channel"].startswith("Illusion View Preview: image: has 1 channel;"), messages
    assert "Convert Mask to Image" in messages["one channel"]


# -- 5. traversal typed into every combo and text input of the pack ---------------------------------


#: A link for each socket type the pack's nodes take, from the node that makes it in traversal_graph.
PRODUCER_LINKS = {
    "VA_T5_ENCODER": ["t5", 0],
    "VA_VIEWS": ["view_identity", 0],
    "VA_PROMPTS": ["prompts", 0],
    "VA_IF_STAGE_I": ["stage1_loader", 0],
    "VA_IF_STAGE_II": ["stage2_loader", 0],
    "VA_IF_STAGE_III": ["stage3_loader", 0],
    "IMAGE": ["image", 0],
}


def traversal_graph(info: dict, value: str) -> tuple[dict, list[tuple[str, str]]]:
    """Every node of the pack in one graph, every combo set to ``value`` (model names excepted: see
    test_hostile_models.py); returns the graph and the (node id, input) pairs that must be refused."""
    ids = {
        "VisualAnagramsLoadT5": "t5",
        "VisualAnagramsPromptEncoder": "prompts",
        "VisualAnagramsLoadStageI": "stage1_loader",
        "VisualAnagramsLoadStageII": "stage2_loader",
        "VisualAnagramsLoadStageIII": "stage3_loader",
    }
    links = PRODUCER_LINKS
    graph = {"image": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}}}
    expected = []
    for class_type, node in info.items():
        if not class_type.startswith("VisualAnagrams"):
            continue
        node_id = ids.get(class_type) or class_type.removeprefix("VisualAnagrams").lower()
        inputs = {}
        for section in ("required", "optional"):
            for name, (kind, *options) in node["input"].get(section, {}).items():
                if isinstance(kind, list) or kind == "COMBO":
                    model_name = name in ("model", "encoder", "clip") and class_type.startswith("VisualAnagramsLoad")
                    choices = kind if isinstance(kind, list) else options[0]["options"]
                    inputs[name] = choices[0] if model_name else value
                    if not model_name:
                        expected.append((node_id, name))
                elif kind in links:
                    if section == "required":
                        inputs[name] = links[kind]
                elif options and "default" in options[0]:
                    inputs[name] = options[0]["default"]
        graph[node_id] = {"class_type": class_type, "inputs": inputs}
        if node.get("output_node"):
            continue
        if "IMAGE" in node["output"]:
            graph[f"{node_id}_out"] = {
                "class_type": "PreviewImage",
                "inputs": {"images": [node_id, node["output"].index("IMAGE")]},
            }
    # Every view node feeds an output, so ComfyUI validates each one.
    for node_id in [key for key, node in graph.items() if node["class_type"].startswith("VisualAnagramsView_")]:
        graph[f"{node_id}_preview"] = {
            "class_type": "VisualAnagramsViewPreview",
            "inputs": {"image": ["image", 0], "views": [node_id, 0], "frames_per_view": 2, "hold_frames": 0},
        }
    return graph, expected


@pytest.mark.parametrize("value", TRAVERSALS)
def test_traversal_in_every_combo_of_the_pack_is_refused_by_name(comfy_server, value):
    graph, expected = traversal_graph(comfy_server.object_info(), value)
    assert len(expected) >= 8, expected  # the loaders' options, the samplers' schedules, the views' choices
    rejected = rejection(comfy_server, graph)
    refused = {
        (node_id, error.get("extra_info", {}).get("input_name"))
        for node_id, entry in rejected.node_errors.items()
        for error in entry["errors"]
        if error["type"] == "value_not_in_list"
    }
    assert set(expected) <= refused, sorted(set(expected) - refused)
    assert_still_serving(comfy_server)


def test_traversal_in_the_text_inputs_is_only_text(comfy_server):
    mark = comfy_server.log_mark()
    graph = sampler_graph(style=TRAVERSALS[0], prompts={"prompt_1": TRAVERSALS[1], "prompt_2": "..\\..\\boot.ini"})
    graph["4"]["inputs"]["negative"] = "file:///etc/shadow"
    result = comfy_server.run(graph, timeout=120)
    assert result.ok
    log = comfy_server.log_text(since=mark)
    assert "root:" not in log and "No such file" not in log
    assert_still_serving(comfy_server)


# -- 6. cancel mid-run ---------------------------------------------------------------------------------


def test_interrupting_the_sampler_mid_run_stops_it_and_the_server_goes_on(comfy_server):
    listener = comfy_server.new_listener()
    graph = sampler_graph(seed=next(_colours), steps=1000)
    prompt_id = comfy_server.queue(graph, client_id=listener.client_id)
    listener.wait_for(
        lambda m: m.type == "progress" and m.data.get("prompt_id") == prompt_id and m.data.get("node") == "6",
        timeout=120,
    )
    assert comfy_server.interrupt() == 200
    entry = comfy_server.wait(prompt_id, timeout=120)
    assert "execution_interrupted" in [kind for kind, _ in entry["status"]["messages"]], entry["status"]
    progress = [m.data["value"] for m in listener.messages(prompt_id, "progress") if m.data.get("node") == "6"]
    assert max(progress) < 1000
    assert_still_serving(comfy_server)


# -- 7. repeated runs without memory growth -------------------------------------------------------------

#: After warm-up, RSS may wander by allocator noise; steady growth per run would exceed this over the runs.
RSS_GROWTH_BOUND_MB = 150
WARM_UP_RUNS = 3
MEASURED_RUNS = 8


def server_rss_mb(comfy_server) -> float:
    pid = comfy_server._server.process.pid  # the fixture's server process
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc status")


def test_repeated_runs_do_not_grow_the_servers_memory(comfy_server):
    def run_once(seed):
        graph = sampler_graph(seed=seed)
        # The sampler's images into the preview, so every run renders the viewer's files too.
        graph["8"] = {
            "class_type": "VisualAnagramsViewPreview",
            "inputs": {
                "image": ["6", 0],
                "views": ["3", 0],
                "prompts": ["4", 0],
                "frames_per_view": 2,
                "hold_frames": 0,
            },
        }
        assert comfy_server.run(graph, timeout=120).ok

    for seed in range(WARM_UP_RUNS):
        run_once(10_000 + seed)
    after_warm_up = server_rss_mb(comfy_server)
    readings = []
    for seed in range(MEASURED_RUNS):
        run_once(20_000 + seed)
        readings.append(server_rss_mb(comfy_server))
    growth = readings[-1] - after_warm_up
    assert growth < RSS_GROWTH_BOUND_MB, (after_warm_up, readings)


# -- 8. the preview's cost on a large picture -----------------------------------------------------------


def test_the_preview_renders_its_animation_at_a_bounded_size_and_the_grid_at_full_size(comfy_server):
    graph = preview_graph(size=1024)
    graph["3"] = {
        "class_type": "VisualAnagramsView_pixel_permute",
        "inputs": {
            "views": ["2", 0],
            **{spec.name: spec.default for spec in views_module.VIEW_CLASSES["pixel_permute"].PARAMS},
        },
    }
    graph["5"] = {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}}
    graph["6"] = {"class_type": "PreviewImage", "inputs": {"images": ["4", 1]}}
    result = comfy_server.run(graph, timeout=300)
    grid = [comfy_server.open_image(ref) for ref in result.images if ref.node_id == "5"]
    frames = [comfy_server.open_image(ref) for ref in result.images if ref.node_id == "6"]
    assert grid[0].size[0] == 2 * 1024  # the grid keeps the picture's size
    assert frames and all(frame.size == (384, 384) for frame in frames)  # 1024 px shown at 256 px, on a 1.5x canvas
    viewer = result.outputs["4"]["visual_anagrams_viewer"][0]
    sprites = [sprite for view in viewer["views"] for sprite in view.get("sprites", [])]
    assert sprites and all(sprite["frame_size"] <= 512 for sprite in sprites)
