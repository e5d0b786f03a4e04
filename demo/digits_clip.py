#!/usr/bin/env python
"""A tiny CLIP that reads the demo's digits: a judge for illusions that is not the grading classifier.

    .venv/bin/python demo/digits_clip.py                  # writes .cache/digits-clip: 5-8 min on one CPU thread
    .venv/bin/python demo/digits_clip.py --output DIR --steps 300   # a quicker, weaker one

The pack ranks candidates and balances the views of an illusion with a CLIP (:mod:`sampling.clip_models`,
:mod:`sampling.illusion_scores`, :mod:`sampling.balancing`). The demo model ``demo/IF-I-digits`` draws
scikit-learn's digits, which no published CLIP reads, and ``demo/evaluate.py`` grades its samples with
``digits.DigitClassifier``; judging with that classifier too would measure nothing. So this script trains a
separate judge, a transformers ``CLIPModel`` (a 3-layer ViT on 8 px patches of the 64 px picture, a 2-layer
text transformer), contrastively on the *training* split of :mod:`digits` (the held-out test split stays
unseen, and is where its zero-shot accuracy is measured), and writes a folder ``load_clip`` reads like any
CLIP's: config.json + model.safetensors, a ``CLIPTokenizer`` (vocab.json / merges.txt spelling only the
prompts' words) and a preprocessor_config.json.

What it will see: the sampler's clean estimates of each view, which early in sampling are blurry, grey and
noisy, and views that turn a digit on its side. So the pictures are drawn the way the demo model was trained
(:class:`digits.Augmenter`: shift, scale, slant, stroke weight; never a rotation or a flip, which would turn a
6 into a 9), and most of them are then degraded like an early estimate (blur, contrast pulled toward the mean
picture, blotchy and fine noise, a tinted paper). Each upright digit is the one positive of its prompt;
quarter-turned digits (not a digit at all, but the wrong reading of a failed quarter-turn illusion) join every
batch as negatives for all ten prompts, which keeps the cosine similarity of a non-digit low instead of only
the softmax over prompts.

Seeded and single-threaded by default (``--threads``), so a run is reproducible on one machine.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DEMO = Path(__file__).resolve().parent
REPO = DEMO.parent
if str(DEMO) not in sys.path:
    sys.path.insert(0, str(DEMO))

import digits  # noqa: E402

#: Where demo/evaluate.py looks for it (.cache is git-ignored).
DEFAULT_OUTPUT = REPO / ".cache" / "digits-clip"
PROMPTS = tuple(digits.prompt(digit) for digit in range(10))
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
#: The text tower's positions: the prompts are 5 tokens with the start and end tokens.
MAX_TOKENS = 16
SEED = 0

#: The full-size run (``--steps`` / ``--per-digit`` shrink it for the tests).
STEPS = 1200
PER_DIGIT = 10  # upright pictures of each digit per batch: 100 positives
NEGATIVES = 32  # quarter-turned digits per batch
LEARNING_RATE = 2e-3
WARMUP = 100
#: Degradation reaches full strength after this share of the steps.
RAMP = 0.4
#: Fixed at OpenAI CLIP's learned value (temperature 0.01, the paper's): a large scale lets small gaps between
#: cosine similarities decide, so like OpenAI's CLIPs this one keeps its similarities in a narrow range, which
#: is what the balancing rule's powers of S_ii were written for.
LOGIT_SCALE = math.log(100.0)


# -- tokenizer ----------------------------------------------------------------------------------


def word_tokens(words) -> tuple[dict[str, int], list[str]]:
    """A byte-pair vocabulary and merges that spell each of ``words`` as one token.

    CLIP's BPE marks a word's last character with ``</w>``; merging left to right (``t h`` -> ``th``,
    ``th e</w>`` -> ``the</w>``) needs every prefix and every character in the vocabulary too.
    """
    vocab = {BOS: 0, EOS: 1}
    merges = []
    for word in words:
        pieces = [*word[:-1], word[-1] + "</w>"]
        for piece in pieces:
            vocab.setdefault(piece, len(vocab))
        merged = pieces[0]
        for piece in pieces[1:]:
            rule = f"{merged} {piece}"
            merged += piece
            vocab.setdefault(merged, len(vocab))
            if rule not in merges:
                merges.append(rule)
    return vocab, merges


def write_tokenizer(folder: Path):
    """Write vocab.json and merges.txt for the prompts' words into ``folder`` and load them as a
    ``CLIPTokenizer``; checks that each prompt round-trips with one token per word."""
    from transformers import CLIPTokenizer

    words = sorted({word for text in PROMPTS for word in text.split()})
    vocab, merges = word_tokens(words)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=1) + "\n")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), model_max_length=MAX_TOKENS)
    for text in PROMPTS:
        ids = tokenizer(text).input_ids
        if len(ids) != len(text.split()) + 2 or tokenizer.decode(ids, skip_special_tokens=True) != text:
            raise RuntimeError(f"the tokenizer does not round-trip {text!r}: {tokenizer.convert_ids_to_tokens(ids)}")
    return tokenizer


# -- model --------------------------------------------------------------------------------------


def clip_config(vocab_size: int):
    from transformers import CLIPConfig

    text = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": MAX_TOKENS,
        "bos_token_id": 0,
        "eos_token_id": 1,  # pooled at the first end token (the padding is the end token too)
        "pad_token_id": 1,
    }
    vision = {
        "image_size": digits.SIZE,
        "patch_size": 8,
        "num_channels": 3,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=64, logit_scale_init_value=LOGIT_SCALE)


def _features(output) -> torch.Tensor:
    # transformers 5 returns a model output from get_*_features (projected pooler_output), older versions a tensor.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Model space [-1, 1] -> CLIP's input, as ``sampling.clip_models.ClipModel.prepare`` does at 64 px."""
    return (((images + 1) / 2).clamp(0, 1) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


# -- pictures -----------------------------------------------------------------------------------


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image with its own ``sigma`` (px; 0 leaves it as it is), separable, edges replicated."""
    radius = 8
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernels = torch.exp(-0.5 * (offsets / sigma.clamp_min(1e-3).view(-1, 1)) ** 2)
    kernels = kernels / kernels.sum(1, keepdim=True)  # (N, 2r+1); sigma ~ 0 gives a delta
    n, c, h, w = images.shape
    x = F.pad(images.reshape(1, n * c, h, w), (radius,) * 4, mode="replicate")
    per_channel = kernels.repeat_interleave(c, 0)
    x = F.conv2d(x, per_channel.view(n * c, 1, 1, -1), groups=n * c)
    x = F.conv2d(x, per_channel.view(n * c, 1, -1, 1), groups=n * c)
    return x.view(n, c, h, w)


class Degrader:
    """Makes clean renders look like the sampler's clean estimates of x0 at a random point of the run.

    Early estimates are a grey, blurred average digit with blotches; late ones are nearly clean. ``level``
    (uniform in 0..``strength`` per picture, 0 for a quarter of them) scales every degradation at once.
    Training raises ``strength`` from 0 to 1: a CLIP that has not yet learnt clean digits learns nothing from
    blurred ones.
    """

    def __init__(self, mean_picture: torch.Tensor, generator: torch.Generator, strength: float = 1.0):
        self.mean_picture = mean_picture  # (1, 3, 64, 64) model space
        self.generator = generator
        self.strength = strength

    def _rand(self, *shape) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n = len(images)
        level = self.strength * self._rand(n) * (self._rand(n) > 0.25)
        x = gaussian_blur(images, 3.5 * level * self._rand(n))
        fade = (0.8 * level * self._rand(n)).view(-1, 1, 1, 1)  # contrast pulled toward the mean picture
        x = x + (self.mean_picture - x) * fade
        blotches = F.interpolate(torch.randn(n, 3, 8, 8, generator=self.generator), size=digits.SIZE, mode="bicubic")
        fine = torch.randn(n, 3, digits.SIZE, digits.SIZE, generator=self.generator)
        x = x + (0.35 * level * self._rand(n)).view(-1, 1, 1, 1) * blotches
        x = x + (0.25 * level * self._rand(n)).view(-1, 1, 1, 1) * fine
        tint = 0.15 * (self._rand(n, 3, 1, 1) - 0.5)  # a paper a little off the training colour
        shift = torch.randint(-4, 5, (2,), generator=self.generator).tolist()  # the margin is 8 px of paper
        return torch.roll(x + tint, shifts=shift, dims=(2, 3)).clamp(-1, 1)


def quarter_turned(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each picture turned a quarter, clockwise or counter-clockwise at random."""
    clockwise = torch.rand(len(images), generator=generator) < 0.5
    return torch.where(
        clockwise.view(-1, 1, 1, 1), images.rot90(-1, dims=(2, 3)), images.rot90(1, dims=(2, 3))
    ).contiguous()


# -- training -----------------------------------------------------------------------------------


def train(output: Path, *, steps: int = STEPS, per_digit: int = PER_DIGIT, negatives: int = NEGATIVES, log=print):
    """Train the digits CLIP on the training split and write its folder to ``output``; returns a summary.

    The files are written next to it first (``<output>.partial``) and moved in at the end, so a run stopped
    half-way leaves no folder that looks like a CLIP without being one (demo/evaluate.py trains when the folder
    is missing).
    """
    from transformers import CLIPImageProcessor, CLIPModel

    started = time.perf_counter()
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    split = digits.load_split()
    partial = output.with_name(output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # an earlier stopped run's
    tokenizer = write_tokenizer(partial)
    model = CLIPModel(clip_config(len(tokenizer.get_vocab())))
    model.logit_scale.requires_grad_(False)
    model.train()

    clean = digits.to_model(split.train_images)
    pixels = (clean + 1) / 2
    # Rounded as written to preprocessor_config.json, so training and scoring normalise alike.
    mean = torch.tensor([round(value, 4) for value in pixels.mean((0, 2, 3)).tolist()])
    std = torch.tensor([round(value, 4) for value in pixels.std((0, 2, 3)).tolist()])
    augment = digits.Augmenter(split.train_images, generator)
    degrade = Degrader(clean.mean(0, keepdim=True), generator)
    labels = torch.as_tensor(split.train_labels)
    by_digit = [torch.nonzero(labels == digit).flatten() for digit in range(10)]
    not_round = torch.nonzero(labels != 0).flatten()  # a zero on its side is still an oval: not a negative

    tokens = tokenizer(list(PROMPTS), padding="max_length", max_length=MAX_TOKENS, return_tensors="pt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / WARMUP) * 0.5 * (1 + math.cos(math.pi * min(step / steps, 1.0))),
    )
    targets = torch.arange(10).repeat_interleave(per_digit)
    for step in range(steps):
        degrade.strength = min(1.0, step / (RAMP * steps))
        picks = torch.cat([group[torch.randint(len(group), (per_digit,), generator=generator)] for group in by_digit])
        turned = not_round[torch.randint(len(not_round), (negatives,), generator=generator)]
        upright = degrade(augment(picks))
        sideways = degrade(quarter_turned(augment(turned), generator))
        images = normalise(torch.cat([upright, sideways]), mean, std)

        image_features = F.normalize(_features(model.get_image_features(pixel_values=images)), dim=-1)
        text_features = F.normalize(
            _features(model.get_text_features(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)),
            dim=-1,
        )
        logits = model.logit_scale.exp() * image_features @ text_features.T  # (B + negatives, 10)
        # CLIP's two directions: each upright picture picks its prompt among the ten, and each prompt picks its
        # pictures among the whole batch, the quarter-turned ones included (positives share the target).
        picture_loss = F.cross_entropy(logits[: len(targets)], targets)
        per_prompt = logits.T.log_softmax(dim=1)[:, : len(targets)].reshape(10, 10, per_digit)
        prompt_loss = -per_prompt.diagonal(dim1=0, dim2=1).mean()
        loss = (picture_loss + prompt_loss) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            accuracy = (logits[: len(targets)].argmax(1) == targets).float().mean()
            similarity = (logits[: len(targets)] / model.logit_scale.exp()).gather(1, targets.view(-1, 1)).mean()
            log(f"step {step}: loss {loss.item():.3f}, batch accuracy {accuracy:.0%}, similarity {similarity:.2f}")

    model.eval()
    model.save_pretrained(str(partial), safe_serialization=True)
    tokenizer.save_pretrained(str(partial))
    CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": digits.SIZE},
        do_center_crop=True,
        crop_size={"height": digits.SIZE, "width": digits.SIZE},
        image_mean=[round(value, 4) for value in mean.tolist()],
        image_std=[round(value, 4) for value in std.tolist()],
    ).save_pretrained(str(partial))
    seconds = time.perf_counter() - started
    summary = {"steps": steps, "per_digit": per_digit, "negatives": negatives, "seconds": round(seconds, 1)}
    (partial / "training.json").write_text(json.dumps(summary, indent=1) + "\n")
    output.mkdir(parents=True, exist_ok=True)
    for written in partial.iterdir():
        written.replace(output / written.name)
    partial.rmdir()
    return summary


# -- checking -----------------------------------------------------------------------------------


def zero_shot(scorer, images: torch.Tensor) -> np.ndarray:
    """(N,) digits a scorer (the pack's CLIP interface) reads: argmax of the similarity over the ten prompts."""
    texts = scorer.text_embeddings(PROMPTS)
    return torch.cat([scorer.image_embeddings(chunk) @ texts.T for chunk in images.split(256)]).argmax(1).numpy()


def held_out_report(folder: Path) -> dict:
    """Zero-shot accuracy of the CLIP in ``folder`` on the held-out test split, clean and degraded like an
    early estimate, and the mean diagonal similarity, loaded with the pack's own loader."""
    sys.path.insert(0, str(REPO / "tests"))
    from pack import import_submodule

    scorer = import_submodule("sampling.clip_models").load_clip(folder, device="cpu")
    split = digits.load_split()
    clean = digits.to_model(split.test_images)
    generator = torch.Generator().manual_seed(SEED + 1)
    degraded = Degrader(clean.mean(0, keepdim=True), generator)(clean)
    texts = scorer.text_embeddings(PROMPTS)
    right = scorer.image_embeddings(clean) @ texts.T
    sideways = scorer.image_embeddings(quarter_turned(clean, generator)) @ texts.T
    labels = torch.as_tensor(split.test_labels)
    return {
        "held_out": len(labels),
        "zero_shot_accuracy": float((zero_shot(scorer, clean) == split.test_labels).mean()),
        "degraded_accuracy": float((zero_shot(scorer, degraded) == split.test_labels).mean()),
        "matching_similarity": float(right.gather(1, labels.view(-1, 1)).mean()),
        "best_similarity_sideways": float(sideways.max(1).values.mean()),
        "temperature": scorer.temperature,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--per-digit", type=int, default=PER_DIGIT, help="upright pictures of each digit per batch")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    summary = train(args.output, steps=args.steps, per_digit=args.per_digit)
    report = held_out_report(args.output)
    summary.update(report)
    (args.output / "training.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(
        f"wrote {args.output} in {summary['seconds']:.0f} s: zero-shot {report['zero_shot_accuracy']:.1%} of "
        f"{report['held_out']} held-out digits ({report['degraded_accuracy']:.1%} degraded like an early estimate); "
        f"similarity to the right prompt {report['matching_similarity']:.2f}, best for a quarter-turned digit "
        f"{report['best_similarity_sideways']:.2f}; temperature {report['temperature']:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
