"""Peak resident memory while loading and running the tiny IF pipeline under each load plan.

Each plan runs in a fresh process (so peaks do not mix): load T5 and encode two
prompts, release T5, load Stage I with the plan's dtype and offload, sample a
two-view illusion. Reports the process's peak RSS (VmHWM) after each phase.

    python scripts/measure_memory.py            # all plans, a Markdown table

A script, not a test: numbers depend on the machine. Linux only (/proc).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLANS = [
    ("fp32", "none", "fp32"),
    ("bf16", "none", "bf16"),
    ("fp16", "none", "fp16"),
    ("fp32", "model", "fp32"),
    ("fp32", "sequential", "fp32"),
    ("fp32", "none", "8bit"),
    ("fp32", "none", "4bit"),
]


def peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(models_dir: str, dtype: str, offload: str, precision: str) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    import torch

    from pack import import_submodule

    sampling = import_submodule("sampling")
    loading = import_submodule("sampling.loading")
    text = import_submodule("sampling.text")
    views = import_submodule("views")
    result = {"imports": peak_mib()}  # torch, diffusers, transformers and the pack
    cpu = torch.device("cpu")
    try:
        t5 = text.load_t5(Path(models_dir) / "tiny-t5", precision=precision, device=cpu, keep_on_cpu=True)
        embeddings = text.encode_prompts(t5, ["a horse", "a deer"], "", style="an oil painting of")
        text.release_t5(t5)
        result["t5"] = peak_mib()
        stage = loading.load_if_stage(Path(models_dir) / "tiny-IF-I", 1, device=cpu, dtype=dtype, offload=offload)
        result["load"] = peak_mib()
        sampling.sample_stage_1(
            stage.pipeline.unet,
            stage.pipeline.scheduler,
            [views.make_view("identity"), views.make_view("flip")],
            embeddings,
            num_inference_steps=3,
            num_candidates=2,
            device=stage.device,
        )
        result["sample"] = peak_mib()
    except Exception as error:  # noqa: BLE001  (a plan this machine refuses, for any reason, is a result too)
        result["refused"] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
    return result


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        print(json.dumps(child(*sys.argv[2:])))
        return
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_models import write_tiny_models

    with tempfile.TemporaryDirectory() as models_dir:
        write_tiny_models(Path(models_dir))
        print(
            "| UNet dtype | offload | T5 precision | imports MiB | after T5 MiB | after Stage I load MiB | "
            "after sampling MiB | note |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for dtype, offload, precision in PLANS:
            output = (
                subprocess.run(
                    [sys.executable, __file__, "--child", models_dir, dtype, offload, precision],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            r = json.loads(output)
            cells = [f"{r[k]:.0f}" if k in r else "-" for k in ("imports", "t5", "load", "sample")]
            print(f"| {dtype} | {offload} | {precision} | {' | '.join(cells)} | {r.get('refused', '')} |")


if __name__ == "__main__":
    main()
