"""Hostile model folders and model names, through a real ComfyUI (issue 10: reproductions 1, 2 and 4, and
"ComfyUI decides" for the dtype).

The session's shared server keeps clean model folders, so this module boots its own, once, with a base
directory that holds the tiny models plus what a careless disk or a hostile API client brings:

* symlink loops (``models/diffusers/loop -> .``, ``up -> ..``, ``models/text_encoders/loop -> .``) and
  thousands of junk entries beside the models;
* a model folder symlinked from elsewhere ("a big disk"), an ``owner/name`` folder, and one too deep to list;
* broken folders: a ``model_index.json`` that is a JSON list, a ``unet/config.json`` that is one, a T5
  ``config.json`` that is a string;
* a real model outside ComfyUI's model folders (for the absolute-path and ``..`` cases).

Every case ends by running a good prompt on the same server. One more server boots with ComfyUI's dtype
flags, to show that "auto" follows them. The listing's own rules (depth, loops, names) are also checked
directly, without ComfyUI, at the end.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import shutil
import sys
import types
from pathlib import Path

import pytest

from comfy_server import ComfyClient, ComfyServer, PromptRejected, layout_base_dir
from pack import load_pack
from tiny_graphs import prompt_nodes, stage_1_nodes
from workflow_tools import DEMO_MODEL

BOOT_TIMEOUT = float(os.environ.get("COMFYUI_BOOT_TIMEOUT", "180"))
JUNK_FOLDERS = 2000
JUNK_FILES = 1000
STAGE_I, STAGE_II, T5 = "VisualAnagramsLoadStageI", "VisualAnagramsLoadStageII", "VisualAnagramsLoadT5"
LOADERS = (STAGE_I, STAGE_II, "VisualAnagramsLoadStageIII", T5)
LABELS = {STAGE_I: "IF Stage I Loader", STAGE_II: "IF Stage II Loader", T5: "T5 Text Encoder Loader (IF)"}


@dataclasses.dataclass
class Layout:
    models: object  # tiny_models.TinyModelPaths in the base directory
    diffusers: Path
    text_encoders: Path
    outside_model: Path  # a good Stage I folder outside ComfyUI's model folders


def hostile_layout(base: Path) -> Layout:
    models = layout_base_dir(base)
    diffusers, text_encoders = base / "models" / "diffusers", base / "models" / "text_encoders"
    stage_1 = diffusers / "tiny-IF-I"

    # 1. loops, and thousands of entries beside the models
    (diffusers / "loop").symlink_to(".", target_is_directory=True)
    (diffusers / "again").symlink_to(".", target_is_directory=True)  # two loops: 2^n paths for os.walk
    (diffusers / "up").symlink_to("..", target_is_directory=True)  # models/, which holds diffusers/ again
    (text_encoders / "loop").symlink_to(".", target_is_directory=True)
    junk = diffusers / "junk"
    for index in range(JUNK_FOLDERS):
        (diffusers / f"junk-{index:04d}").mkdir()
    junk.mkdir()
    for index in range(JUNK_FILES):
        (diffusers / f"junk-{index:04d}.txt").write_text("not a model")

    # Layouts that must still list: a folder on "another disk" linked in, and owner/name.
    big_disk = base.parent / f"{base.name}-big-disk"
    shutil.copytree(stage_1, big_disk / "IF-I-on-big-disk")
    (diffusers / "linked-IF-I").symlink_to(big_disk / "IF-I-on-big-disk", target_is_directory=True)
    shutil.copytree(stage_1, diffusers / "someone" / "owned-IF-I")
    shutil.copytree(stage_1, diffusers / "too" / "deep" / "deep-IF-I")  # three levels: not listed

    # 2. broken folders
    shutil.copytree(stage_1, diffusers / "bad-index")
    (diffusers / "bad-index" / "model_index.json").write_text("[1, 2, 3]")
    shutil.copytree(stage_1, diffusers / "bad-unet")
    (diffusers / "bad-unet" / "unet" / "config.json").write_text('["in_channels", 3]')
    shutil.copytree(text_encoders / "tiny-t5", text_encoders / "bad-t5")
    (text_encoders / "bad-t5" / "text_encoder" / "config.json").write_text('"a string"')

    # 3. a model anywhere else on disk
    outside = base.parent / f"{base.name}-outside" / "tiny-IF-I"
    shutil.copytree(stage_1, outside)
    return Layout(models, diffusers, text_encoders, outside)


def start_server(checkout: Path, base: Path, models, extra_args=()) -> tuple[ComfyServer, ComfyClient]:
    server = ComfyServer(checkout, base, models)
    server.extra_args += list(extra_args)
    server.start(timeout=BOOT_TIMEOUT)
    return server, ComfyClient(server)


@pytest.fixture(scope="module")
def hostile(comfyui_checkout, tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile-base")
    layout = hostile_layout(base)
    server, client = start_server(comfyui_checkout, base, layout.models)
    try:
        yield client, layout
    finally:
        client.close()
        server.stop()


def good_graph(*, seed: int = 0, stage_1_model="tiny-IF-I", encoder="tiny-t5") -> dict:
    """T5 -> two views -> prompts -> Stage I (1 step, 1 candidate) -> preview: a few seconds on a CPU."""
    return {
        **prompt_nodes({"prompt_1": "a horse", "prompt_2": "an old man"}, encoder=encoder),
        **stage_1_nodes(model=stage_1_model, seed=seed),
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }


_good_runs = iter(range(1000, 10**6))


def assert_still_runs_a_good_prompt(client: ComfyClient) -> None:
    assert client.system_stats()["system"]
    result = client.run(good_graph(seed=next(_good_runs)), timeout=600)  # a new seed: Stage I really runs
    assert result.ok and result.images


def options(client: ComfyClient, node: str) -> list[str]:
    required = client.object_info(node)[node]["input"]["required"]
    return required["encoder" if node == T5 else "model"][1]["options"]


def rejection(client: ComfyClient, graph: dict, node_id: str) -> str:
    """POST /prompt must answer 400 with a node error on ``node_id``; returns that node's error details."""
    with pytest.raises(PromptRejected) as rejected:
        client.queue(graph)
    assert rejected.value.status == 400
    node_errors = rejected.value.node_errors
    assert node_id in node_errors, rejected.value.body
    return " ".join(f"{error['message']}: {error['details']}" for error in node_errors[node_id]["errors"])


# -- 1. loops and thousands of entries ---------------------------------------------------------------
def test_symlink_loops_and_thousands_of_entries_list_without_hanging(hostile):
    client, _layout = hostile
    assert client.system_stats()["system"]
    stage_1 = options(client, STAGE_I)  # today's os.walk(followlinks=True) never returns here
    assert {"tiny-IF-I", "linked-IF-I", "someone/owned-IF-I", DEMO_MODEL} <= set(stage_1)
    # Loops list nothing twice, and nothing deeper than owner/name is read.
    assert not [name for name in stage_1 if name.split("/")[0] in {"loop", "again", "up", "too"}]
    assert not [name for name in stage_1 if name.startswith("junk")]
    assert "tiny-t5" in options(client, T5) and not [n for n in options(client, T5) if n.startswith("loop")]
    assert "tiny-IF-II" in options(client, STAGE_II)
    for node in LOADERS:  # the pack's own entries; the full /object_info also walks ComfyUI's own loaders'
        assert node in client.object_info(node)  # folders, which follow the loops themselves (not the pack's)
    assert_still_runs_a_good_prompt(client)


def test_a_model_folder_symlinked_from_another_disk_and_an_owner_name_folder_load(hostile):
    client, _layout = hostile
    for name in ("linked-IF-I", "someone/owned-IF-I"):
        assert client.run(good_graph(stage_1_model=name, seed=next(_good_runs)), timeout=600).ok
    assert_still_runs_a_good_prompt(client)


# -- 2. broken folders are skipped, logged once, and refused with their problem ------------------------
def test_broken_model_folders_are_skipped_with_one_log_line_each(hostile):
    client, _layout = hostile
    for node in LOADERS:  # the pack registered its nodes despite them
        assert node in client.object_info(node)
    for _ in range(3):  # more listings: still one line per folder
        stage_1 = options(client, STAGE_I)
        encoders = options(client, T5)
    assert "bad-index" not in stage_1 and "bad-unet" not in stage_1 and "bad-t5" not in encoders
    log = client.log_text()
    for folder, file in (("bad-index", "model_index.json"), ("bad-unet", "config.json"), ("bad-t5", "config.json")):
        lines = [line for line in log.splitlines() if "skipping the model folder" in line and f"/{folder}:" in line]
        assert len(lines) == 1, (folder, lines)
        assert file in lines[0]
    assert_still_runs_a_good_prompt(client)


@pytest.mark.parametrize(
    ("node", "node_id", "name", "file"),
    [
        (STAGE_I, "5", "bad-index", "model_index.json"),
        (STAGE_I, "5", "bad-unet", "config.json"),
        (T5, "1", "bad-t5", "config.json"),
    ],
)
def test_picking_a_broken_folder_is_refused_with_its_problem(hostile, node, node_id, name, file):
    client, _layout = hostile
    graph = good_graph(**({"encoder": name} if node == T5 else {"stage_1_model": name}))
    details = rejection(client, graph, node_id)
    assert LABELS[node] in details and f"'{name}'" in details and file in details and "broken" in details
    assert_still_runs_a_good_prompt(client)


# -- 4. names the loaders do not list never load ----------------------------------------------------
def _outside(layout: Layout) -> str:
    return str(layout.outside_model)


@pytest.mark.parametrize(
    ("node", "node_id", "name"),
    [
        (STAGE_I, "5", "../../etc"),
        (STAGE_I, "5", "../diffusers/tiny-IF-I"),  # a real model, reached by traversal
        (STAGE_I, "5", _outside),  # an absolute path to a real model anywhere on disk
        (STAGE_I, "5", "someone/unknown-model"),  # a free Hub id: would download from the Hub
        (STAGE_I, "5", "loop/tiny-IF-I"),  # through a symlink loop
        (STAGE_I, "5", "too/deep/deep-IF-I"),  # deeper than the listing reads
        (STAGE_I, "5", 7),  # not even a string
        (STAGE_I, "5", "tiny-IF-II"),  # a listed model of another stage
        (STAGE_I, "5", "DeepFloyd/IF-II-L-v1.0"),  # a known Hub id of another stage
        (T5, "1", "../"),
        (T5, "1", "../text_encoders/tiny-t5"),
        (T5, "1", "someone/t5-xxl"),
    ],
)
def test_a_name_the_loader_does_not_list_is_refused_at_validation(hostile, node, node_id, name):
    client, layout = hostile
    name = name(layout) if callable(name) else name
    graph = good_graph(**({"encoder": name} if node == T5 else {"stage_1_model": name}))
    details = rejection(client, graph, node_id)  # HTTP 400 with node_errors: nothing ran
    assert LABELS[node] in details and "Valid choices" in details
    assert ("'tiny-t5'" if node == T5 else "'tiny-IF-I'") in details
    assert_still_runs_a_good_prompt(client)


def test_the_default_dtype_on_the_cpu_is_fp32(hostile):
    client, _layout = hostile
    assert_still_runs_a_good_prompt(client)
    log = client.log_text()  # the loaders ran in this server's first good prompt, whichever test that was
    assert re.search(r"IF Stage I Loader: loaded '[^']+' in fp32 on cpu", log)
    assert "T5 Text Encoder Loader (IF): loaded 'tiny-t5' in fp32 on cpu" in log


# -- ComfyUI decides the dtype ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "unet", "text_encoder"),
    [
        (("--bf16-unet", "--bf16-text-enc"), "bf16", "bf16"),
        (("--fp16-unet",), "fp16", "fp32"),  # T5 kept on the CPU runs fp16 as fp32 (sampling/text.py)
    ],
)
def test_auto_dtype_follows_comfyuis_dtype_flags(comfyui_checkout, tmp_path_factory, flags, unet, text_encoder):
    # On the CPU, ComfyUI's unet_dtype() / text_encoder_dtype() change only with these explicit flags
    # (--force-fp16 does not: should_use_fp16 answers False for a CPU device before reading it).
    base = tmp_path_factory.mktemp("dtype-flags-base")
    server, client = start_server(comfyui_checkout, base, layout_base_dir(base), extra_args=flags)
    try:
        mark = client.log_mark()
        result = client.run(good_graph(), timeout=600)
        log = client.log_text(since=mark)
        assert f"IF Stage I Loader: loaded 'tiny-IF-I' in {unet} on cpu" in log
        assert f"T5 Text Encoder Loader (IF): loaded 'tiny-t5' in {text_encoder}" in log
        assert result.ok and result.images
    finally:
        client.close()
        server.stop()


# -- the listing's rules, without ComfyUI ----------------------------------------------------------------
@pytest.fixture(scope="module")
def model_lists():
    """nodes/model_lists.py, imported without nodes/__init__.py (which imports ComfyUI)."""
    pack = load_pack()
    nodes_name = f"{pack.__name__}.nodes"
    real_nodes = sys.modules.get(nodes_name)
    if real_nodes is None:
        stub = types.ModuleType(nodes_name)
        stub.__path__ = [str(Path(pack.__file__).parent / "nodes")]
        sys.modules[nodes_name] = stub
    try:
        yield importlib.import_module(f"{nodes_name}.model_lists")
    finally:
        if real_nodes is None:
            sys.modules.pop(nodes_name, None)
            sys.modules.pop(f"{nodes_name}.model_lists", None)


@pytest.fixture(scope="module")
def small_layout(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("listing") / "diffusers"
    shutil.copytree(tiny_models.stage_1, root / "IF-I")
    shutil.copytree(tiny_models.stage_1, root / "owner" / "IF-I")
    shutil.copytree(tiny_models.stage_1, root / "a" / "b" / "IF-I")
    (root / "loop").symlink_to(".", target_is_directory=True)
    (root / "owner" / "back").symlink_to("..", target_is_directory=True)
    elsewhere = root.parent / "elsewhere"
    shutil.copytree(tiny_models.stage_1, elsewhere / "IF-I")
    (root / "linked").symlink_to(elsewhere / "IF-I", target_is_directory=True)
    shutil.copytree(tiny_models.stage_1, root / "broken")
    (root / "broken" / "model_index.json").write_text("[]")
    return root


def test_listing_reads_two_levels_follows_linked_folders_and_cuts_loops(model_lists, small_layout):
    listed = model_lists.list_model_folders([small_layout], model_lists.stage_folder_check(1))
    assert sorted(listed) == ["IF-I", "linked", "owner/IF-I"]
    assert listed["linked"] == small_layout / "linked"


def test_names_map_to_folders_only_through_the_listing(model_lists, small_layout):
    check = model_lists.stage_folder_check(1)
    listed = lambda name: model_lists.listed_folder([small_layout], check, name)  # noqa: E731
    assert listed("IF-I") == small_layout / "IF-I" and listed("owner/IF-I") == small_layout / "owner" / "IF-I"
    for name in (
        "../diffusers/IF-I",
        "owner/../IF-I",
        "./IF-I",
        str(small_layout / "IF-I"),
        "a/b/IF-I",
        "loop/IF-I",
        "owner/back/IF-I",
        "broken",
        "IF-I/",
        "",
        None,
        3,
        "IF-I\\..",
        "\x00",
    ):
        assert listed(name) is None, name
