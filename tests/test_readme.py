"""The README is the user's first screen: its commands exist, CI runs its test command,
and its node reference names every node the server shows."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
PACK_CATEGORY = "visual_anagrams"


def code_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(language, non-empty lines) of every fenced code block, in order."""
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)
    return [(language, [line for line in body.splitlines() if line.strip()]) for language, body in blocks]


def test_first_code_block_is_the_demo_and_the_test_command():
    language, lines = code_blocks(README)[0]
    assert language == "bash"
    assert lines == ["bash scripts/demo.sh", "bash scripts/test.sh"], lines
    for line in lines:
        script = REPO / shlex.split(line)[1]
        assert script.is_file(), f"{line}: {script} does not exist"
        assert script.read_text().startswith("#!/usr/bin/env bash"), script


def test_ci_runs_the_readme_test_command():
    test_command = code_blocks(README)[0][1][1]
    ci = (REPO / ".ci" / "run").read_text()
    assert f"exec {test_command}" in ci


def test_readme_has_no_unfilled_placeholders():
    # Sections are drafted with UPPER_CASE markers; none may reach the user.
    leftovers = re.findall(r"\b[A-Z]{3,}_[A-Z_]{3,}\b", README)
    allowed = {
        "HF_TOKEN",
        "HF_HUB_OFFLINE",
        "COMFYUI_DIR",
        "VA_VENV",
        "VA_TORCH_SPEC",
        "COMFYUI_EXTRA_ARGS",
        "JSON_FORCE_OBJECT",  # PHP's flag, in the API JSON troubleshooting row
        "OOM_EXCEPTION",  # comfy.model_management's, in the out-of-memory row
    }
    assert not set(leftovers) - allowed, sorted(set(leftovers) - allowed)


def test_node_reference_names_every_node(comfy_server):
    info = comfy_server.object_info()
    ours = {name: node for name, node in info.items() if node.get("category", "").startswith(PACK_CATEGORY)}
    assert len(ours) > 20, sorted(ours)
    undocumented = []
    for name, node in ours.items():
        title = node["display_name"]
        if name.startswith("VisualAnagramsView_"):
            # Views are listed by their label ("View: Rotate 90° clockwise" -> "rotate 90° clockwise").
            label = title.removeprefix("View: ")
            label = re.sub(r"\s*\(fails\)$", "", label)
            if label.lower() not in README.lower():
                undocumented.append(title)
        elif title not in README:
            undocumented.append(title)
    assert not undocumented, f"README's node reference misses {undocumented}"


def test_headless_python_example_runs_against_a_server(comfy_server, tmp_path):
    """The README's Python example, run as printed, on the flip example with the tiny models."""
    import json
    import os
    import subprocess
    import sys

    from workflow_tools import api_workflow, with_tiny_models

    section = README[README.index("### Run them headless") :]
    language, lines = code_blocks(section)[0]
    assert language == "python"
    snippet = "\n".join(lines)
    workflow = tmp_path / "flip.json"
    workflow.write_text(json.dumps(with_tiny_models(api_workflow("flip"))))
    for printed, local in (
        ('"http://127.0.0.1:8188"', repr(comfy_server.base_url)),
        ('"api_workflows/flip.json"', repr(str(workflow))),
    ):
        assert printed in snippet, f"the example no longer uses {printed}"
        snippet = snippet.replace(printed, local)

    completed = subprocess.run(
        [sys.executable, "-c", snippet],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"},
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0] == "success", completed.stdout
    views = [line for line in lines[1:] if line.startswith(f"{comfy_server.base_url}/view?filename=")]
    assert views, completed.stdout
    for url in views:  # every printed address serves the image
        image = comfy_server.request("GET", url.removeprefix(comfy_server.base_url))
        assert image.status == 200 and image.body[:4] in (b"\x89PNG", b"RIFF"), url
