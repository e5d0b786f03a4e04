"""The test server itself: the pack boots in a real ComfyUI, and the harness reads its websocket stream.

The server is started once per session by the ``comfy_server`` fixture (tests/comfy_test_server.py)
from ``COMFYUI_DIR``; these tests skip without it. ComfyUI's own behaviour (its validation of core
nodes, interrupts, SaveImage metadata) is not tested here: the pack's tests through the server
(tests/test_nodes_api.py and others) cover what the pack relies on, with the pack's nodes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from comfy_server import PACK_DIR


def slow_prompt(steps: int, delay: float, size: int = 8) -> dict:
    return {
        "1": {
            "class_type": "HarnessSlowSteps",
            "inputs": {"steps": steps, "delay": delay, "size": size, "value": 0.25},
        },
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
    inside = [
        real.is_relative_to(folder) for folder in (PACK_DIR, client.comfy_dir, PACK_DIR / ".venv", PACK_DIR / ".cache")
    ]
    return inside[0] and not any(inside[1:])


def test_server_boots_with_the_pack_imported(comfy_server):
    log = comfy_server.log_text()
    pack_path = str(comfy_server.pack_dir)
    assert "Import times for custom nodes:" in log, comfy_server.log_tail()
    import_lines = [line for line in log.splitlines() if line.rstrip().endswith(pack_path) and " seconds" in line]
    assert len(import_lines) == 1, f"the pack is not in the import-times table\n{comfy_server.log_tail()}"
    assert "IMPORT FAILED" not in import_lines[0], (
        f"the pack failed to load: {import_lines[0]}\n{comfy_server.log_tail()}"
    )
    assert f"Cannot import {pack_path}" not in log
    assert f"Error while calling comfy_entrypoint in {pack_path}" not in log
    assert f"Skip {pack_path}" not in log
    ours = [
        block
        for block in traceback_blocks(log)
        if any(is_pack_file(comfy_server, path) for path in FILE_LINE.findall(block))
    ]
    assert not ours, "tracebacks through the pack's code:\n" + "\n\n".join(ours)
    # The harness's own helper nodes loaded too (the other tests rely on them).
    assert "IMPORT FAILED" not in next(
        line for line in log.splitlines() if line.rstrip().endswith("va_harness_nodes.py")
    )

    stats = comfy_server.system_stats()
    assert stats["system"]["comfyui_version"]
    assert [device["type"] for device in stats["devices"]] == ["cpu"]


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
    assert [(p.event, p.data["prompt_id"], p.data["node_id"]) for p in result.previews] == [
        (4, result.prompt_id, "1")
    ] * 2
    assert comfy_server.messages(result.prompt_id) == []  # other clients see none of it
