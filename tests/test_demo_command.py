"""The README's first command: scripts/demo.sh sets up the environment (the same
as this test run's) and runs scripts/demo.py, tested here end to end: it starts its
own ComfyUI, runs the digits demo on the embedded model, writes the illusion, its
view grid and its animation, prints where they are and stops the server."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def test_demo_writes_the_illusion_grid_and_animation_and_stops_the_server(tmp_path, comfyui_checkout):
    output = tmp_path / "demo-output"
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "demo.py"),
            "--comfyui",
            str(comfyui_checkout),
            "--output",
            str(output),
            "--base-dir",
            str(tmp_path / "base"),
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    printed = completed.stdout
    assert f"are in {output}" in printed

    paths = [Path(match) for match in re.findall(r"^ {3}.*?\s(/\S+)$", printed, flags=re.M)]
    assert paths, printed
    for path in paths:
        assert path.is_file(), f"printed {path}, which does not exist\n{printed}"
        assert path.is_relative_to(output)
    illusions = [Image.open(p) for p in paths if p.name.startswith("illusion")]
    grids = [Image.open(p) for p in paths if p.name.startswith("views")]
    animations = [Image.open(p) for p in paths if p.suffix == ".webp"]
    # The workflow draws 4 candidates of a 2-view illusion at 64 px and enlarges them 4x.
    assert [image.size for image in illusions] == [(256, 256)] * 4, printed
    assert len(grids) == 1 and len(animations) == 1, printed
    # The grid: one row per candidate, the picture under each of the 2 views side by side (plus captions).
    assert grids[0].width == 2 * 256 and grids[0].height >= 4 * 256, grids[0].size
    assert animations[0].n_frames > 10

    # The server it started is gone: its port no longer answers.
    url = re.search(r"on (http://127\.0\.0\.1:\d+)", printed).group(1)
    assert "== ComfyUI stopped" in printed
    with pytest.raises((urllib.error.URLError, OSError)):
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"{url}/system_stats", timeout=2)
