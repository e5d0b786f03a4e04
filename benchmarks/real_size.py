"""Real-size benchmark: this pack's sampler against the published per-view loop on IF-I-M and IF-II-M UNets.

The one command (every table; CPU here, CUDA when there is one, unchanged):

    python benchmarks/real_size.py

The UNets have IF-I-M's and IF-II-M's architectures with random weights (``benchmarks/real_size_models.py``;
DeepFloyd's weights are gated and never downloaded here): the arithmetic per step is the real one. Tables:

1. Architectures: each UNet benchmarked, its parameters as built and its model card's figure.
2. Sampler vs published loop, same UNet, same anagram views (the first N of identity, rotate_cw, flip, negate),
   K candidates. *published* runs ``tests/paper_reference.py``'s loop once per candidate, as the paper's
   ``generate.py`` samples; *ours* runs ``sample_stage_1`` / ``sample_stage_2`` once for all K. *UNet rows per
   step* are the batch sizes a forward pre-hook on the UNet saw, as calls x rows (published: K calls of 2N rows;
   ours: one call of 2N·K). *s/step* is one denoising step of all K candidates; *s/illusion-step* = s/step ÷ K,
   one step of one illusion. *published/ours* is the ratio of their s/step, in wall time and (CPU) in this
   process's CPU time.
3. Factorized sharing: a hybrid illusion (low_pass + high_pass; triple_low/medium/high_pass for 3 views) with
   ``share_unet_rows`` off (every view its own unconditional rows: 2N·K) and on (factorized views show the UNet
   the same x_t and share the negative prompt, so one unconditional estimate serves all: (N+1)·K).
4. Per-step extras at IF-I-M size: the ComfyUI sampler node's own per-step callback (``nodes/samplers.py``
   ``_run``'s on_step: interrupt check, preview of the first candidate's clean estimate as a PIL image,
   ``ProgressBar.update_absolute``), and the JPEG the ComfyUI server then encodes from that preview (on its own
   thread), each as a share of a step's time (N = 2, K = 1: the smallest step, where they weigh most). Needs a
   ComfyUI checkout ($COMFYUI_DIR, else .cache/comfyui), not a running ComfyUI.

Timing: each point times --steps steps of every run (ours: one run for all K; published: one run per
candidate). Ours' run and the published loop's first run start with --warmup untimed steps: a batch size's
first UNet call pays one-time costs (kernel set-up, allocations), and the published loop's later runs repeat
its first run's batch size. The timed steps run from the start of the first timed step's UNet call to the end
of the run, so a run's setup (schedule, noise, Stage II's upsampling) is not a step. On a CPU the tables also
give ratios of this process's CPU time (``time.process_time``): on a machine shared with other jobs wall time
stretches with their load and CPU time does not, so there the CPU-time ratios are the ones to compare.

Defaults: the full grid (N = 2, 3, 4; K = 1, 4; fp32 and bf16) at both stages, except on a CPU, where Stage II
runs N = 2 in bf16 only (``CPU_STAGE_2_DEFAULTS``); any of --views, --candidates, --dtypes given applies to
every stage.

    python benchmarks/real_size.py --parts sampler --stages 1 --views 2 --candidates 1 --dtypes fp32
    python benchmarks/real_size.py --tiny          # the same code path on the tiny test models, in seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace

import torch
from sampler_runs import ANAGRAM_VIEWS, PublishedPipeline, import_submodule, run_ours, run_published

REPO = Path(__file__).resolve().parents[1]
PARTS = ("architectures", "sampler", "sharing", "extras")
STAGE_MODELS = {1: "IF-I-M", 2: "IF-II-M"}
STAGE_SIZES = {1: 64, 2: 256}
#: Factorized splits by view count: the hybrid image's two bands, and three bands.
FACTORIZED_VIEWS = {
    2: ("low_pass", "high_pass"),
    3: ("triple_low_pass", "triple_medium_pass", "triple_high_pass"),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_GRID = {"views": (2, 3, 4), "candidates": (1, 4), "dtypes": ("fp32", "bf16")}
#: On a CPU an IF-II-M row costs 6-8x an IF-I-M row (one core of this Xeon with AMX: IF-I-M 1.6 s fp32, 0.48 s
#: bf16; IF-II-M 9.6 s fp32, 3.9 s bf16), so by default Stage II runs its 2-view points in bf16 only there; the
#: whole default run then takes 30 minutes on one core (1778 s measured). Flags given apply to every stage.
CPU_STAGE_2_DEFAULTS = {"views": (2,), "dtypes": ("bf16",)}
#: The extras cost milliseconds: time them over at least this many steps, whatever --steps says, after at
#: least one untimed step (the first preview pays one-time costs: PIL's JPEG encoder, numpy paths).
MIN_EXTRAS_STEPS = 3
MIN_EXTRAS_WARMUP = 1
EXTRAS_BUDGET = 0.02  # of a step's time


# -- models ---------------------------------------------------------------------------------------------------
class RealSizeModels:
    """IF-I-M and IF-II-M with random weights (benchmarks/real_size_models.py)."""

    def __init__(self):
        import real_size_models

        self._models = real_size_models

    def build_unet(self, name: str, dtype: torch.dtype):
        return self._models.build_unet(name, dtype)

    def parameter_count(self, name: str) -> int:
        return self._models.parameter_count(name)

    def card_parameters(self, name: str) -> int | None:
        return self._models.ARCHITECTURES[name].card_parameters


class TinyModels:
    """The tiny test UNets (tests/tiny_models.py) under the real models' names: the same code path in seconds."""

    def build_unet(self, name: str, dtype: torch.dtype):
        from tiny_models import build_stage_1_unet, build_stage_2_unet

        build = build_stage_1_unet if name == STAGE_MODELS[1] else build_stage_2_unet
        return build().to(dtype)

    def parameter_count(self, name: str) -> int:
        return sum(parameter.numel() for parameter in self.build_unet(name, torch.float32).parameters())

    def card_parameters(self, name: str) -> int | None:
        return None


class UNetCache:
    """Builds each (stage's model, dtype) once in a row, one UNet in memory at a time (IF-II-M fp32 is about
    2 GB)."""

    def __init__(self, models, device: torch.device):
        self.models, self.device = models, device
        self._key, self._unet = None, None

    def get(self, stage: int, dtype: torch.dtype):
        if self._key != (stage, dtype):
            self._unet = None  # freed before the next one is built
            self._unet = self.models.build_unet(STAGE_MODELS[stage], dtype).to(self.device)
            self._key = (stage, dtype)
        return self._unet


# -- counting and timing UNet calls ---------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class UNetCalls:
    """Records, for every UNet call inside the ``with`` block, its batch size and when it started."""

    def __init__(self, unet):
        self.unet = unet
        self.rows: list[int] = []
        self.starts: list[float] = []

    def __enter__(self) -> UNetCalls:
        self._handle = self.unet.register_forward_pre_hook(self._record, with_kwargs=True)
        return self

    def __exit__(self, *exc_info) -> None:
        self._handle.remove()

    def _record(self, module, args, kwargs) -> None:
        sample = args[0] if args else kwargs["sample"]
        synchronize(sample.device)  # so that the previous step's queued work counts as the previous step's
        self.starts.append(clock())
        self.rows.append(sample.shape[0])


def clock() -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds). On a CPU shared with other jobs, wall time stretches with
    their load while CPU time stays the work done, so ratios of CPU times compare like with like there."""
    return time.perf_counter(), time.process_time()


@dataclass(frozen=True)
class Timing:
    warmup: int
    steps: int


@dataclass(frozen=True)
class StepCost:
    """One denoising step of a whole point (all K candidates)."""

    seconds: float
    cpu_seconds: float  # this process's CPU time (see clock)
    calls: int  # UNet calls per step
    rows_per_call: int

    @property
    def rows(self) -> int:
        return self.calls * self.rows_per_call


@dataclass(frozen=True)
class TimedRun:
    """A run's timed steps."""

    seconds: float
    cpu_seconds: float
    rows: list[int]  # the batch size of each of their UNet calls


def timed_run(unet, run: Callable[[int], object], timing: Timing) -> TimedRun:
    """Runs ``run(warmup + steps)`` once and times its last ``steps`` steps."""
    total = timing.warmup + timing.steps
    with UNetCalls(unet) as calls:
        run(total)
        synchronize(unet.device)
        end = clock()
    if not calls.rows or len(calls.rows) % total:
        raise RuntimeError(f"{len(calls.rows)} UNet calls in {total} steps: expected the same number every step")
    first_timed = timing.warmup * len(calls.rows) // total
    (wall, cpu) = calls.starts[first_timed]
    return TimedRun(end[0] - wall, end[1] - cpu, calls.rows[first_timed:])


def step_cost(runs: Sequence[TimedRun], steps: int) -> StepCost:
    """The cost per step of runs that together make one step of the point (published: one run per candidate)."""
    rows = [row for run in runs for row in run.rows]
    if len(set(rows)) != 1:
        raise RuntimeError(f"UNet calls of different sizes within a point: {sorted(set(rows))}")
    return StepCost(
        sum(run.seconds for run in runs) / steps,
        sum(run.cpu_seconds for run in runs) / steps,
        len(rows) // steps,
        rows[0],
    )


def ours_step(unet, stage, view_names, candidates, timing: Timing, *, share_unet_rows=True) -> StepCost:
    run = partial(run_ours, unet, stage, view_names, candidates, share_unet_rows=share_unet_rows)
    return step_cost([timed_run(unet, run, timing)], timing.steps)


def published_step(unet, stage, view_names, candidates, timing: Timing) -> StepCost:
    pipe = PublishedPipeline(unet)
    runs = []
    for seed in range(candidates):  # the published code samples candidates one after another
        # The first run warms up the batch size every later one repeats.
        warmed = timing if seed == 0 else Timing(0, timing.steps)
        runs.append(timed_run(unet, partial(run_published, pipe, stage, view_names, seed), warmed))
    return step_cost(runs, timing.steps)


# -- the ComfyUI node's per-step extras -----------------------------------------------------------------------
def comfyui_checkout() -> Path | None:
    folder = Path(os.environ.get("COMFYUI_DIR") or REPO / ".cache" / "comfyui")
    return folder if (folder / "main.py").is_file() else None


def import_node_samplers(comfyui: Path, device: torch.device):
    """The pack's nodes/samplers.py and ComfyUI's comfy.utils, from a checkout, without starting ComfyUI."""
    sys.path.insert(0, str(comfyui))
    import comfy.cli_args

    # Without a GPU, comfy.model_management must be told to use the CPU before it is imported.
    comfy.cli_args.args.cpu = device.type == "cpu"
    import comfy.utils

    return import_submodule("nodes.samplers"), comfy.utils


def node_step_callback(samplers, steps: int) -> Callable:
    """The sampler node's own per-step callback: ``_run`` (nodes/samplers.py) makes it and hands it to the core
    sampler, so a stand-in sampler keeps it. The benchmark times the node's code, not a copy."""
    kept = {}

    def keep_callback(**inputs):
        kept["callback"] = inputs["callback"]
        return SimpleNamespace(images=None)

    model = SimpleNamespace(pipeline=SimpleNamespace(unet=None, scheduler=None), device=None)
    samplers._run(
        keep_callback,
        model,
        prompts=SimpleNamespace(embeddings=None),
        views=[],
        seed=0,
        steps=steps,
        schedule=samplers.STEP_COUNT,
        guidance=10.0,
        reduction="mean",
    )
    return kept["callback"]


def encode_preview(preview) -> bytes:
    """What ComfyUI's server does with each preview the progress bar sends (server.py ``send_image``, 0.3.75):
    fit it into max_size x max_size, JPEG at quality 95. Restated here: the server module builds its web app
    when imported."""
    from PIL import Image, ImageOps

    image_type, image, max_size = preview
    image = ImageOps.contain(image, (max_size, max_size), Image.Resampling.BILINEAR)
    buffer = BytesIO()
    image.save(buffer, format=image_type, quality=95, compress_level=1)
    return buffer.getvalue()


@dataclass(frozen=True)
class Extras:
    step_seconds: float  # with the node's callback inside, as in ComfyUI
    callback_seconds: float  # the node's on_step, per step
    encode_seconds: float  # the server's preview JPEG, per step


def measure_extras(unet, samplers, comfy_utils, timing: Timing) -> Extras:
    """One IF-I-M step (N = 2, K = 1) with the node's callback, timed inside the run."""
    previews, callback_seconds = [], []
    # What the progress bar sends to the server, kept to encode afterwards as the server would. Set before the
    # node makes its ProgressBar, which reads the hook when it is made.
    comfy_utils.set_progress_bar_global_hook(lambda value, total, preview, **ids: previews.append(preview))
    try:
        on_step = node_step_callback(samplers, timing.warmup + timing.steps)

        def timed_on_step(info):
            start = time.perf_counter()
            on_step(info)
            callback_seconds.append(time.perf_counter() - start)

        run = timed_run(unet, partial(run_ours, unet, 1, ANAGRAM_VIEWS[:2], 1, callback=timed_on_step), timing)
    finally:
        comfy_utils.set_progress_bar_global_hook(None)
    if len(previews) != len(callback_seconds):
        raise RuntimeError(f"{len(callback_seconds)} steps sent {len(previews)} previews: expected one each")
    encode_seconds = []
    for preview in previews[timing.warmup :]:
        start = time.perf_counter()
        encode_preview(preview)
        encode_seconds.append(time.perf_counter() - start)
    return Extras(
        run.seconds / timing.steps,
        sum(callback_seconds[timing.warmup :]) / timing.steps,
        sum(encode_seconds) / timing.steps,
    )


# -- tables ---------------------------------------------------------------------------------------------------
def table_header(*columns: str) -> None:
    print()
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns), flush=True)


def table_row(*cells) -> None:
    print("| " + " | ".join(str(cell) for cell in cells) + " |", flush=True)


def millions(count: int | None) -> str:
    return "–" if count is None else f"{count / 1e6:,.1f}M"


def architectures_table(models, stages) -> None:
    print("\n### Architectures")
    table_header("model", "stage", "size", "parameters (built)", "model card")
    for stage in stages:
        name = STAGE_MODELS[stage]
        table_row(
            name,
            stage,
            f"{STAGE_SIZES[stage]} px",
            millions(models.parameter_count(name)),
            millions(models.card_parameters(name)),
        )


def cpu_time_ratio(device: torch.device, published: StepCost, ours: StepCost) -> str:
    # On CUDA the work is the GPU's: the process's CPU time says nothing about it.
    return "–" if device.type != "cpu" else f"{published.cpu_seconds / ours.cpu_seconds:.2f}x"


def cpu_time_saving(device: torch.device, unshared: StepCost, shared: StepCost) -> str:
    return "–" if device.type != "cpu" else f"{1 - shared.cpu_seconds / unshared.cpu_seconds:.0%}"


def sampler_table(cache: UNetCache, grids: dict[int, Grid], timing: Timing) -> None:
    print("\n### Sampler vs published loop (same UNet)")
    table_header(
        "model",
        "dtype",
        "views N",
        "K",
        "UNet rows/step published (calls × rows)",
        "ours",
        "published s/step",
        "ours s/step",
        "published s/illusion-step (÷ K)",
        "ours s/illusion-step (÷ K)",
        "published/ours",
        "published/ours (CPU time)",
    )
    for stage, grid in grids.items():
        for dtype_name in grid.dtypes:
            unet = cache.get(stage, DTYPES[dtype_name])
            for num_views in grid.views:
                view_names = ANAGRAM_VIEWS[:num_views]
                for candidates in grid.candidates:
                    published = published_step(unet, stage, view_names, candidates, timing)
                    ours = ours_step(unet, stage, view_names, candidates, timing)
                    table_row(
                        STAGE_MODELS[stage],
                        dtype_name,
                        num_views,
                        candidates,
                        f"{published.calls} × {published.rows_per_call} = {published.rows}",
                        f"{ours.calls} × {ours.rows_per_call} = {ours.rows}",
                        f"{published.seconds:.2f}",
                        f"{ours.seconds:.2f}",
                        f"{published.seconds / candidates:.2f}",
                        f"{ours.seconds / candidates:.2f}",
                        f"{published.seconds / ours.seconds:.2f}x",
                        cpu_time_ratio(cache.device, published, ours),
                    )


def sharing_table(cache: UNetCache, grids: dict[int, Grid], timing: Timing) -> None:
    print("\n### Factorized views: share_unet_rows off vs on")
    table_header(
        "model",
        "dtype",
        "views",
        "K",
        "UNet rows/step off (2N·K)",
        "on ((N+1)·K)",
        "s/step off",
        "s/step on",
        "saving",
        "saving (CPU time)",
    )
    for stage, grid in grids.items():
        for dtype_name in grid.dtypes:
            unet = cache.get(stage, DTYPES[dtype_name])
            for num_views in grid.views:
                if num_views not in FACTORIZED_VIEWS:
                    continue
                view_names = FACTORIZED_VIEWS[num_views]
                for candidates in grid.candidates:
                    unshared = ours_step(unet, stage, view_names, candidates, timing, share_unet_rows=False)
                    shared = ours_step(unet, stage, view_names, candidates, timing, share_unet_rows=True)
                    table_row(
                        STAGE_MODELS[stage],
                        dtype_name,
                        " + ".join(view_names),
                        candidates,
                        unshared.rows,
                        shared.rows,
                        f"{unshared.seconds:.2f}",
                        f"{shared.seconds:.2f}",
                        f"{1 - shared.seconds / unshared.seconds:.0%}",
                        cpu_time_saving(cache.device, unshared, shared),
                    )


def extras_table(cache: UNetCache, dtypes: Sequence[str], timing: Timing, device: torch.device) -> None:
    print(f"\n### Per-step extras of the ComfyUI node ({STAGE_MODELS[1]}, N = 2, K = 1)")
    comfyui = comfyui_checkout()
    if comfyui is None:
        print("\nSkipped: needs a ComfyUI checkout (set COMFYUI_DIR; `bash scripts/test.sh` installs one).")
        return
    samplers, comfy_utils = import_node_samplers(comfyui, device)
    timing = Timing(max(timing.warmup, MIN_EXTRAS_WARMUP), max(timing.steps, MIN_EXTRAS_STEPS))
    table_header(
        "dtype",
        "s/step (callback inside)",
        "node on_step ms",
        "share",
        "server preview JPEG ms",
        "share",
        f"under {EXTRAS_BUDGET:.0%}",
    )
    for dtype_name in dtypes:
        unet = cache.get(1, DTYPES[dtype_name])
        extras = measure_extras(unet, samplers, comfy_utils, timing)
        callback_share = extras.callback_seconds / extras.step_seconds
        encode_share = extras.encode_seconds / extras.step_seconds
        table_row(
            dtype_name,
            f"{extras.step_seconds:.2f}",
            f"{extras.callback_seconds * 1e3:.1f}",
            f"{callback_share:.2%}",
            f"{extras.encode_seconds * 1e3:.1f}",
            f"{encode_share:.2%}",
            "yes" if callback_share + encode_share < EXTRAS_BUDGET else "**no**",
        )


# -- command line ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Grid:
    """The points one stage runs."""

    views: tuple[int, ...]
    candidates: tuple[int, ...]
    dtypes: tuple[str, ...]


def stage_grids(args: argparse.Namespace, device: torch.device) -> dict[int, Grid]:
    """Each stage's points: the flags given, else the defaults (Stage II's trimmed on a CPU)."""
    grids = {}
    for stage in args.stages:
        defaults = dict(DEFAULT_GRID)
        if stage == 2 and device.type == "cpu":
            defaults.update(CPU_STAGE_2_DEFAULTS)
        grids[stage] = Grid(**{key: tuple(getattr(args, key) or value) for key, value in defaults.items()})
    return grids


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="tables to print (all)")
    parser.add_argument("--stages", nargs="+", type=int, choices=(1, 2), default=[1, 2])
    grid = "default {}; on a CPU Stage II's is {} (see CPU_STAGE_2_DEFAULTS)"
    parser.add_argument(
        "--views", nargs="+", type=int, choices=(2, 3, 4), help=grid.format("2 3 4", "2") + "; factorized: 2 and 3"
    )
    parser.add_argument("--candidates", nargs="+", type=int, help="K, default 1 4")
    parser.add_argument("--dtypes", nargs="+", choices=tuple(DTYPES), help=grid.format("fp32 bf16", "bf16"))
    parser.add_argument("--steps", type=int, default=1, help="timed steps per run (default 1)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed steps before them, in ours' run and the published loop's first run (default 1)",
    )
    parser.add_argument("--device", default="auto", help="auto: cuda if available, else cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, all cores)")
    parser.add_argument("--tiny", action="store_true", help="the tiny test models instead of real-size ones")
    return parser.parse_args(argv)


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "CPU")


def load_average() -> str:
    """The machine's 1-minute load: above the core count, other jobs stretch this one's wall time."""
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "unknown"


def main(argv: Sequence[str] | None = None) -> None:
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # .to(dtype) warns about modules kept in fp32: IF has none
    args = parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    models = TinyModels() if args.tiny else RealSizeModels()
    timing = Timing(args.warmup, args.steps)
    grids = stage_grids(args, device)
    cache = UNetCache(models, device)
    started = time.perf_counter()

    print(f"torch {torch.__version__}, {device_description(device)}; {'tiny' if args.tiny else 'real-size'} models")
    print(f"{timing.warmup} warm-up + {timing.steps} timed step(s) (see Timing); load average {load_average()}")
    if "architectures" in args.parts:
        architectures_table(models, args.stages)
    if "sampler" in args.parts:
        sampler_table(cache, grids, timing)
    if "sharing" in args.parts:
        sharing_table(cache, grids, timing)
    if "extras" in args.parts:  # at Stage I, whichever stages the other tables run
        extras_table(cache, args.dtypes or DEFAULT_GRID["dtypes"], timing, device)
    print(f"\nWall time: {time.perf_counter() - started:.0f} s; load average at the end {load_average()}")


if __name__ == "__main__":
    main()
