"""Peak resident memory while loading and running the IF pipeline's pieces on the CPU.

Two tables, each row measured in a fresh process (so peaks do not mix):

1. Load plans on the tiny models: load T5 and encode two prompts, release T5, load
   Stage I with the plan's dtype and offload, sample a two-view illusion. Reports the
   process's peak RSS (VmHWM) after each phase.
2. UNet dtypes (fp32, fp16, bf16, 8bit, 4bit) on the tiny Stage I and II and on a
   mid-size random IF-shaped Stage I UNet (built into a temporary folder, never
   saved anywhere else): peak RSS after loading and after stepping, the private
   (anonymous) RSS after stepping, the bytes the weights take, and the time of one
   UNet call on a guidance pair (batch 2: the fastest of 2 to 6 timed calls after a
   warm-up). diffusers maps fp32 safetensors files into memory and reads them
   lazily: those pages count in RSS once touched but are the file's (not private),
   and the Linear layers' pages stay mapped after a quantized copy replaces them.

    python scripts/measure_memory.py            # both tables, Markdown

A script, not a test: numbers depend on the machine. Linux only (/proc).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
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
UNET_DTYPES = ("fp32", "fp16", "bf16", "8bit", "4bit")
#: The mid-size UNet: IF-I's block types, 64-channel attention heads and T5-XXL's 4096-wide text input, at
#: widths that load in seconds (247M parameters, 38 % of them in Linear layers).
MID_SIZE_CHANNELS = (64, 256, 512, 768)
MID_SIZE_NAME = "random-IF-I-247M"
MIN_TIMED_CALLS, MAX_TIMED_CALLS, TIMING_SECONDS = 2, 6, 20.0


def status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_mib() -> float:
    return status_mib("VmHWM")


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


def unet_child(folder: str, stage: str, dtype: str) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    import torch

    from pack import import_submodule

    loading = import_submodule("sampling.loading")
    result = {"imports": peak_mib()}
    stage = int(stage)
    try:
        loaded = loading.load_if_stage(folder, stage, device=torch.device("cpu"), dtype=dtype)
    except Exception as error:  # noqa: BLE001  (a dtype this machine refuses is a result too)
        result["refused"] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
        return result
    result["load"] = peak_mib()
    result["weights"] = loaded.estimated_bytes
    result["parameters"] = loaded.parameter_count
    unet, config = loaded.unet, loaded.unet.config
    generator = torch.Generator().manual_seed(0)
    size = config.sample_size
    sample = torch.randn((2, config.in_channels, size, size), generator=generator).to(loaded.dtype)
    text = torch.randn((2, 77, config.encoder_hid_dim), generator=generator).to(loaded.dtype)
    extra = {"class_labels": torch.tensor([50, 50])} if stage == 2 else {}
    times = []
    with torch.inference_mode():
        unet(sample, 500, encoder_hidden_states=text, **extra)  # warm-up
        # The fastest of a few calls: on a shared machine the slow ones measure the neighbours.
        while len(times) < MIN_TIMED_CALLS or (len(times) < MAX_TIMED_CALLS and sum(times) < TIMING_SECONDS):
            start = time.perf_counter()
            unet(sample, 500, encoder_hidden_states=text, **extra)
            times.append(time.perf_counter() - start)
    result["step"] = min(times)
    result["sample"] = peak_mib()
    result["private"] = status_mib("RssAnon")
    return result


def write_mid_size_model(folder: Path) -> None:
    """A random Stage I pipeline folder with an IF-shaped UNet of 247M parameters (deterministic weights)."""
    import torch
    from diffusers import IFPipeline, UNet2DConditionModel

    from tiny_models import if_scheduler

    torch.manual_seed(0)
    levels = len(MID_SIZE_CHANNELS)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=3,
        out_channels=6,
        layers_per_block=2,
        block_out_channels=MID_SIZE_CHANNELS,
        down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * (levels - 1),
        up_block_types=("SimpleCrossAttnUpBlock2D",) * (levels - 1) + ("ResnetUpsampleBlock2D",),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        cross_attention_dim=MID_SIZE_CHANNELS[-1],
        encoder_hid_dim=4096,
        attention_head_dim=64,
        addition_embed_type="text",
        addition_embed_type_num_heads=64,
        cross_attention_norm="group_norm",
        resnet_time_scale_shift="scale_shift",
        act_fn="gelu",
        norm_num_groups=32,
    )
    pipeline = IFPipeline(
        tokenizer=None,
        text_encoder=None,
        unet=unet,
        scheduler=if_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)


def run_child(*args: str) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True
    ).stdout.strip()
    return json.loads(output.splitlines()[-1])


def unet_table(models_dir: Path) -> None:
    models = [("tiny-IF-I", 1), ("tiny-IF-II", 2), (MID_SIZE_NAME, 1)]
    print()
    print(
        "| model (parameters) | dtype | imports MiB | peak after load MiB | peak after steps MiB | "
        "private after steps MiB | weights MB | s per UNet call | note |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, stage in models:
        for dtype in UNET_DTYPES:
            r = run_child("--unet-child", str(models_dir / name), str(stage), dtype)
            cells = [f"{r[k]:.0f}" if k in r else "-" for k in ("imports", "load", "sample", "private")]
            weights = f"{r['weights'] / 1e6:.1f}" if "weights" in r else "-"
            step = f"{r['step']:.2f}" if "step" in r else "-"
            label = f"{name} ({r['parameters'] / 1e6:.1f}M)" if "parameters" in r else name
            print(f"| {label} | {dtype} | {' | '.join(cells)} | {weights} | {step} | {r.get('refused', '')} |")


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        print(json.dumps(child(*sys.argv[2:])))
        return
    if len(sys.argv) == 5 and sys.argv[1] == "--unet-child":
        print(json.dumps(unet_child(*sys.argv[2:])))
        return
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_models import write_tiny_models

    with tempfile.TemporaryDirectory() as models_dir:
        write_tiny_models(Path(models_dir))
        write_mid_size_model(Path(models_dir) / MID_SIZE_NAME)
        print(
            "| UNet dtype | offload | T5 precision | imports MiB | after T5 MiB | after Stage I load MiB | "
            "after sampling MiB | note |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for dtype, offload, precision in PLANS:
            r = run_child("--child", models_dir, dtype, offload, precision)
            cells = [f"{r[k]:.0f}" if k in r else "-" for k in ("imports", "t5", "load", "sample")]
            print(f"| {dtype} | {offload} | {precision} | {' | '.join(cells)} | {r.get('refused', '')} |")
        unet_table(Path(models_dir))


if __name__ == "__main__":
    main()
