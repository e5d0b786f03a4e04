#!/usr/bin/env python
"""Measure the embedded demo model: do its samples read as the digits they were asked for?

    .venv/bin/python demo/evaluate.py                  # the numbers quoted in demo/README.md
    .venv/bin/python demo/evaluate.py --seeds 5 --save test-artifacts/demo
    .venv/bin/python demo/evaluate.py --compare-mtl    # Anagram-MTL's options, one markdown table
    .venv/bin/python demo/evaluate.py --compare-mtl --pairing flip:2:5 --anti-segregation-step 20
    .venv/bin/python demo/evaluate.py --from-picture   # illusions started from real 2s, one markdown table
    .venv/bin/python demo/evaluate.py --from-picture --picture examples/pictures/digit_two.png --strengths 0.7
    .venv/bin/python demo/evaluate.py --ranking        # CLIP ranking of 8 candidates (the digits CLIP), one table
    .venv/bin/python demo/evaluate.py --balancing      # Anagram-MTL's CLIP view balancing off / on, one table
    .venv/bin/python demo/evaluate.py --schedules      # fewer steps: success against UNet evaluations, one table

By default it prints

1. the classifier's accuracy on the held-out real digits (rendered like the
   training data), which says how far to trust it;
2. the classifier's accuracy on the model's plain (single view) samples, per
   digit, for the prompt "the digit <word>";
3. for each view / digit pairing, the illusion success rate: the share of seeds
   whose illusion reads as prompt i in view i for *every* view (reduction
   "mean", as the paper's anagrams), plus each view's own rate.

With ``--compare-mtl`` it skips 2. and samples every pairing four times over the
same seeds: the published loop, with Anagram-MTL's noise variance rectification,
with its anti-segregation (MTL's settings unless ``--anti-segregation-step`` /
``--anti-segregation-steps`` say otherwise), and with both. It prints one
markdown table of illusion success rates (pairings x variants), the mean over the
pairings that are not trivial (:data:`TRIVIAL`) and each variant's wall time.

With ``--from-picture`` it samples the illusion 2 / flip -> 5 (:data:`FROM_PICTURE_PAIRING`)
text-only and then from real 2s (image to image, ``sample_stage_1``'s ``start_image``)
at each of ``--strengths``, and prints one markdown table: success in both views, each
view's rate, how far the output moved from its start picture, and the wall time. The
start pictures are held-out test-split 2s, a different one per seed (seed s starts from
the s-th), so the result is not about one lucky picture; ``--picture`` uses one PNG for
every seed instead.

``--ranking`` and ``--balancing`` judge with a CLIP, the digits CLIP of ``demo/digits_clip.py`` by default
(``--clip``; trained into ``.cache/digits-clip`` first if that folder is missing): a separate model from the
grading classifier, so the classifier still grades what the CLIP picked or steered.

With ``--ranking`` each seed s of 0..N-1 is one run of ``--candidates`` K candidates (the sampler's
``num_candidates``; seed s's run draws candidates K*s .. K*s + K - 1, so no two runs share one). The CLIP
scores each candidate (``sampling.illusion_scores``: the paper's alignment and concealment) and ranks them; the
table says how often the classifier reads the illusion right for all candidates (what a random pick gets), for
the top 1 and the top 2 by each ranking, and for the best candidate of a run (whether any one is right).

With ``--balancing`` it samples every pairing without and with Anagram-MTL's noise-vector balancing
(``sample_stage_1``'s ``balancing``: per-step view weights from the CLIP) and prints one table of success
rates and the time per illusion.

With ``--schedules`` it samples every pairing under each of :data:`SCHEDULES` (evenly spaced step counts and
IF's tuned timestep lists) and prints one table of success rates, the UNet evaluations per illusion and the
time per illusion, then the cheapest setting whose mean success is within :data:`SCHEDULE_TOLERANCE` of
``--steps``' (30).

The model is loaded with the pack's own loading code (``load_if_stage``,
``load_t5``) and sampled with its own Stage I sampler, so this measures what a
ComfyUI user gets. Seeds 0..N-1 run as the candidates of one batch (candidate
k is the single run with seed k).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DEMO = Path(__file__).resolve().parent
REPO = DEMO.parent
for folder in (DEMO, REPO / "tests"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import digits  # noqa: E402
import digits_clip  # noqa: E402
from pack import import_submodule  # noqa: E402

MODEL_DIR = DEMO / "IF-I-digits"

#: The sampler settings the numbers in demo/README.md were measured at, the digits examples' (digits_demo runs 15
#: steps, as good on this model: --schedules).
STEPS = 30
GUIDANCE = 4.0

#: (view, first digit, second digit): the illusion reads as the first digit as it is and as the second
#: once the view is applied. The numbers in demo/README.md are for these.
PAIRINGS = (
    ("flip", 2, 5),  # the demo workflow's
    ("rotate_180", 1, 7),
    ("rotate_180", 2, 7),
    ("flip", 6, 9),
    ("rotate_ccw", 1, 4),
    ("rotate_cw", 1, 7),
    ("rotate_180", 6, 9),  # the trivial pair, as a baseline
)

#: --from-picture's illusion: real 2s asked to read as "the digit two" as they are and "the digit five" flipped.
FROM_PICTURE_PAIRING = ("flip", 2, 5)
#: --from-picture's default strengths: the share of the schedule run from the noised start picture.
STRENGTHS = (0.5, 0.7, 0.9)

#: --ranking's candidates per run, as many as the demo workflow's sampler could be asked for.
RANKING_CANDIDATES = 8

#: --schedules' settings: step counts (evenly spaced by the model's scheduler) and IF's tuned timestep lists.
SCHEDULES = (10, 15, 20, 30, 50, "fast27", "smart27", "smart50")
#: --schedules: a setting counts as "equal quality" when its mean success is at most this far below the reference's.
SCHEDULE_TOLERANCE = 0.02

#: Pairings whose view turns one digit into the other by itself: any good picture of the first digit
#: is the illusion, so they say nothing about a sampler and stay out of --compare-mtl's mean.
TRIVIAL = {("rotate_180", 6, 9)}


@dataclass
class DemoModel:
    stage: object  # sampling.loading.LoadedStage
    t5: object  # sampling.text.T5Encoder

    @property
    def unet(self):
        return self.stage.unet

    @property
    def scheduler(self):
        return self.stage.scheduler

    def encode(self, prompts: list[str]):
        return import_submodule("sampling.text").encode_prompts(self.t5, prompts, negative_prompt="")


def load_demo(model_dir: Path | str = MODEL_DIR) -> DemoModel:
    """The demo model through the pack's loaders (Stage I without T5, then T5 from the same folder)."""
    loading = import_submodule("sampling.loading")
    text = import_submodule("sampling.text")
    device = torch.device("cpu")
    stage = loading.load_if_stage(str(model_dir), 1, device=device, dtype="fp32")
    t5 = text.load_t5(str(model_dir), precision="fp32", device=device)
    return DemoModel(stage, t5)


def sample(
    model: DemoModel,
    view_names: list[str],
    prompts: list[str],
    *,
    seeds: int,
    seed: int = 0,
    steps: int = STEPS,
    guidance: float = GUIDANCE,
    reduction: str = "mean",
    rectify: bool = False,
    anti_segregation=None,
    balancing_clip=None,
    start_image: torch.Tensor | None = None,
    strength: float = 1.0,
    timesteps: str | None = None,
) -> torch.Tensor:
    """``seeds`` candidates (seeds ``seed`` .. ``seed + seeds - 1``) of the illusion: (K, 3, 64, 64) in [-1, 1].

    ``rectify`` and ``anti_segregation`` (a ``sampling.AntiSegregation``) are Anagram-MTL's options of
    ``sample_stage_1``; the prompts' concept words are their last words (the digit's word).
    ``balancing_clip`` (a CLIP scorer) turns on MTL's noise-vector balancing against the prompts.
    ``start_image`` (1 or K model-space pictures) and ``strength`` start the run from a picture.
    ``timesteps`` (an IF schedule name such as ``"smart27"``) replaces ``steps``.
    """
    sampling = import_submodule("sampling")
    views = import_submodule("views")
    chain = [views.make_view(name) for name in view_names]
    balancing = (
        None
        if balancing_clip is None
        else import_submodule("sampling.balancing").ViewBalancing(balancing_clip, prompts)
    )
    result = sampling.sample_stage_1(
        model.unet,
        model.scheduler,
        chain,
        model.encode(prompts),
        num_candidates=seeds,
        seed=seed,
        num_inference_steps=steps,
        guidance_scale=guidance,
        reduction=reduction,
        rectify=rectify,
        anti_segregation=anti_segregation,
        balancing=balancing,
        start_image=start_image,
        strength=strength,
        timesteps=timesteps,
    )
    return result.images.float().clamp(-1, 1)


def read_views(classifier, images: torch.Tensor, view_names: list[str]) -> np.ndarray:
    """(K, V) digits the classifier reads in each view of each image."""
    views = import_submodule("views")
    return np.stack([classifier.predict(views.make_view(name).view(images)) for name in view_names], axis=1)


def plain_accuracy(model, classifier, *, seeds: int, steps: int = STEPS, guidance: float = GUIDANCE):
    """{digit: (share read as the digit, the samples)} for single-view samples of every digit."""
    results = {}
    for digit in range(10):
        images = sample(model, ["identity"], [digits.prompt(digit)], seeds=seeds, steps=steps, guidance=guidance)
        results[digit] = (float((classifier.predict(images) == digit).mean()), images)
    return results


def illusion_success(
    model,
    classifier,
    view: str,
    first: int,
    second: int,
    *,
    seeds: int,
    steps: int = STEPS,
    guidance: float = GUIDANCE,
    **sampler_options,
):
    """(success rate, per-view rates, the images) of the illusion identity -> ``first``, ``view`` -> ``second``.

    ``sampler_options`` are :func:`sample`'s (the MTL options, a start image and strength).
    """
    names = ["identity", view]
    prompts = [digits.prompt(first), digits.prompt(second)]
    images = sample(model, names, prompts, seeds=seeds, steps=steps, guidance=guidance, **sampler_options)
    return (*read_right(classifier, images, view, first, second), images)


def read_right(classifier, images: torch.Tensor, view: str, first: int, second: int):
    """(share read right in both views, each view's share): as it is as ``first``, under ``view`` as ``second``."""
    correct = read_views(classifier, images, ["identity", view]) == np.array([first, second])
    return float(correct.all(1).mean()), correct.mean(0)


def save_illusions(images: torch.Tensor, view: str, path: Path) -> None:
    """A grid of row pairs: ten illusions, then the same pictures under ``view``."""
    seen = import_submodule("views").make_view(view).view(images)
    rows = []
    for start in range(0, len(images), 10):
        rows += [images[start : start + 10], seen[start : start + 10]]
    digits.grid(torch.cat(rows), min(10, len(images)), scale=2).save(path)


def pairing_label(view: str, first: int, second: int) -> str:
    return f"{first} / {view.replace('_', ' ')} → {second}"


def table_row(title: str, cells) -> str:
    return "| " + " | ".join([title, *cells]) + " |"


def timed_illusion(model, classifier, pairing, name: str, *, seeds: int, steps: int, guidance: float, save, **options):
    """:func:`illusion_success` of ``pairing`` under the sampler ``options`` called ``name``, and its wall time
    in seconds; a progress line goes to stderr, and the grid to ``save`` when given."""
    view, first, second = pairing
    started = time.perf_counter()
    rate, per_view, images = illusion_success(
        model, classifier, view, first, second, seeds=seeds, steps=steps, guidance=guidance, **options
    )
    elapsed = time.perf_counter() - started
    print(
        f"{pairing_label(*pairing)}, {name}: {rate:.0%} "
        f"(as it is {per_view[0]:.0%}, {view} {per_view[1]:.0%}) in {elapsed:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    if save:
        tag = re.sub(r"[^\w.-]+", "_", name).strip("_")
        save_illusions(images, view, save / f"illusion_{view}_{first}_{second}_{tag}.png")
    return rate, per_view, images, elapsed


def mtl_variants(anti_segregation) -> dict[str, dict]:
    """The four samplers --compare-mtl runs, by column title: ``sample_stage_1``'s MTL options for each."""
    return {
        "baseline": {},
        "rectify": {"rectify": True},
        "anti-segregation": {"anti_segregation": anti_segregation},
        "both": {"rectify": True, "anti_segregation": anti_segregation},
    }


def run_variants(model, classifier, pairings, variants, *, seeds: int, steps: int, guidance: float, save=None):
    """Sample every pairing under every sampler variant ({title: :func:`sample`'s options}): the success rates
    ({title: [rate per pairing]}) and the wall time of each variant in seconds."""
    success = {name: [] for name in variants}
    seconds = dict.fromkeys(variants, 0.0)
    for pairing in pairings:
        for name, options in variants.items():
            rate, _, _, elapsed = timed_illusion(
                model, classifier, pairing, name, seeds=seeds, steps=steps, guidance=guidance, save=save, **options
            )
            seconds[name] += elapsed
            success[name].append(rate)
    return success, seconds


def print_variant_table(pairings, success: dict[str, list[float]], last_row: tuple[str, list[str]]) -> None:
    """One markdown table: a row per pairing and a column per variant, the mean over the non-trivial pairings,
    then ``last_row`` (title, cells)."""
    print(table_row("pairing", success))
    print(table_row("---", ["---:"] * len(success)))
    for index, pairing in enumerate(pairings):
        label = pairing_label(*pairing) + (" (trivial)" if pairing in TRIVIAL else "")
        print(table_row(label, (f"{rates[index]:.0%}" for rates in success.values())))
    counted = [index for index, pairing in enumerate(pairings) if pairing not in TRIVIAL]
    if counted:
        print(
            table_row(
                "**mean over the non-trivial pairings**",
                (f"**{np.mean([rates[i] for i in counted]):.0%}**" for rates in success.values()),
            )
        )
    print(table_row(*last_row))


def compare_mtl(model, classifier, pairings, anti_segregation, *, seeds: int, steps: int, guidance: float, save=None):
    """Print one markdown table: each pairing's illusion success under each variant of :func:`mtl_variants`,
    the mean over the non-trivial pairings and each variant's wall time. Progress goes to stderr."""
    success, seconds = run_variants(
        model,
        classifier,
        pairings,
        mtl_variants(anti_segregation),
        seeds=seeds,
        steps=steps,
        guidance=guidance,
        save=save,
    )
    print(
        f"\nIllusion success (% of {seeds} seeds read right in both views), {steps} steps, guidance {guidance}; "
        f"anti-segregation: step size {anti_segregation.step_size:g} after the first {anti_segregation.steps} steps\n"
    )
    print_variant_table(pairings, success, ("wall time", [f"{value:.0f} s" for value in seconds.values()]))


def compare_balancing(model, classifier, scorer, pairings, *, seeds: int, steps: int, guidance: float, save=None):
    """Print one markdown table: each pairing's illusion success without and with Anagram-MTL's noise-vector
    balancing by ``scorer`` (a CLIP), the mean over the non-trivial pairings and the time per illusion.
    Progress goes to stderr."""
    variants = {"balancing off": {}, "balancing on": {"balancing_clip": scorer}}
    success, seconds = run_variants(
        model, classifier, pairings, variants, seeds=seeds, steps=steps, guidance=guidance, save=save
    )
    print(
        f"\nIllusion success (% of {seeds} seeds read right in both views), {steps} steps, guidance {guidance}, "
        f"reduction mean; balancing by the CLIP {scorer_name(scorer)}\n"
    )
    per_illusion = [f"{value / (seeds * len(pairings)):.2f} s" for value in seconds.values()]
    print_variant_table(pairings, success, ("time per illusion", per_illusion))


def schedule_steps(setting) -> int:
    """How many UNet evaluations (denoising steps) a --schedules setting makes per illusion."""
    if isinstance(setting, int):
        return setting
    return len(import_submodule("sampling.schedules").if_timestep_schedule(setting))


def schedule_title(setting) -> str:
    return f"{setting} steps" if isinstance(setting, int) else setting


def cheapest_equal(means: dict, reference, tolerance: float = SCHEDULE_TOLERANCE):
    """The setting with the fewest UNet evaluations whose mean success is at most ``tolerance`` below
    ``reference``'s (ties: the better success, then the earlier setting)."""
    floor = means[reference] - tolerance - 1e-9
    equal = [setting for setting in means if means[setting] >= floor]
    return min(equal, key=lambda setting: (schedule_steps(setting), -means[setting]))


def compare_schedules(model, classifier, pairings, *, seeds: int, steps: int, guidance: float, save=None):
    """Print one markdown table: each pairing's illusion success under each of :data:`SCHEDULES`, the mean over
    the non-trivial pairings, the UNet evaluations and the time per illusion; then the cheapest setting within
    :data:`SCHEDULE_TOLERANCE` of ``steps`` steps. Progress goes to stderr."""
    settings = list(dict.fromkeys([*SCHEDULES, steps]))
    success = {schedule_title(setting): [] for setting in settings}
    seconds = dict.fromkeys(success, 0.0)
    for pairing in pairings:
        for setting in settings:
            title = schedule_title(setting)
            options = {"steps": setting} if isinstance(setting, int) else {"steps": steps, "timesteps": setting}
            rate, _, _, elapsed = timed_illusion(
                model, classifier, pairing, title, seeds=seeds, guidance=guidance, save=save, **options
            )
            seconds[title] += elapsed
            success[title].append(rate)
    counted = [index for index, pairing in enumerate(pairings) if pairing not in TRIVIAL] or list(range(len(pairings)))
    means = {setting: float(np.mean([success[schedule_title(setting)][i] for i in counted])) for setting in settings}

    print(
        f"\nIllusion success (% of {seeds} seeds read right in both views) against the denoising steps, "
        f"guidance {guidance}, reduction mean; step counts evenly spaced by the model's scheduler, named lists "
        "are IF's own\n"
    )
    per_illusion = [f"{value / (seeds * len(pairings)):.2f} s" for value in seconds.values()]
    print_variant_table(pairings, success, ("time per illusion", per_illusion))
    print(table_row("UNet evaluations per illusion", (str(schedule_steps(setting)) for setting in settings)))
    best = cheapest_equal(means, steps)
    print(
        f"\ncheapest within {SCHEDULE_TOLERANCE:.0%} of {steps} steps ({means[steps]:.1%}): {schedule_title(best)} "
        f"({means[best]:.1%}, {schedule_steps(best)} UNet evaluations)"
    )


def scorer_name(scorer) -> str:
    return str(getattr(scorer, "source", type(scorer).__name__))


def ranked_success(scorer, images: torch.Tensor, right: np.ndarray, view: str, prompts: list[str], *, candidates: int):
    """How often the classifier reads the illusion right among the candidates a CLIP ranking picks.

    ``images`` (R * K, 3, 64, 64) are R runs of K = ``candidates`` candidates, run after run; ``right`` (R * K,)
    whether each reads right in both views. Returns {column title: share}: all candidates (a random pick), the
    top 1 and the top 2 of each run by each of ``rank_candidates``' orders, and the best of each run; and the
    index in ``images`` of each run's top 1 by "both".
    """
    scores = import_submodule("sampling.illusion_scores")
    views = import_submodule("views")
    chain = [views.make_view("identity"), views.make_view(view)]
    runs = len(images) // candidates
    picked: dict[str, list[float]] = {}
    top_by_both = []
    for run in range(runs):
        group = slice(run * candidates, (run + 1) * candidates)
        judged = scores.score_illusions(scorer, images[group], chain, prompts)
        orders = {by: scores.rank_candidates(judged, by=by) for by in scores.RANK_BY}
        for top in (1, 2):
            for by, order in orders.items():
                picked.setdefault(f"top {top} by {by}", []).extend(right[group][order[:top]])
        top_by_both.append(run * candidates + orders["both"][0])
    shares = {
        "all candidates": float(right.mean()),
        **{title: float(np.mean(values)) for title, values in picked.items()},
        f"best of {candidates}": float(right.reshape(runs, candidates).any(1).mean()),
    }
    return shares, top_by_both


def compare_ranking(
    model, classifier, scorer, pairings, *, seeds: int, candidates: int, steps: int, guidance: float, save=None
):
    """Print one markdown table: for each pairing, ``seeds`` runs of ``candidates`` candidates (run s: the
    sampler's seed ``s * candidates``), the illusion success of :func:`ranked_success`'s picks, and the mean over
    the non-trivial pairings. Progress goes to stderr; ``save`` gets each run's top candidate by "both"."""
    rows, counted, sampling_seconds, scoring_seconds = [], [], 0.0, 0.0
    for pairing in pairings:
        view, first, second = pairing
        prompts = [digits.prompt(first), digits.prompt(second)]
        started = time.perf_counter()
        # One batch: candidate k of the batch is the single run with seed k, so the batch is the runs one after
        # another (run s holds seeds s * K .. s * K + K - 1).
        images = sample(model, ["identity", view], prompts, seeds=seeds * candidates, steps=steps, guidance=guidance)
        sampled = time.perf_counter()
        right = (read_views(classifier, images, ["identity", view]) == np.array([first, second])).all(1)
        shares, top_by_both = ranked_success(scorer, images, right, view, prompts, candidates=candidates)
        sampling_seconds += sampled - started
        scoring_seconds += time.perf_counter() - sampled
        print(
            f"{pairing_label(*pairing)}: all {shares['all candidates']:.0%}, "
            f"top 1 by both {shares['top 1 by both']:.0%} in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        if save:
            save_illusions(images[top_by_both], view, save / f"ranked_{view}_{first}_{second}.png")
        rows.append((pairing, shares))
        if pairing not in TRIVIAL:
            counted.append(shares)

    columns = list(rows[0][1])
    print(
        f"\nIllusion success (% read right in both views) of the candidates a CLIP ranking picks: {seeds} runs "
        f"(seeds 0..{seeds - 1}) of {candidates} candidates each, {steps} steps, guidance {guidance}; "
        f"CLIP {scorer_name(scorer)}\n"
    )
    print(table_row("pairing", columns))
    print(table_row("---", ["---:"] * len(columns)))
    for pairing, shares in rows:
        label = pairing_label(*pairing) + (" (trivial)" if pairing in TRIVIAL else "")
        print(table_row(label, (f"{shares[column]:.0%}" for column in columns)))
    if counted:
        means = (f"**{np.mean([shares[column] for shares in counted]):.0%}**" for column in columns)
        print(table_row("**mean over the non-trivial pairings**", means))
    print(f"\nsampling {sampling_seconds:.0f} s, CLIP scoring {scoring_seconds:.1f} s")


def real_digits(digit: int, count: int) -> torch.Tensor:
    """The first ``count`` held-out test-split pictures of ``digit``, rendered as the model's training data:
    (count, 3, 64, 64) in model space, picture k for seed k."""
    split = digits.load_split()
    found = split.test_images[split.test_labels == digit]
    if count > len(found):
        raise ValueError(f"the test split holds {len(found)} real {digit}s, fewer than the {count} asked for")
    return digits.to_model(found[:count])


def load_picture(path: Path) -> torch.Tensor:
    """A 64 x 64 PNG as one model-space picture: (1, 3, 64, 64) in [-1, 1]."""
    from PIL import Image

    with Image.open(path) as image:
        if image.size != (digits.SIZE, digits.SIZE):
            raise ValueError(f"{path} is {image.size[0]}x{image.size[1]} px, the demo model draws 64x64")
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(pixels).permute(2, 0, 1)[None] / 127.5 - 1


def start_pictures(picture: Path | None, seeds: int) -> tuple[torch.Tensor, str]:
    """--from-picture's start pictures and how the table names them: ``picture`` for every seed, or else the
    held-out real digits of :data:`FROM_PICTURE_PAIRING`'s first digit, one per seed."""
    if picture:
        return load_picture(picture), str(picture)
    first = FROM_PICTURE_PAIRING[1]
    return real_digits(first, seeds), f"real {first}s (seed s: the s-th held-out test-split {first})"


def picture_variants(start: torch.Tensor, strengths, steps: int) -> dict[str, dict]:
    """The runs --from-picture compares, by row title: text only, then ``start`` at each strength."""
    steps_to_run = import_submodule("sampling.pictures").steps_to_run
    variants = {"text only": {}}
    for strength in strengths:
        title = f"from the picture, strength {strength:g} ({steps_to_run(steps, strength)} of {steps} steps)"
        variants[title] = {"start_image": start, "strength": strength}
    return variants


def compare_from_picture(
    model,
    classifier,
    start: torch.Tensor,
    strengths,
    *,
    source: str,
    seeds: int,
    steps: int,
    guidance: float,
    save=None,
):
    """Print one markdown table for :data:`FROM_PICTURE_PAIRING`: text only against starting from ``start``
    (1 or ``seeds`` model-space pictures, described by ``source``) at each strength. Each row: success in both
    views, each view's rate, the mean absolute change from the start picture (model space, [-1, 1]; for the
    text-only run, its distance to the same pictures) and the wall time. Progress goes to stderr."""
    view, first, second = FROM_PICTURE_PAIRING
    start_success, start_per_view = read_right(classifier, start, view, first, second)
    print(
        f"\nthe start pictures as they are, {source}: {start_success:.0%} read right in both views "
        f"(as it is {start_per_view[0]:.0%}, {view} {start_per_view[1]:.0%})"
    )
    rows = []
    for name, options in picture_variants(start, strengths, steps).items():
        rate, per_view, images, elapsed = timed_illusion(
            model,
            classifier,
            FROM_PICTURE_PAIRING,
            name,
            seeds=seeds,
            steps=steps,
            guidance=guidance,
            save=save,
            **options,
        )
        change = float((images - start).abs().mean())
        shares = (f"{100 * share:.0f}" for share in (rate, *per_view))
        rows.append(table_row(name, [*shares, f"{change:.3f}", f"{elapsed:.0f}"]))

    print(
        f"\nIllusion {pairing_label(*FROM_PICTURE_PAIRING)} from {source}: {seeds} seeds, {steps} steps, "
        f"guidance {guidance}\n"
    )
    columns = [
        "success % (both views read)",
        f"view 1 read as {first} %",
        f"{view} read as {second} %",
        "mean \\|output − start\\|",
        "seconds",
    ]
    print(table_row("setting", columns))
    print(table_row("---", ["---:"] * len(columns)))
    print("\n".join(rows))


def load_judge(folder: Path):
    """The CLIP --ranking and --balancing judge with (``load_clip``); the digits CLIP is trained into ``folder``
    first when the folder does not exist."""
    if not folder.exists():
        print(f"no CLIP in {folder}: training the digits CLIP there first (demo/digits_clip.py)", flush=True)
        summary = digits_clip.train(folder, log=lambda line: print(line, file=sys.stderr, flush=True))
        print(f"trained the digits CLIP in {summary['seconds']:.0f} s", flush=True)
    return import_submodule("sampling.clip_models").load_clip(folder, device="cpu")


def variance_override(unet, mode: str):
    """Force the learned-range variance channels to -1 ("small") or +1 ("large"); returns the hook handle."""
    value = {"small": -1.0, "large": 1.0}[mode]

    def hook(_module, _inputs, output):
        sample = output[0] if isinstance(output, tuple) else output.sample
        sample[:, 3:] = value
        return output

    return unet.register_forward_hook(hook)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=MODEL_DIR)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--guidance", type=float, default=GUIDANCE)
    parser.add_argument(
        "--pairing", action="append", default=[], help="VIEW:A:B (repeatable); default: the list in this script"
    )
    parser.add_argument(
        "--variance",
        choices=("learned", "small", "large"),
        default="learned",
        help="override the model's variance channels (to compare)",
    )
    parser.add_argument("--skip-plain", action="store_true")
    parser.add_argument(
        "--compare-mtl",
        action="store_true",
        help="compare the illusions without and with Anagram-MTL's rectification / anti-segregation (one table)",
    )
    parser.add_argument("--anti-segregation-step", type=float, help="--compare-mtl: its gradient step (MTL: 5)")
    parser.add_argument(
        "--anti-segregation-steps", type=int, help="--compare-mtl: refine after this many first steps (MTL: 26)"
    )
    parser.add_argument(
        "--from-picture",
        action="store_true",
        help="the illusion 2 / flip -> 5 text-only against starting from real 2s at --strengths (one table); "
        "seed s starts from the s-th held-out test-split 2, a different real 2 per seed, so the result is not "
        "about one lucky picture",
    )
    parser.add_argument(
        "--strengths",
        type=float,
        nargs="+",
        help=f"--from-picture: the start picture's strengths, 0..1 (default: {' '.join(map(str, STRENGTHS))})",
    )
    parser.add_argument(
        "--picture",
        type=Path,
        help="--from-picture: start every seed from this 64x64 PNG instead (e.g. examples/pictures/digit_two.png)",
    )
    parser.add_argument(
        "--ranking",
        action="store_true",
        help="rank --candidates candidates per seed with a CLIP and grade the picks with the classifier (one table)",
    )
    parser.add_argument(
        "--balancing",
        action="store_true",
        help="the illusions without and with Anagram-MTL's noise-vector balancing by a CLIP (one table)",
    )
    parser.add_argument(
        "--schedules",
        action="store_true",
        help="the illusions at fewer and more steps and IF's timestep lists, against --steps (one table)",
    )
    parser.add_argument(
        "--clip",
        type=Path,
        help=f"--ranking / --balancing: the judging CLIP's folder (default {digits_clip.DEFAULT_OUTPUT}, the digits "
        "CLIP, trained there first when missing)",
    )
    parser.add_argument("--candidates", type=int, help=f"--ranking: candidates per seed (default {RANKING_CANDIDATES})")
    parser.add_argument("--save", type=Path, help="write sample grids (PNG) into this folder")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    tuned = {"step_size": args.anti_segregation_step, "steps": args.anti_segregation_steps}
    tuned = {key: value for key, value in tuned.items() if value is not None}
    if tuned and not args.compare_mtl:
        parser.error("--anti-segregation-step / --anti-segregation-steps only apply with --compare-mtl")
    if (args.strengths or args.picture) and not args.from_picture:
        parser.error("--strengths / --picture only apply with --from-picture")
    if args.from_picture and (args.compare_mtl or args.pairing):
        parser.error(f"--from-picture measures the one pairing {FROM_PICTURE_PAIRING}: no --compare-mtl / --pairing")
    judged = args.ranking or args.balancing
    if args.clip and not judged:
        parser.error("--clip only applies with --ranking or --balancing")
    if args.candidates is not None and not args.ranking:
        parser.error("--candidates only applies with --ranking")
    if (args.ranking + args.balancing + args.compare_mtl + args.from_picture + args.schedules) > 1:
        parser.error(
            "--ranking, --balancing, --compare-mtl, --from-picture and --schedules each print their own table: pick one"
        )
    candidates = RANKING_CANDIDATES if args.candidates is None else args.candidates
    if candidates < 2:
        parser.error(f"--candidates must be at least 2 to rank, got {candidates}")
    strengths = args.strengths or STRENGTHS
    if not all(0 <= strength <= 1 for strength in strengths):
        parser.error(f"--strengths must lie in [0, 1], got {strengths}")
    if args.from_picture:
        # Before the model loads, so a missing picture or too many seeds stop the run at once.
        try:
            start, source = start_pictures(args.picture, args.seeds)
        except (OSError, ValueError) as error:
            parser.error(str(error))
    torch.set_num_threads(args.threads)

    started = time.time()
    split = digits.load_split()
    classifier = digits.classifier()
    print(f"classifier: {classifier.held_out_accuracy(split):.1%} of {len(split.test_labels)} held-out real digits")
    model = load_demo(args.model)
    if args.variance != "learned":
        variance_override(model.unet, args.variance)
    print(
        f"model: {args.model} ({sum(p.numel() for p in model.unet.parameters()):,} UNet parameters); "
        f"{args.steps} steps, guidance {args.guidance}, variance {args.variance}, seeds 0..{args.seeds - 1}"
    )
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)

    pairings = [tuple(int(p) if p.isdigit() else p for p in text.split(":")) for text in args.pairing] or PAIRINGS

    if args.compare_mtl:
        anti_segregation = import_submodule("sampling").AntiSegregation(**tuned)
        compare_mtl(
            model,
            classifier,
            pairings,
            anti_segregation,
            seeds=args.seeds,
            steps=args.steps,
            guidance=args.guidance,
            save=args.save,
        )
        print(f"\ndone in {time.time() - started:.0f} s")
        return 0

    if args.schedules:
        compare_schedules(
            model, classifier, pairings, seeds=args.seeds, steps=args.steps, guidance=args.guidance, save=args.save
        )
        print(f"\ndone in {time.time() - started:.0f} s")
        return 0

    if judged:
        scorer = load_judge(args.clip or digits_clip.DEFAULT_OUTPUT)
        accuracy = (digits_clip.zero_shot(scorer, digits.to_model(split.test_images)) == split.test_labels).mean()
        print(f"CLIP: {scorer.source}: zero-shot {accuracy:.1%} of the held-out real digits")
        options = {"seeds": args.seeds, "steps": args.steps, "guidance": args.guidance, "save": args.save}
        if args.ranking:
            compare_ranking(model, classifier, scorer, pairings, candidates=candidates, **options)
        else:
            compare_balancing(model, classifier, scorer, pairings, **options)
        print(f"\ndone in {time.time() - started:.0f} s")
        return 0

    if args.from_picture:
        compare_from_picture(
            model,
            classifier,
            start,
            strengths,
            source=source,
            seeds=args.seeds,
            steps=args.steps,
            guidance=args.guidance,
            save=args.save,
        )
        print(f"\ndone in {time.time() - started:.0f} s")
        return 0

    if not args.skip_plain:
        results = plain_accuracy(model, classifier, seeds=args.seeds, steps=args.steps, guidance=args.guidance)
        overall = np.mean([rate for rate, _ in results.values()])
        print(
            f"plain samples read as their prompt: {overall:.1%}  ("
            + ", ".join(f"{d}: {rate:.0%}" for d, (rate, _) in results.items())
            + ")"
        )
        if args.save:
            shown = torch.cat([images[:10] for _, images in results.values()])
            digits.grid(shown, 10, scale=2).save(args.save / "plain_samples.png")

    for view, first, second in pairings:
        success, per_view, images = illusion_success(
            model, classifier, view, first, second, seeds=args.seeds, steps=args.steps, guidance=args.guidance
        )
        print(
            f"illusion {first} | {view} -> {second}: {success:.0%} of {args.seeds} seeds read right in both views "
            f"(as it is: {per_view[0]:.0%}, {view}: {per_view[1]:.0%})",
            flush=True,
        )
        if args.save:
            save_illusions(images, view, args.save / f"illusion_{view}_{first}_{second}.png")
    print(f"done in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
