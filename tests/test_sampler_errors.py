"""The samplers' errors: images Stage II cannot refine are refused with the node, the input and the fix
(through a real ComfyUI, which keeps serving), and out-of-memory is recognised as ComfyUI recognises it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tiny_graphs import prompt_nodes, save, stage_2_nodes

STAGE_II = "Anagram Upscaler (Stage II)"
TESTS_DIR = Path(__file__).resolve().parent


def stage_2_graph(image_node: dict) -> dict:
    """An image from ``image_node`` (node "20") -> Stage II with the tiny models -> SaveImage."""
    return {
        **prompt_nodes({"prompt_1": "a horse", "prompt_2": "a deer"}, precision="fp32"),
        **stage_2_nodes(["20", 0]),
        "9": save(["8", 0], "va/stage2-input"),
        "20": image_node,
    }


def odd_image(*, batch=1, channels=3, fill="0.5", size=64) -> dict:
    """The harness's test-only image node (tests/harness_nodes): NaN, infinities, 0 images, 1 or 4 channels."""
    return {
        "class_type": "HarnessOddImage",
        "inputs": {"batch": batch, "size": size, "channels": channels, "fill": fill},
    }


@pytest.mark.parametrize(
    "image_node, problem, fix",
    [
        (odd_image(batch=0), "the batch is empty (0 images)", "Connect an output that holds at least one image"),
        (odd_image(fill="nan"), "12288 pixel values are NaN or infinite (image 1 of 1)", "Fix the node that made"),
        (odd_image(batch=2, fill="inf"), "24576 pixel values are NaN or infinite (images 1, 2 of 2)", "replace"),
        (odd_image(fill="-inf", size=100), "30000 pixel values are NaN or infinite", "Fix the node that made"),
        (odd_image(channels=4), "has 4 channels", "Convert it to RGB first"),
        (odd_image(channels=1), "has 1 channel;", "Convert it to RGB first"),
    ],
    ids=["empty-batch", "nan", "inf", "minus-inf-resized", "rgba", "grey"],
)
def test_images_stage_ii_cannot_refine_are_refused_with_the_input_and_the_fix(comfy_server, image_node, problem, fix):
    result = comfy_server.run(stage_2_graph(image_node), timeout=600, check=False)
    assert result.status == "error", result.status_messages
    error = result.error
    assert error["node_type"] == "VisualAnagramsStageII"
    message = error["exception_message"]
    assert message.startswith(f"{STAGE_II}: image: "), message
    assert problem in message and fix in message, message
    assert "candidates" not in message  # the old message blamed an input the node does not have
    assert comfy_server.system_stats()["system"]


def test_stage_ii_still_refines_a_good_image_after_refusing_bad_ones(comfy_server):
    comfy_server.run(stage_2_graph(odd_image(fill="nan")), timeout=600, check=False)
    result = comfy_server.run(stage_2_graph(odd_image(batch=2)), timeout=600)
    sizes = [comfy_server.open_image(ref).size for ref in result.images if ref.node_id == "9"]
    assert sizes == [(256, 256)] * 2


# -- out of memory, as ComfyUI defines it -------------------------------------------------------------------------

OUT_OF_MEMORY_CHILD = textwrap.dedent(
    """
    import json, sys, types
    sys.path[:0] = [sys.argv[1], sys.argv[2]]  # ComfyUI, then tests/
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    import comfy.model_management
    import torch
    from pack import import_submodule
    from tiny_models import build_stage_1_pipeline, build_stage_2_pipeline

    class BackendOutOfMemory(RuntimeError):
        "An accelerator's own OOM error, which ComfyUI (not torch) lists as out of memory."

    comfy.model_management.OOM_EXCEPTION = (comfy.model_management.OOM_EXCEPTION, BackendOutOfMemory)
    samplers = import_submodule("nodes.samplers")
    types_module = import_submodule("nodes.types")
    sampling = import_submodule("sampling")
    views = import_submodule("views")

    def out_of_memory(*args, **kwargs):
        raise BackendOutOfMemory("device out of memory (tried to allocate 8 GiB)")

    embeddings = sampling.PromptEmbeddings(torch.zeros(2, 77, 32), torch.zeros(1, 77, 32))
    prompts = types_module.EncodedPrompts(embeddings=embeddings, texts=("a", "b"))
    chain = (views.make_view("identity"), views.make_view("flip"))
    common = dict(prompts=prompts, views=chain, seed=0, steps=2, schedule="steps", guidance=10.0, reduction="auto")
    report = {}
    for node, pipe, extra in [
        (samplers.AnagramStageI, build_stage_1_pipeline(), dict(candidates=1)),
        (samplers.AnagramStageII, build_stage_2_pipeline(), dict(image=torch.rand(1, 64, 64, 3), noise_level=50)),
    ]:
        pipe.unet.forward = out_of_memory
        model = types.SimpleNamespace(get=lambda pipe=pipe: types.SimpleNamespace(pipeline=pipe, device="cpu"))
        try:
            node.execute(model=model, **common, **extra)
            report[node.__name__] = None
        except BaseException as error:
            report[node.__name__] = {
                "message": str(error),
                "comfy_oom": isinstance(error, comfy.model_management.OOM_EXCEPTION),
            }
    print(json.dumps(report))
    """
)


@pytest.mark.comfyui
def test_out_of_memory_is_comfyuis_and_names_the_node_and_the_fix():
    """ComfyUI's own OOM errors (``comfy.model_management.OOM_EXCEPTION``), not only torch's, get the
    message; the error stays an OOM error, so ComfyUI still unloads its models after it.

    In a child process: the test session never imports ComfyUI itself.
    """
    comfyui_dir = os.environ.get("COMFYUI_DIR")
    if not comfyui_dir or not (Path(comfyui_dir) / "main.py").is_file():
        pytest.skip("COMFYUI_DIR is not set (bash scripts/test.sh provides ComfyUI 0.3.75)")
    completed = subprocess.run(
        [sys.executable, "-c", OUT_OF_MEMORY_CHILD, str(Path(comfyui_dir).resolve()), str(TESTS_DIR)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=TESTS_DIR,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    for node, label in [("AnagramStageI", "Anagram Sampler (Stage I)"), ("AnagramStageII", STAGE_II)]:
        outcome = report[node]
        assert outcome is not None, f"{node} ran although its UNet is out of memory"
        assert outcome["message"].startswith(f"{label}: out of memory."), outcome["message"]
        assert "pick offload 'model'" in outcome["message"]
        assert outcome["comfy_oom"]
