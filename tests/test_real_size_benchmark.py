"""benchmarks/real_size.py on the tiny models: the UNet rows it reports are the ones the samplers compute.

Timings are not checked (they are what the benchmark measures); row counts are exact: this pack's sampler
runs 2N·K rows per step in one call, the published loop 2N per call and one call per candidate, and
factorized views with shared rows (N+1)·K.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "real_size.py"

#: The points checked: every (stage, N, K) below. Stage II (tiny, but 256 px) only at one point, for speed.
POINTS = {1: ((2, 3), (1, 2)), 2: ((2,), (2,))}
EXPECTED = {
    (model, n, k)
    for stage, model in ((1, "IF-I-M"), (2, "IF-II-M"))
    for n in POINTS[stage][0]
    for k in POINTS[stage][1]
}


def markdown_tables(output: str) -> dict[str, list[dict[str, str]]]:
    """Each ``### title``'s table as rows of {column: cell}."""
    tables, title, header = {}, None, None
    for line in output.splitlines():
        if line.startswith("### "):
            title, header = line[4:], None
            tables[title] = []
        elif line.startswith("|") and title is not None and not line.startswith("|---"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if header is None:
                header = cells
            else:
                tables[title].append(dict(zip(header, cells, strict=True)))
    return tables


def run_benchmark(*args: str, env: dict | None = None) -> dict[str, list[dict[str, str]]]:
    completed = subprocess.run(
        [sys.executable, str(BENCHMARK), "--tiny", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return markdown_tables(completed.stdout)


@pytest.fixture(scope="module")
def report() -> dict[str, list[dict[str, str]]]:
    """The one command's sampler and sharing tables on the tiny models, rows of both stages together."""
    tables: dict[str, list[dict[str, str]]] = {}
    for stage, (views, candidates) in POINTS.items():
        args = ["--parts", "sampler", "sharing", "--stages", str(stage), "--dtypes", "fp32"]
        args += ["--views", *map(str, views), "--candidates", *map(str, candidates)]
        for title, rows in run_benchmark(*args).items():
            tables.setdefault(title, []).extend(rows)
    return tables


def test_sampler_table_reports_the_rows_each_sampler_computes(report):
    rows = report["Sampler vs published loop (same UNet)"]
    seen = set()
    for row in rows:
        n, k = int(row["views N"]), int(row["K"])
        seen.add((row["model"], n, k))
        # The published loop: one call of 2N rows per candidate; ours: one call of 2N·K rows.
        assert row["UNet rows/step published (calls × rows)"] == f"{k} × {2 * n} = {2 * n * k}", row
        assert row["ours"] == f"1 × {2 * n * k} = {2 * n * k}", row
    assert seen == EXPECTED


def test_sharing_table_reports_one_unconditional_row_for_factorized_views(report):
    rows = report["Factorized views: share_unet_rows off vs on"]
    seen = set()
    for row in rows:
        n, k = len(row["views"].split(" + ")), int(row["K"])
        seen.add((row["model"], n, k))
        assert int(row["UNet rows/step off (2N·K)"]) == 2 * n * k, row
        assert int(row["on ((N+1)·K)"]) == (n + 1) * k, row
    assert seen == EXPECTED


def test_extras_table_times_the_nodes_own_callback(comfyui_checkout):
    """The per-step extras run the sampler node's on_step (taken from nodes/samplers.py's ``_run``) and one
    preview per step; ComfyUI is imported in the benchmark's own process, never in the test session."""
    tables = run_benchmark(
        "--parts", "extras", "--dtypes", "fp32", env={**os.environ, "COMFYUI_DIR": str(comfyui_checkout)}
    )
    (row,) = tables["Per-step extras of the ComfyUI node (IF-I-M, N = 2, K = 1)"]
    assert row["dtype"] == "fp32"
    # The node's callback ran at every step (the benchmark stops unless each step sent one preview) and the
    # previews were encoded: a 512 px JPEG takes milliseconds.
    assert float(row["node on_step ms"]) >= 0 and float(row["server preview JPEG ms"]) > 0, row
