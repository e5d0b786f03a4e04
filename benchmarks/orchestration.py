"""Per-step orchestration overhead: everything but the UNet.

Compares this pack's sampler with a plain per-view loop like the published
code's (``tests/paper_reference.py``, run once per candidate as the paper's
``generate.py`` does) over views, inverses, guidance, reduction and the
scheduler step, with a stub UNet whose own time is measured and subtracted. Both
samplers run as in every sampler benchmark (``sampler_runs.py``).

    python benchmarks/orchestration.py [--steps 10] [--repeats 3]

Target: ours at or below the published loop at every point, one UNet call per step.
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch
from sampler_runs import ANAGRAM_VIEWS, PublishedPipeline, run_ours, run_published

TEXT_DIM = 32
STAGE_SHAPES = {1: (64, 3), 2: (256, 6)}  # sample size, input channels


class StubUNet(torch.nn.Module):
    """Returns fixed random estimates; counts calls and its own time."""

    def __init__(self, size: int, in_channels: int):
        super().__init__()
        self.config = SimpleNamespace(
            sample_size=size,
            in_channels=in_channels,
            out_channels=6,
            encoder_hid_dim=TEXT_DIM,
            cross_attention_dim=TEXT_DIM,
            class_embed_type="timestep" if in_channels == 6 else None,
        )
        self.template = torch.randn(64, 6, size, size, generator=torch.Generator().manual_seed(0)) * 0.5
        self.calls = 0
        self.seconds = 0.0

    @property
    def dtype(self):
        return torch.float32

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, sample, timestep, encoder_hidden_states=None, class_labels=None, **kwargs):
        start = time.perf_counter()
        output = self.template[: sample.shape[0]].clone()
        self.calls += 1
        self.seconds += time.perf_counter() - start
        return (output,)


def time_ours(stage: int, num_views: int, candidates: int, steps: int) -> tuple[float, float]:
    unet = StubUNet(*STAGE_SHAPES[stage])
    start = time.perf_counter()
    run_ours(unet, stage, ANAGRAM_VIEWS[:num_views], candidates, steps)
    wall = time.perf_counter() - start
    return (wall - unet.seconds) / steps, unet.calls / steps


def time_published(stage: int, num_views: int, candidates: int, steps: int) -> tuple[float, float]:
    pipe = PublishedPipeline(StubUNet(*STAGE_SHAPES[stage]))
    start = time.perf_counter()
    for seed in range(candidates):  # the published code samples candidates one after another
        run_published(pipe, stage, ANAGRAM_VIEWS[:num_views], seed, steps)
    wall = time.perf_counter() - start
    return (wall - pipe.unet.seconds) / steps, pipe.unet.calls / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs per point")
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; stub UNet time subtracted")
    print("| views | size | K | published ms/step | ours ms/step | speed-up | UNet calls/step (published / ours) |")
    print("|---|---|---|---|---|---|---|")
    for stage, size in ((1, 64), (2, 256)):
        for num_views in (2, 4):
            for candidates in (1, 4):
                published = min(time_published(stage, num_views, candidates, args.steps) for _ in range(args.repeats))
                ours = min(time_ours(stage, num_views, candidates, args.steps) for _ in range(args.repeats))
                print(
                    f"| {num_views} | {size} | {candidates} | {published[0] * 1e3:.2f} | {ours[0] * 1e3:.2f} | "
                    f"{published[0] / ours[0]:.1f}x | {published[1]:.0f} / {ours[1]:.0f} |"
                )


if __name__ == "__main__":
    main()
