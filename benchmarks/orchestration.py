"""Per-step orchestration overhead: everything but the UNet.

Compares this pack's sampler with a plain per-view loop like the published
code's (``tests/paper_reference.py``, run once per candidate as the paper's
``generate.py`` does) over views, inverses, guidance, reduction and the
scheduler step, with a stub UNet whose own time is measured and subtracted.

    python benchmarks/orchestration.py [--steps 10] [--repeats 3]

Target: ours at or below the published loop at every point, one UNet call per step.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pack import import_submodule  # noqa: E402
from paper_reference import PAPER_VIEWS, paper_stage_1, paper_stage_2  # noqa: E402
from tiny_models import if_image_noising_scheduler, if_scheduler  # noqa: E402

sampling = import_submodule("sampling")
views = import_submodule("views")

VIEW_NAMES = {2: ["identity", "rotate_cw"], 4: ["identity", "rotate_cw", "flip", "negate"]}
TEXT_TOKENS, TEXT_DIM = 77, 32


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


class StubPipeline:
    """What the published loop touches on a diffusers IF pipeline."""

    def __init__(self, unet):
        self.unet = unet
        self.scheduler = if_scheduler()
        self.image_noising_scheduler = if_image_noising_scheduler()

    def prepare_intermediate_images(self, batch, channels, height, width, dtype, device, generator):
        return torch.randn((batch, channels, height, width), generator=generator, dtype=dtype).to(device)

    def preprocess_image(self, image, num_images_per_prompt, device):
        return image.to(device=device, dtype=self.unet.dtype)


def embeddings(num_views: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return (
        torch.randn(num_views, TEXT_TOKENS, TEXT_DIM, generator=generator),
        torch.randn(num_views, TEXT_TOKENS, TEXT_DIM, generator=generator),
    )


def time_ours(stage: int, num_views: int, candidates: int, steps: int) -> tuple[float, float]:
    size, channels = (64, 3) if stage == 1 else (256, 6)
    unet = StubUNet(size, channels)
    positive, negative = embeddings(num_views)
    prompt_embeddings = sampling.PromptEmbeddings(positive, negative)
    view_list = [views.make_view(name) for name in VIEW_NAMES[num_views]]
    start = time.perf_counter()
    if stage == 1:
        sampling.sample_stage_1(
            unet, if_scheduler(), view_list, prompt_embeddings, num_candidates=candidates, num_inference_steps=steps
        )
    else:
        low_res = torch.rand(candidates, 3, 64, 64) * 2 - 1
        sampling.sample_stage_2(
            unet,
            if_scheduler(),
            if_image_noising_scheduler(),
            low_res,
            view_list,
            prompt_embeddings,
            num_inference_steps=steps,
        )
    wall = time.perf_counter() - start
    return (wall - unet.seconds) / steps, unet.calls / steps


def time_published(stage: int, num_views: int, candidates: int, steps: int) -> tuple[float, float]:
    size, channels = (64, 3) if stage == 1 else (256, 6)
    pipe = StubPipeline(StubUNet(size, channels))
    positive, negative = embeddings(num_views)
    paper_views = [PAPER_VIEWS[name]() for name in VIEW_NAMES[num_views]]
    start = time.perf_counter()
    for seed in range(candidates):  # the published code samples candidates one after another
        generator = torch.manual_seed(seed)
        if stage == 1:
            paper_stage_1(pipe, positive, negative, paper_views, steps, 10.0, generator)
        else:
            low_res = torch.rand(1, 3, 64, 64) * 2 - 1
            paper_stage_2(pipe, low_res, positive, negative, paper_views, steps, 10.0, 50, generator)
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
