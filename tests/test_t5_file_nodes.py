"""Single-file T5 encoders (Flux / SD3's ``t5xxl_*.safetensors``) through a real ComfyUI.

The T5 loader lists the files in models/text_encoders and the legacy models/clip that hold a T5 v1.1 encoder,
judged by their contents (a CLIP, an umT5-style encoder and the weights inside a model folder are not listed; a
damaged file is left out and named when asked for), and a tiny fp16 / fp8 single file drives the same graph as
the folder it was written from. The files are the tiny T5 of tests/tiny_models.py (T5's real 32128-token
vocabulary, the tiny UNets' width), added to the shared server's model folders by this module.
"""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from comfy_server import PromptRejected
from comfy_test_server import comfyui_dir
from tiny_graphs import T5, prompt_nodes, save, stage_1_nodes
from tiny_models import write_tiny_t5_files

LABEL = "T5 Text Encoder Loader (IF)"
LISTING_LIFETIME_SECONDS = 2.1  # nodes/model_lists.py LISTING_LIFETIME_SECONDS, and a margin
FOLDER = "va-t5-files"  # under models/text_encoders and models/clip: nothing else in the server uses it
FP16 = f"{FOLDER}/t5xxl_fp16.safetensors"
FP8 = f"{FOLDER}/t5xxl_fp8_e4m3fn.safetensors"
FP8_SCALED = f"{FOLDER}/t5xxl_fp8_e4m3fn_scaled.safetensors"  # in models/clip, where older guides put it
T5_FOLDER = f"{FOLDER}/tiny-t5-v1_1"  # the same network as a folder (text_encoder/ + tokenizer/)
NOT_T5 = {
    f"{FOLDER}/clip_l.safetensors": "a CLIP text encoder",
    f"{FOLDER}/umt5_style.safetensors": "a relative attention bias in every block",
}
BROKEN = f"{FOLDER}/t5xxl_truncated.safetensors"
PROMPTS = {"prompt_1": "people around a campfire", "prompt_2": "an old man"}


@pytest.fixture(scope="module")
def t5_files(comfy_server, tmp_path_factory):
    """The tiny T5 files and folder, placed in the server's model folders (removed afterwards)."""
    written = write_tiny_t5_files(
        tmp_path_factory.mktemp("tiny-t5-files"), comfyui_dir() / "comfy" / "text_encoders" / "t5_tokenizer"
    )
    text_encoders = comfy_server.models_dir / "text_encoders" / FOLDER
    legacy_clip = comfy_server.models_dir / "clip" / FOLDER
    text_encoders.mkdir(parents=True)
    legacy_clip.mkdir(parents=True)
    shutil.copyfile(written.files["fp16"], text_encoders / "t5xxl_fp16.safetensors")
    shutil.copyfile(written.files["fp8_e4m3fn"], text_encoders / "t5xxl_fp8_e4m3fn.safetensors")
    shutil.copyfile(written.files["fp8_e4m3fn_scaled"], legacy_clip / "t5xxl_fp8_e4m3fn_scaled.safetensors")
    shutil.copytree(written.folder, text_encoders / "tiny-t5-v1_1")

    save_file({"text_model.encoder.layers.0.mlp.fc1.weight": torch.zeros(4, 4)}, text_encoders / "clip_l.safetensors")
    umt5_style = load_file(written.files["fp16"])
    umt5_style["encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"] = umt5_style[
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    ].clone()
    save_file(umt5_style, text_encoders / "umt5_style.safetensors")
    whole = (text_encoders / "t5xxl_fp16.safetensors").read_bytes()
    (text_encoders / "t5xxl_truncated.safetensors").write_bytes(whole[: len(whole) // 2])
    time.sleep(LISTING_LIFETIME_SECONDS)  # a list made before the files came is not reused
    try:
        yield written
    finally:
        shutil.rmtree(text_encoders)
        shutil.rmtree(legacy_clip)


def encoder_options(comfy_server) -> list[str]:
    return comfy_server.object_info()[T5]["input"]["required"]["encoder"][1]["options"]


def stage_1_image(comfy_server, encoder: str, precision: str = "fp32", prompts: dict = PROMPTS) -> np.ndarray:
    graph = {
        **prompt_nodes(prompts, encoder=encoder, precision=precision),
        **stage_1_nodes(steps=2),
        "9": save(["6", 0], "va/t5-file"),
    }
    result = comfy_server.run(graph, timeout=600)
    assert result.ok, result
    (image,) = [ref for ref in result.images if ref.node_id == "9"]
    return np.asarray(comfy_server.open_image(image).convert("RGB"), dtype=np.float32)


def test_the_loader_lists_t5_files_by_their_contents(comfy_server, t5_files):
    options = encoder_options(comfy_server)
    assert {FP16, FP8, FP8_SCALED, T5_FOLDER} <= set(options), options
    # Not T5 v1.1, damaged, or the weights of a folder the list already offers: not listed.
    assert not set(NOT_T5) & set(options) and BROKEN not in options
    assert not [name for name in options if name.startswith(f"{T5_FOLDER}/")]
    log = comfy_server.log_text()
    assert f"skipping the model file {comfy_server.models_dir / 'text_encoders' / FOLDER}/t5xxl_truncated" in log


@pytest.mark.parametrize("name", [*NOT_T5, BROKEN])
def test_a_file_the_loader_does_not_list_is_refused_with_the_reason(comfy_server, t5_files, name):
    graph = {**prompt_nodes(PROMPTS, encoder=name), **stage_1_nodes(steps=1), "9": save(["6", 0], "va/refused")}
    with pytest.raises(PromptRejected) as caught:
        comfy_server.run(graph)
    body = json.dumps(caught.value.body)
    assert LABEL in body and f"'{FP16}'" in body
    if name == BROKEN:
        assert "that file is broken" in body and "truncated" in body
    assert comfy_server.system_stats()["system"]  # still serving


def test_an_fp16_file_draws_what_its_folder_draws(comfy_server, t5_files):
    # The tiny T5's weights are exact in fp16: the file's fp16 and the folder's fp32 are the same network.
    from_file = stage_1_image(comfy_server, FP16)
    from_folder = stage_1_image(comfy_server, T5_FOLDER)
    assert np.array_equal(from_file, from_folder)
    log = comfy_server.log_text()
    assert f"{LABEL}: loaded '{FP16}' in fp32 on cpu" in log
    # The first listed tokenizer that gives IF's token ids: the tiny-t5 folder's own tiny vocabulary does not.
    assert f"{LABEL}: '{FP16}' uses the T5 tokenizer in {comfy_server.models_dir / 'text_encoders' / T5_FOLDER}" in log


@pytest.mark.parametrize("name", [FP8, FP8_SCALED])
def test_fp8_files_drive_a_run_within_the_fp8_rounding(comfy_server, t5_files, name):
    from_folder = stage_1_image(comfy_server, T5_FOLDER)
    from_file = stage_1_image(comfy_server, name)
    other_prompts = stage_1_image(comfy_server, T5_FOLDER, prompts={"prompt_1": "a red fox", "prompt_2": "a ship"})
    # fp8 keeps 3 mantissa bits: the picture moves (measured: 5 and 8 of 255 on average), but far less than
    # when the prompts change (about 25).
    rounding = np.abs(from_file - from_folder).mean()
    prompts_changed = np.abs(other_prompts - from_folder).mean()
    assert 0 < rounding < prompts_changed / 2, (rounding, prompts_changed)
