"""Peak resident memory while loading and running the IF pipeline's pieces on the CPU.

Three parts, each row measured in a fresh process (so peaks do not mix):

``tiny`` -- load plans on the tiny models: load T5 and encode two prompts, release T5, load Stage I with the
   plan's dtype and offload, sample a two-view illusion. Reports the process's peak RSS (VmHWM) after each phase.
``mid`` -- UNet dtypes (fp32, fp16, bf16, 8bit, 4bit) on the tiny Stage I and II and on a mid-size random
   IF-shaped Stage I UNet (built into a temporary folder, never saved anywhere else): peak RSS after loading
   and after stepping, the private (anonymous) RSS after stepping, the bytes the weights take, and the time of
   one UNet call on a guidance pair (batch 2: the fastest of 2 to 6 timed calls after a warm-up).
``real`` -- load plans at real size: IF-I-M and IF-II-M (``real_size_models.py``: the IF family's published
   layout at M widths, random weights, fp32 files as the Hub repos' main weights) through ``load_if_stage``, and
   the T5-XXL encoder (random, bf16 files) through ``load_t5``: peak RSS (VmHWM) after the imports, after
   loading and after reading every weight once (as the first step or prompt does), the private RSS then, the
   bytes the weights take, and the load's and the row's wall time.
   The folders are built once into ``.cache/benchmarks/`` and reused. A watchdog stops a row whose process
   would leave the machine with less than ``--min-available`` GiB.

diffusers and transformers map safetensors files into memory and read them lazily: those pages count in RSS
once touched but are the file's (not private), and the Linear layers' pages stay mapped after a quantized copy
replaces them. So "peak" can exceed what the process owns; "private" is what it owns.

    python benchmarks/memory.py                                   # every part, Markdown
    python benchmarks/memory.py --part real --models IF-I-M T5-XXL --threads 1

A benchmark, not a test: numbers depend on the machine. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARTS = ("tiny", "mid", "real")
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
#: The real-size rows: (model, precision). IF's UNets load from fp32 files (the Hub repos' main weights);
#: T5-XXL from bf16 files (its fp32 files would be 19 GB, more than this part may take).
T5_NAME = "T5-XXL"
REAL_MODELS = ("IF-I-M", "IF-II-M", T5_NAME)
REAL_PRECISIONS = {
    "IF-I-M": ("fp32", "bf16", "8bit", "4bit"),
    "IF-II-M": ("fp32", "bf16", "8bit", "4bit"),
    T5_NAME: ("bf16", "8bit", "4bit"),
}
UNET_FILE_DTYPE, T5_FILE_DTYPE = "fp32", "bf16"
_TORCH_DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16"}
#: The watchdog's default floor: the machine's MemAvailable a row may not push below (GiB).
MIN_AVAILABLE_GIB = 2.0
WATCH_SECONDS = 0.25


def status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_mib() -> float:
    return status_mib("VmHWM")


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024**2
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def refusal(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"


# -- children: one measurement each, in a fresh process ----------------------------------------------------------
def plan_child(models_dir: str, dtype: str, offload: str, precision: str) -> dict:
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
        result["refused"] = refusal(error)
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
        result["refused"] = refusal(error)
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


def load_child(folder: str, model: str, precision: str) -> dict:
    """Load one real-size model as the nodes do (a UNet through load_if_stage, T5 through load_t5), then read
    every weight once, as the first step or prompt would: weights diffusers and transformers left in a lazily
    mapped file are paged in only then."""
    sys.path.insert(0, str(REPO / "tests"))
    import torch

    from pack import import_submodule

    loading = import_submodule("sampling.loading")
    text = import_submodule("sampling.text")
    result = {"imports": peak_mib()}
    cpu = torch.device("cpu")
    start = time.perf_counter()
    try:
        if model == T5_NAME:
            loaded = text.load_t5(folder, precision=precision, device=cpu, keep_on_cpu=True)
            network = loaded.model
        else:
            stage = 1 if model.startswith("IF-I-") else 2
            loaded = loading.load_if_stage(folder, stage, device=cpu, dtype=precision)
            network = loaded.unet
    except Exception as error:  # noqa: BLE001  (a precision this machine refuses is a result too)
        result["refused"] = refusal(error)
        return result
    result["seconds"] = time.perf_counter() - start
    result["load"] = peak_mib()
    with torch.no_grad():
        for tensor in [*network.parameters(), *network.buffers()]:
            tensor.sum()  # reads every page of the tensor, allocates nothing that stays
    result["read"] = peak_mib()
    result["private"] = status_mib("RssAnon")
    result["weights"] = loaded.estimated_bytes
    return result


CHILDREN = {"--plan-child": plan_child, "--unet-child": unet_child, "--load-child": load_child}


def run_child(*args: str, threads: int | None = None, min_available_gib: float = 0.0) -> dict:
    """Run one child; its JSON result plus ``wall`` (seconds, imports included). A watchdog kills it if the
    machine's available memory falls below ``min_available_gib`` (0: no watchdog), and says so."""
    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    lowest = available_gib()
    try:
        while process.poll() is None:
            try:
                process.wait(WATCH_SECONDS)
            except subprocess.TimeoutExpired:
                lowest = min(lowest, available_gib())
                if lowest < min_available_gib:
                    process.kill()
                    process.communicate()
                    return {
                        "refused": f"stopped: the machine's available memory fell to {lowest:.1f} GiB",
                        "wall": time.perf_counter() - start,
                    }
        stdout, stderr = process.communicate()
    finally:
        if process.poll() is None:  # interrupted (Ctrl-C): leave no measurement running
            process.kill()
            process.wait()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        last = (stderr.strip().splitlines() or [f"exit status {process.returncode}"])[-1]
        return {"refused": f"the process failed: {last[:160]}", "wall": wall}
    return {**json.loads(stdout.strip().splitlines()[-1]), "wall": wall}


# -- tables ----------------------------------------------------------------------------------------------------
def _mib(result: dict, *keys: str) -> list[str]:
    return [f"{result[k]:.0f}" if k in result else "-" for k in keys]


def tiny_load_table(models_dir: Path, threads: int | None = None) -> list[str]:
    lines = [
        "| UNet dtype | offload | T5 precision | imports MiB | after T5 MiB | after Stage I load MiB | "
        "after sampling MiB | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dtype, offload, precision in PLANS:
        r = run_child("--plan-child", str(models_dir), dtype, offload, precision, threads=threads)
        cells = _mib(r, "imports", "t5", "load", "sample")
        lines.append(f"| {dtype} | {offload} | {precision} | {' | '.join(cells)} | {r.get('refused', '')} |")
    return lines


def unet_dtype_table(models_dir: Path, threads: int | None = None) -> list[str]:
    lines = [
        "| model (parameters) | dtype | imports MiB | peak after load MiB | peak after steps MiB | "
        "private after steps MiB | weights MB | s per UNet call | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, stage in [("tiny-IF-I", 1), ("tiny-IF-II", 2), (MID_SIZE_NAME, 1)]:
        for dtype in UNET_DTYPES:
            r = run_child("--unet-child", str(models_dir / name), str(stage), dtype, threads=threads)
            cells = _mib(r, "imports", "load", "sample", "private")
            weights = f"{r['weights'] / 1e6:.1f}" if "weights" in r else "-"
            step = f"{r['step']:.2f}" if "step" in r else "-"
            label = f"{name} ({r['parameters'] / 1e6:.1f}M)" if "parameters" in r else name
            lines.append(f"| {label} | {dtype} | {' | '.join(cells)} | {weights} | {step} | {r.get('refused', '')} |")
    return lines


def real_model_folder(model: str, cache_dir: Path) -> Path:
    """The model's folder under ``cache_dir``, built first if it is not there yet (minutes for T5-XXL)."""
    import real_size_models
    import torch

    files = T5_FILE_DTYPE if model == T5_NAME else UNET_FILE_DTYPE
    folder, dtype = cache_dir / f"{model}-{files}", getattr(torch, _TORCH_DTYPE_NAMES[files])
    if model == T5_NAME:
        return real_size_models.write_t5_folder(folder, dtype)
    return real_size_models.write_stage_folder(model, folder, dtype)


def real_size_load_table(
    models: Sequence[str] = REAL_MODELS,
    precisions: Sequence[str] | None = None,
    cache_dir: Path | None = None,
    threads: int | None = 1,
    min_available_gib: float = MIN_AVAILABLE_GIB,
) -> list[str]:
    """Markdown lines: one real-size load per row (``precisions`` filters each model's list)."""
    import real_size_models

    cache_dir = Path(cache_dir or real_size_models.CACHE_DIR)
    lines = [
        "| model (parameters) | files | precision | imports MiB | peak after load MiB | peak after reading the "
        "weights MiB | private MiB | weights MB | load s | row wall s | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in models:
        build_start = time.perf_counter()
        folder = real_model_folder(model, cache_dir)
        print(f"{model}: folder ready in {time.perf_counter() - build_start:.0f} s ({folder})", file=sys.stderr)
        files = T5_FILE_DTYPE if model == T5_NAME else UNET_FILE_DTYPE
        # Counted from the architecture: a loaded 4-bit T5 reports its packed (halved) element count.
        parameters = (
            real_size_models.t5_parameter_count() if model == T5_NAME else real_size_models.parameter_count(model)
        )
        for precision in REAL_PRECISIONS[model]:
            if precisions and precision not in precisions:
                continue
            r = run_child(
                "--load-child", str(folder), model, precision, threads=threads, min_available_gib=min_available_gib
            )
            label = f"{model} ({parameters / 1e6:,.1f}M)"
            cells = _mib(r, "imports", "load", "read", "private")
            weights = f"{r['weights'] / 1e6:,.0f}" if "weights" in r else "-"
            seconds = f"{r['seconds']:.1f}" if "seconds" in r else "-"
            line = f"| {label} | {files} | {precision} | {' | '.join(cells)} | {weights} | {seconds} | "
            lines.append(line + f"{r['wall']:.1f} | {r.get('refused', '')} |")
            print(lines[-1], file=sys.stderr, flush=True)  # progress: rows take minutes
    return lines


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


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", nargs="+", choices=PARTS, default=list(PARTS), help="which tables (default: all)")
    parser.add_argument(
        "--models", nargs="+", choices=REAL_MODELS, default=list(REAL_MODELS), help="the real part's models"
    )
    parser.add_argument("--precisions", nargs="+", help="the real part's precisions (default: each model's list)")
    parser.add_argument(
        "--threads", type=int, help="torch threads in each measured process (default: torch's; the real part: 1)"
    )
    parser.add_argument(
        "--min-available",
        type=float,
        default=MIN_AVAILABLE_GIB,
        help="GiB of available memory a real-size row may not push the machine below (0: no watchdog)",
    )
    parser.add_argument("--cache-dir", type=Path, help="where the real-size folders are built (.cache/benchmarks)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[str]:
    """Run the chosen parts; print and return their Markdown tables."""
    arguments = parse_arguments(argv)
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO / "benchmarks"))
    lines: list[str] = []

    def table(title: str, rows: list[str]) -> None:
        lines.extend([f"### {title}", "", *rows, ""])
        print("\n".join([f"### {title}", "", *rows, ""]), flush=True)

    if {"tiny", "mid"} & set(arguments.part):
        from tiny_models import write_tiny_models

        with tempfile.TemporaryDirectory() as models_dir:
            models_dir = Path(models_dir)
            write_tiny_models(models_dir)
            if "tiny" in arguments.part:
                table("Load plans, tiny models", tiny_load_table(models_dir, arguments.threads))
            if "mid" in arguments.part:
                write_mid_size_model(models_dir / MID_SIZE_NAME)
                table("UNet dtypes, tiny and mid-size UNets", unet_dtype_table(models_dir, arguments.threads))
    if "real" in arguments.part:
        rows = real_size_load_table(
            arguments.models,
            arguments.precisions,
            arguments.cache_dir,
            threads=arguments.threads or 1,
            min_available_gib=arguments.min_available,
        )
        table("Loads at real size (random weights)", rows)
    return lines


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in CHILDREN:
        print(json.dumps(CHILDREN[sys.argv[1]](*sys.argv[2:])))
    else:
        main()
