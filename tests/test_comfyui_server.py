"""End to end against a real ComfyUI: the pack installed, core workflows over HTTP and websocket.

The server is started once per session by the ``comfy_server`` fixture
(tests/comfy_server.py) from ``COMFYUI_DIR``; the module is skipped without it.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from comfy_server import (
    PACK_DIR,
    PromptRejected,
    comfy_server_fixture,  # noqa: F401  (provides the comfy_server fixture)
    skip_reason,
)

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


def save_image_prompt(width: int, height: int, color: int, prefix: str, batch_size: int = 1) -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": batch_size, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def slow_prompt(steps: int, delay: float, size: int = 8) -> dict:
    return {
        "1": {"class_type": "HarnessSlowSteps", "inputs": {"steps": steps, "delay": delay, "size": size, "value": 0.25}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }


def traceback_blocks(log: str) -> list[str]:
    """Every 'Traceback (most recent call last):' block, up to and including its exception line."""
    blocks, current = [], None
    for line in log.splitlines():
        if line.startswith("Traceback (most recent call last):"):
            current = [line]
            blocks.append(current)
        elif current is not None:
            current.append(line)
            if line and not line[0].isspace():
                current = None
    return ["\n".join(block) for block in blocks]


FILE_LINE = re.compile(r'^\s*File "([^"]+)"', re.MULTILINE)


def is_pack_file(client, path: str) -> bool:
    """Is this traceback file the pack's own code (not ComfyUI or a venv kept inside the repo)?"""
    if not os.path.isabs(path):  # "<frozen importlib._bootstrap>" and the like
        return False
    if path.startswith(f"{client.pack_dir}{os.sep}"):
        return True
    real = Path(os.path.realpath(path))
    inside = [real.is_relative_to(folder) for folder in (PACK_DIR, client.comfy_dir, PACK_DIR / ".venv", PACK_DIR / ".cache")]
    return inside[0] and not any(inside[1:])


def test_server_boots_with_the_pack_imported(comfy_server):
    log = comfy_server.log_text()
    pack_path = str(comfy_server.pack_dir)
    assert "Import times for custom nodes:" in log, comfy_server.log_tail()
    import_lines = [line for line in log.splitlines() if line.rstrip().endswith(pack_path) and " seconds" in line]
    assert len(import_lines) == 1, f"the pack is not in the import-times table\n{comfy_server.log_tail()}"
    assert "IMPORT FAILED" not in import_lines[0], f"the pack failed to load: {import_lines[0]}\n{comfy_server.log_tail()}"
    assert f"Cannot import {pack_path}" not in log
    assert f"Error while calling comfy_entrypoint in {pack_path}" not in log
    assert f"Skip {pack_path}" not in log
    ours = [block for block in traceback_blocks(log) if any(is_pack_file(comfy_server, path) for path in FILE_LINE.findall(block))]
    assert not ours, "tracebacks through the pack's code:\n" + "\n\n".join(ours)
    # The harness's own helper nodes loaded too (the other tests rely on them).
    assert "IMPORT FAILED" not in next(line for line in log.splitlines() if line.rstrip().endswith("va_harness_nodes.py"))

    stats = comfy_server.system_stats()
    assert stats["system"]["comfyui_version"]
    assert [device["type"] for device in stats["devices"]] == ["cpu"]


def test_object_info_lists_core_and_harness_nodes(comfy_server):
    info = comfy_server.object_info()
    for node in ("SaveImage", "EmptyImage", "PreviewImage", "LoadImage", "HarnessSlowSteps"):
        assert node in info
    assert info["SaveImage"]["input"]["required"]["images"][0] == "IMAGE"
    assert info["SaveImage"]["output_node"] is True
    single = comfy_server.object_info("EmptyImage")
    assert list(single) == ["EmptyImage"]
    assert single["EmptyImage"]["output"] == ["IMAGE"]


def test_core_workflow_saves_png_with_metadata_and_streams_messages(comfy_server):
    prompt = save_image_prompt(72, 40, 0xFF00FF, "harness/empty", batch_size=2)
    workflow = {"nodes": [{"id": 1, "type": "EmptyImage"}, {"id": 2, "type": "SaveImage"}], "links": [], "version": 0.4}
    result = comfy_server.run(prompt, extra_data={"extra_pnginfo": {"workflow": workflow}}, timeout=60)

    assert result.ok
    assert result.entry["status"]["completed"] is True
    images = result.images
    assert [(ref.node_id, ref.subfolder, ref.type) for ref in images] == [("2", "harness", "output")] * 2
    for ref in images:
        assert (comfy_server.output_dir / ref.subfolder / ref.filename).is_file()
        png = comfy_server.open_image(ref)
        assert png.format == "PNG"
        assert png.size == (72, 40)
        assert png.convert("RGB").getpixel((5, 5)) == (255, 0, 255)
        saved_prompt = json.loads(png.text["prompt"])
        assert saved_prompt["1"]["class_type"] == "EmptyImage"
        assert saved_prompt["1"]["inputs"] == prompt["1"]["inputs"]
        assert saved_prompt["2"]["class_type"] == "SaveImage"
        assert json.loads(png.text["workflow"]) == workflow

    # The stream: execution_start, executing 1, executing 2, executed 2, execution_success,
    # then executing None, ComfyUI's end-of-prompt marker (progress_state frames in between).
    messages = [m for m in result.messages if m.type != "progress_state"]
    assert messages[0].type == "execution_start"
    assert [(m.type, m.data.get("node")) for m in messages[-2:]] == [("execution_success", None), ("executing", None)]
    executing = [m.data["node"] for m in result.messages_of("executing")]
    assert executing == ["1", "2", None]
    (executed,) = result.messages_of("executed")
    assert executed.data["node"] == "2"
    assert [image["filename"] for image in executed.data["output"]["images"]] == [ref.filename for ref in images]


def test_progress_and_previews_reach_the_websocket(comfy_server):
    result = comfy_server.run(slow_prompt(steps=3, delay=0.0, size=24), timeout=60)
    progress = [(m.data["value"], m.data["max"], m.data["node"]) for m in result.messages_of("progress")]
    assert progress == [(1, 3, "1"), (2, 3, "1"), (3, 3, "1")]
    previews = result.previews
    assert len(previews) == 3
    assert {(p.event, p.image_format) for p in previews} == {(1, "JPEG")}
    red, green, blue = previews[-1].image().convert("RGB").getpixel((0, 0))
    assert red > 200 and green < 50 and blue < 50  # the last step's shade is pure red
    # PreviewImage wrote its image to temp/, served by /view too.
    (ref,) = result.images
    assert ref.type == "temp"
    assert comfy_server.open_image(ref).size == (24, 24)

    # A client announcing preview metadata (as the current frontend does) gets kind-4 frames.
    listener = comfy_server.new_listener(preview_metadata=True)
    result = comfy_server.run(slow_prompt(steps=2, delay=0.0), listener=listener, timeout=60)
    assert [(p.event, p.data["prompt_id"], p.data["node_id"]) for p in result.previews] == [(4, result.prompt_id, "1")] * 2
    assert comfy_server.messages(result.prompt_id) == []  # other clients see none of it


def test_unknown_node_is_rejected_and_server_keeps_answering(comfy_server):
    with pytest.raises(PromptRejected) as rejected:
        comfy_server.queue({"7": {"class_type": "NoSuchNodeForSure", "inputs": {}}})
    assert rejected.value.status == 400
    assert rejected.value.error["type"] == "invalid_prompt"
    assert "NoSuchNodeForSure" in rejected.value.error["message"]
    assert "#7" in rejected.value.error["details"]
    assert comfy_server.system_stats()["devices"]
    comfy_server.wait_idle(timeout=10)


def test_missing_required_input_is_rejected_and_server_keeps_answering(comfy_server):
    prompt = save_image_prompt(8, 8, 0, "harness/never")
    del prompt["2"]["inputs"]["images"]
    with pytest.raises(PromptRejected) as rejected:
        comfy_server.queue(prompt)
    assert rejected.value.status == 400
    assert rejected.value.error["type"] == "prompt_outputs_failed_validation"
    node_error = rejected.value.node_errors["2"]
    assert node_error["class_type"] == "SaveImage"
    assert [(e["type"], e["extra_info"]["input_name"]) for e in node_error["errors"]] == [("required_input_missing", "images")]
    assert "invalid prompt" in comfy_server.log_text()
    # Still serving: a valid prompt runs.
    assert comfy_server.run(save_image_prompt(9, 7, 0x00FF00, "harness/after-400"), timeout=60).ok


def test_interrupt_stops_a_running_prompt_and_the_next_one_runs(comfy_server):
    steps, delay = 400, 0.05  # 20 s if nothing stopped it
    prompt_id = comfy_server.queue(slow_prompt(steps, delay))
    comfy_server.ws.wait_type(prompt_id, "progress", timeout=60)  # it is running
    started = time.monotonic()
    assert comfy_server.interrupt() == 200
    entry = comfy_server.wait(prompt_id, timeout=30)
    assert time.monotonic() - started < 10
    assert entry["status"]["status_str"] == "error"
    assert "execution_interrupted" in [kind for kind, _ in entry["status"]["messages"]]
    interrupted = comfy_server.ws.wait_done(prompt_id, timeout=10)
    assert interrupted.type == "execution_interrupted"
    assert interrupted.data["node_id"] == "1"
    last_step = max(m.data["value"] for m in comfy_server.messages(prompt_id, "progress"))
    assert last_step < steps

    comfy_server.wait_idle(timeout=10)
    result = comfy_server.run(save_image_prompt(16, 12, 0x0000FF, "harness/after-interrupt"), timeout=60)
    assert comfy_server.open_image(result.images[0]).size == (16, 12)


def test_interrupt_when_idle_is_accepted(comfy_server):
    comfy_server.wait_idle(timeout=10)
    assert comfy_server.interrupt() == 200
    assert comfy_server.interrupt(prompt_id="not-a-running-prompt") == 200
    # A stale global interrupt must not kill the next prompt.
    assert comfy_server.run(slow_prompt(steps=2, delay=0.0), timeout=60).ok
