#!/usr/bin/env python
"""Train the embedded demo model: a tiny DeepFloyd IF Stage I that draws handwritten digits.

    .venv/bin/python demo/train.py                      # writes demo/IF-I-digits (about 45 min on 1 CPU thread)
    .venv/bin/python demo/train.py --out /tmp/digits --steps 200   # a quick trial

The result is a complete IF Stage I diffusers folder (``model_index.json``,
``unet/``, ``scheduler/``, ``text_encoder/``, ``tokenizer/``; safetensors only),
so the pack's Stage I loader and T5 loader both load it like IF-I-XL:

* **Text**: the tiny T5 encoder and tokenizer of ``tests/tiny_models.py`` (its
  vocabulary has "digit", "zero" ... "nine" and the digit characters), frozen
  (``--train-t5 1`` trains it with the UNet). Prompts are tokenized exactly as
  the pack's ``sampling.text.encode_prompts`` tokenizes them (lower-cased, 77
  tokens, attention mask), so the prompt encoder node reproduces the training
  embeddings bit for bit. The prompt is "the digit <word>" (``digits.PROMPT``);
  10 % of the time the empty prompt instead, which is IF's unconditional
  (negative) prompt, for classifier-free guidance.
* **Images**: ``demo/digits.py`` (scikit-learn's 8 x 8 digits rendered as
  64 px pen strokes), training split only. Augmentation keeps a digit's
  meaning: small shifts, scale, slant (shear) and stroke weight; never a
  rotation or a flip, which would turn a 6 into a 9 and teach the model the
  very ambiguity the illusions play with.
* **UNet**: ``UNet2DConditionModel`` shaped like IF's Stage I (3 -> 6 channels,
  ``addition_embed_type="text"``, ``encoder_hid_dim``, simple cross-attention
  at 8 px), 64 -> 32 -> 16 -> 8 px, about 1.7M parameters. The pooled text
  embedding starts as "minus the mean prompt" (``center_text_embedding``).
* **Loss**: IF predicts noise and a learned-range variance. The 3 noise
  channels get the MSE weighted by max(1, min(1/SNR, 50)) (``--x0-weight-cap``):
  the usual noise loss where the picture still shows through the noise, the
  loss on the clean picture in the noisiest steps. This is what makes the
  model follow its prompt. A 64 px digit stays legible through the noise down
  to t ~ 850, so the digit asked for only matters in the noisiest steps, and
  there the plain noise loss barely notices it (the noise is almost x_t
  whatever the digit): trained on it, the UNet ignored the prompt (13 % of its
  samples read as the digit asked for, chance is 10 %). Weighted, it learns
  the prompt within 1000 steps. The 3 variance channels get the variational
  bound term of Nichol & Dhariwal's "hybrid" loss (the KL between the true
  posterior q(x_{t-1} | x_t, x_0) and the model's Gaussian, with the mean's
  gradient stopped, as IF and improved DDPM train them), here on the last
  layer only (see ``VarianceHead``). ``--variance-loss`` also offers fixed
  targets (-1: the posterior variance, +1: beta_t).
* **Schedule**: IF's DDPM scheduler (``squaredcos_cap_v2``, learned range,
  dynamic thresholding). Timesteps: half uniform in 0..999, half in 700..999.
  AdamW with warm-up and cosine decay (3x the learning rate on the text
  pathway); the saved weights are an exponential moving average.
* **Probe**: every 250 steps the EMA weights sample every digit three times
  with the pack's Stage I sampler and the classifier of ``demo/digits.py``
  reads them; the log shows how many read as the digit asked for.

Seeded and single-threaded (``--threads 1``), so a rerun on the same torch
build writes the same weights. It prints the loss and an ETA as it goes, and
saves ``training.json`` (settings, torch version, time, final losses) next to
the weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

DEMO = Path(__file__).resolve().parent
REPO = DEMO.parent
sys.path.insert(0, str(DEMO))
sys.path.insert(0, str(REPO / "tests"))

import digits  # noqa: E402
from pack import import_submodule  # noqa: E402  (the pack, imported as ComfyUI imports it)
from tiny_models import build_text_encoder, build_tokenizer, if_scheduler  # noqa: E402

DEFAULT_OUT = DEMO / "IF-I-digits"

#: How a prompt names digit d (w is its word). One phrasing: with eight ("6", "six", "the digit six",
#: "a handwritten six", ...) the tiny T5's features varied as much between phrasings as between digits,
#: and within the training budget the UNet learned to ignore the prompt altogether.
PHRASINGS = (digits.PROMPT,)

UNET_CONFIG = dict(
    sample_size=digits.SIZE,
    in_channels=3,
    out_channels=6,  # 3 noise + 3 learned-range variance, as IF
    block_out_channels=(8, 16, 48, 96),
    layers_per_block=1,
    # 64 -> 32 -> 16 -> 8 px; attention (self + text) at 8 px only. The digit is also given to every
    # ResNet block through the pooled text embedding (addition_embed_type="text"), as in IF.
    down_block_types=(
        "ResnetDownsampleBlock2D",
        "ResnetDownsampleBlock2D",
        "ResnetDownsampleBlock2D",
        "SimpleCrossAttnDownBlock2D",
    ),
    up_block_types=(
        "SimpleCrossAttnUpBlock2D",
        "ResnetUpsampleBlock2D",
        "ResnetUpsampleBlock2D",
        "ResnetUpsampleBlock2D",
    ),
    mid_block_type="UNetMidBlock2DSimpleCrossAttn",
    cross_attention_dim=64,
    encoder_hid_dim=32,  # the tiny T5's width (T5-XXL: 4096)
    attention_head_dim=16,
    addition_embed_type="text",
    addition_embed_type_num_heads=2,
    cross_attention_norm="group_norm",
    resnet_time_scale_shift="scale_shift",
    act_fn="gelu",
    # 2 groups: 4 channels a group at 64 px. With 1 channel a group (8 groups), the last GroupNorm before
    # conv_out is an instance norm that erases each channel's mean, and the samples' paper colour drifted.
    norm_num_groups=2,
)


def prompts_for(digit: int) -> list[str]:
    return [p.format(w=digits.DIGIT_WORDS[digit]) for p in PHRASINGS]


# -- the loss -----------------------------------------------------------------------------------


class DiffusionLoss:
    """MSE on the noise, plus a variance term on the learned-range channels (see the module docstring)."""

    def __init__(self, scheduler, variance_loss: str, x0_weight_cap: float = 0.0):
        self.variance_loss = variance_loss
        alphas_cumprod = scheduler.alphas_cumprod.double()
        # The noise MSE weighted by max(1, min(1 / SNR, cap)): the plain noise loss where the picture is
        # still visible (SNR >= 1), the loss on the clean picture x0 (which is the noise loss times 1 / SNR)
        # in the noisy steps, capped. Only in the noisy steps does the digit asked for matter, and there the
        # plain noise loss barely notices it (eps is almost x_t whatever the digit), so the UNet ignored
        # the prompt; on x0 a wrong digit costs as much as a wrong stroke anywhere else.
        snr = alphas_cumprod / (1 - alphas_cumprod)
        if x0_weight_cap > 0:
            self.mse_weight = (1 / snr).clamp(min=1.0, max=x0_weight_cap).float()
        else:
            self.mse_weight = torch.ones_like(snr).float()
        previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        betas = 1 - alphas_cumprod / previous
        posterior_variance = betas * (1 - previous) / (1 - alphas_cumprod)
        self.alphas_cumprod = alphas_cumprod.float()
        self.log_beta = betas.log().float()
        # The posterior variance is 0 at t = 0: use t = 1's (improved DDPM's "clipped" log variance).
        self.log_posterior_variance = torch.cat([posterior_variance[1:2], posterior_variance[1:]]).log().float()
        self.mean_x0 = (previous.sqrt() * betas / (1 - alphas_cumprod)).float()
        self.mean_xt = ((1 - betas).sqrt() * (1 - previous) / (1 - alphas_cumprod)).float()

    def __call__(self, eps, v, x0, xt, noise, t) -> tuple[torch.Tensor, torch.Tensor]:
        mse = ((eps - noise).square().mean(dim=(1, 2, 3)) * self.mse_weight[t]).mean()
        if self.variance_loss == "vlb":
            variance = self._vlb(eps.detach(), v, x0, xt, t)
        else:
            target = -1.0 if self.variance_loss == "small" else 1.0
            variance = F.mse_loss(v, torch.full_like(v, target))
        return mse, variance

    def _vlb(self, eps, v, x0, xt, t):
        """KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) in bits per dimension; 0 at t = 0 (never sampled)."""
        shape = (-1, 1, 1, 1)
        ab = self.alphas_cumprod[t].view(shape)
        c0, ct = self.mean_x0[t].view(shape), self.mean_xt[t].view(shape)
        x0_hat = (xt - (1 - ab).sqrt() * eps) / ab.sqrt()
        true_mean, model_mean = c0 * x0 + ct * xt, c0 * x0_hat + ct * xt
        true_log_var = self.log_posterior_variance[t].view(shape)
        frac = (v + 1) / 2  # learned range: -1 -> posterior variance, +1 -> beta_t (diffusers' convention)
        model_log_var = frac * self.log_beta[t].view(shape) + (1 - frac) * true_log_var
        kl = 0.5 * (
            -1.0
            + model_log_var
            - true_log_var
            + (true_log_var - model_log_var).exp()
            + (true_mean - model_mean).square() * (-model_log_var).exp()
        )
        kl = kl.mean(dim=(1, 2, 3)) / math.log(2.0)
        return torch.where(t > 0, kl, torch.zeros_like(kl)).mean()


class VarianceHead:
    """The variance channels recomputed from ``conv_out``'s input with the trunk's gradient stopped.

    The variance bound is spiky (its KL explodes where the model's variance is far off), and through
    the shared trunk those spikes disturb the noise estimate. So the trunk learns from the noise MSE
    alone and the variance term trains only the variance part of the last convolution (a linear read-out
    of the same features: the weights are unchanged, only where the gradient goes differs).
    """

    def __init__(self, unet):
        self.conv = unet.conv_out
        self.features = None
        self.conv.register_forward_hook(self._keep)

    def _keep(self, _module, inputs, _output):
        self.features = inputs[0]

    def __call__(self) -> torch.Tensor:
        conv = self.conv
        return F.conv2d(self.features.detach(), conv.weight[3:], conv.bias[3:], padding=conv.padding)


@torch.no_grad()
def center_text_embedding(unet, context: torch.Tensor) -> None:
    """Initialisation of the pooled text embedding (``addition_embed_type="text"``), from the prompts.

    Pooled, the T5 features of different prompts share a large common part; the digit is a few per cent
    of the vector, and a randomly initialised projection passes it to the time embedding drowned in that
    common part, so the UNet learned to ignore the prompt. Starting the projection as "subtract the
    mean over the training prompts" hands every ResNet block a vector that *is* the prompt-specific part
    (the LayerNorm after it rescales it), from the first step.
    """
    embedding = unet.add_embedding
    pooled = embedding.pool(embedding.norm1(context))
    proj = embedding.proj
    if proj.in_features != proj.out_features:
        return
    proj.weight.copy_(torch.eye(proj.in_features))
    proj.bias.copy_(-pooled.mean(0))
    # ... and let it in gradually: the last LayerNorm's gain starts at zero (as adaLN-Zero / zero
    # convolutions do). A random prompt signal added at full strength only disturbed the estimates, and
    # the quickest fix the optimiser found was to erase it: the distance between the pooled embeddings
    # of "the digit three" and "the digit seven" fell from 6 to 0.6 in 250 steps.
    embedding.norm2.weight.zero_()
    embedding.norm2.bias.zero_()


@torch.no_grad()
def probe(unet, text_encoder, t5, scheduler, classifier, seeds: int = 3) -> str:
    """Sample every digit (``seeds`` seeds, the demo workflow's settings) with the pack's Stage I sampler
    and say how many the classifier reads as the digit asked for: the number training is for."""
    import dataclasses
    from types import SimpleNamespace

    import evaluate

    model = evaluate.DemoModel(
        SimpleNamespace(unet=unet, scheduler=scheduler), dataclasses.replace(t5, model=text_encoder)
    )
    rates = {d: rate for d, (rate, _) in evaluate.plain_accuracy(model, classifier, seeds=seeds).items()}
    overall = sum(rates.values()) / len(rates)
    return (
        f"probe: {overall:.0%} of plain samples read as their prompt ("
        + " ".join(f"{d}:{round(r * seeds)}/{seeds}" for d, r in rates.items())
        + ")"
    )


# -- the run ------------------------------------------------------------------------------------


class PromptBank:
    """Every training prompt tokenized once, exactly as ``sampling.text.encode_prompts`` tokenizes it
    (lower-cased, 77 tokens, attention mask), and encoded by the (trained) T5 on demand."""

    def __init__(self, t5, prompts: list[str]):
        tokens = t5.tokenizer(
            [p.lower().strip() for p in prompts],
            padding="max_length",
            max_length=text_module().MAX_PROMPT_TOKENS,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        self.ids, self.mask = tokens.input_ids, tokens.attention_mask
        self.model = t5.model

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        return self.model(self.ids[index], attention_mask=self.mask[index])[0]


def text_module():
    return import_submodule("sampling.text")


def prepare_t5(out: Path):
    """Write the tiny T5 (tests/tiny_models.py) into ``out`` and load it back with the pack's ``load_t5``."""
    tokenizer = build_tokenizer()
    build_text_encoder(len(tokenizer)).save_pretrained(out / "text_encoder", safe_serialization=True)
    tokenizer.save_pretrained(out / "tokenizer")
    return tokenizer, text_module().load_t5(out, precision="fp32", device=torch.device("cpu"))


def save_pipeline(out: Path, tokenizer, encoder, unet, scheduler) -> None:
    from diffusers import IFPipeline

    pipeline = IFPipeline(
        tokenizer=tokenizer,
        text_encoder=encoder,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(out, safe_serialization=True)


def without_out(argv: list[str]) -> list[str]:
    """The command line without ``--out DIR`` (a path of this machine; the settings are what reproduce)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--out":
            skip = True
        elif not arg.startswith("--out="):
            kept.append(arg)
    return kept


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the model folder to write")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--ema", type=float, default=0.998, help="the EMA decay's ceiling")
    parser.add_argument("--uncond", type=float, default=0.1, help="share of empty prompts (for guidance)")
    parser.add_argument("--variance-loss", choices=("vlb", "small", "large"), default="vlb")
    parser.add_argument("--train-t5", type=int, default=0, help="train the tiny T5 with the UNet (1) or freeze it (0)")
    parser.add_argument("--text-lr-scale", type=float, default=3.0, help="learning-rate factor of the text pathway")
    parser.add_argument(
        "--high-t-share",
        type=float,
        default=0.5,
        help="share of timesteps drawn from [--high-t-from, 999] instead of [0, 999]",
    )
    parser.add_argument("--high-t-from", type=int, default=700)
    parser.add_argument(
        "--x0-weight-cap", type=float, default=50.0, help="noise loss weight max(1, min(1/SNR, cap)) (0: unweighted)"
    )
    parser.add_argument(
        "--probe-every",
        type=int,
        default=250,
        help="sample every digit with the EMA weights every N steps and print how many read right",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint-every", type=int, default=250, help="save the EMA weights every N steps")
    parser.add_argument("--log-every", type=int, default=25)
    args = parser.parse_args(argv)

    from diffusers import UNet2DConditionModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.time()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    tokenizer, t5 = prepare_t5(out)
    # Prompt k * len(PHRASINGS) + j is phrasing j of digit k; the last one is the empty prompt.
    bank = PromptBank(t5, [p for d in range(10) for p in prompts_for(d)] + [""])
    empty = 10 * len(PHRASINGS)
    scheduler = if_scheduler()
    split = digits.load_split()
    labels = torch.as_tensor(split.train_labels)
    generator = torch.Generator().manual_seed(args.seed)
    augment = digits.Augmenter(split.train_images, generator)
    classifier = digits.classifier() if args.probe_every else None
    loss_fn = DiffusionLoss(scheduler, args.variance_loss, args.x0_weight_cap)

    unet = UNet2DConditionModel(**UNET_CONFIG)
    unet.train()
    encoder = t5.model.train().requires_grad_(bool(args.train_t5))
    trained = torch.nn.ModuleDict({"unet": unet, "text_encoder": encoder})
    variance_head = VarianceHead(unet)
    with torch.no_grad():
        center_text_embedding(unet, bank(torch.arange(len(bank.ids))))
    ema = copy.deepcopy(trained).eval().requires_grad_(False)
    parameters = sum(p.numel() for p in unet.parameters())
    # The text pathway (T5, the pooled text embedding, the text projections of the attention) starts
    # from random features that differ little between prompts; a higher learning rate lets the digit
    # through sooner.
    text_names = ("add_embedding", "encoder_hid_proj", "add_k_proj", "add_v_proj")
    text_params = [p for n, p in unet.named_parameters() if any(k in n for k in text_names)]
    if args.train_t5:
        text_params += list(encoder.parameters())
    text_ids = {id(p) for p in text_params}
    other_params = [p for p in unet.parameters() if id(p) not in text_ids]
    optimizer = torch.optim.AdamW(
        [{"params": other_params, "scale": 1.0}, {"params": text_params, "scale": args.text_lr_scale}],
        lr=args.lr,
        weight_decay=0.0,
    )
    alphas_cumprod = scheduler.alphas_cumprod.float()
    print(
        f"demo model: {parameters:,} UNet parameters, {len(labels)} training digits, {args.steps} steps of "
        f"{args.batch}, {args.threads} thread(s), variance loss {args.variance_loss}",
        flush=True,
    )

    history = []
    running = None
    for step in range(args.steps):
        index = torch.randint(len(labels), (args.batch,), generator=generator)
        x0 = augment(index)
        digit = labels[index]
        phrasing = torch.randint(len(PHRASINGS), (args.batch,), generator=generator)
        drop = torch.rand(args.batch, generator=generator) < args.uncond
        prompt = torch.where(drop, torch.full_like(digit, empty), digit * len(PHRASINGS) + phrasing)
        t = torch.randint(scheduler.config.num_train_timesteps, (args.batch,), generator=generator)
        high = torch.randint(args.high_t_from, scheduler.config.num_train_timesteps, (args.batch,), generator=generator)
        t = torch.where(torch.rand(args.batch, generator=generator) < args.high_t_share, high, t)
        noise = torch.randn(x0.shape, generator=generator)
        ab = alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise

        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup) * group["scale"]
        context = bank(prompt)
        output = unet(xt, t, encoder_hidden_states=context).sample
        mse, variance = loss_fn(output[:, :3], variance_head(), x0, xt, noise, t)
        loss = mse + variance
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
        optimizer.step()

        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for averaged, live in zip(ema.parameters(), trained.parameters(), strict=True):
                averaged.lerp_(live, 1 - decay)

        values = torch.stack([mse.detach(), variance.detach()])
        running = values if running is None else 0.95 * running + 0.05 * values
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            elapsed = time.time() - started
            eta = elapsed / (step + 1) * (args.steps - step - 1)
            print(
                f"step {step + 1:5d}/{args.steps}  mse {running[0]:.4f}  variance {running[1]:.4f}  "
                f"lr {optimizer.param_groups[0]['lr']:.2e}  {elapsed / 60:5.1f} min  eta {eta / 60:5.1f} min",
                flush=True,
            )
            history.append(
                {
                    "step": step + 1,
                    "mse": round(float(running[0]), 5),
                    "variance": round(float(running[1]), 5),
                    "minutes": round(elapsed / 60, 2),
                }
            )
        if args.probe_every and (step + 1) % args.probe_every == 0:
            report = probe(ema["unet"], ema["text_encoder"], t5, scheduler, classifier)
            print(report, flush=True)
            history.append({"step": step + 1, "probe": report})
        if args.checkpoint_every and (step + 1) % args.checkpoint_every == 0 and step + 1 < args.steps:
            ema["unet"].save_pretrained(out / "checkpoint" / "unet", safe_serialization=True)
            ema["text_encoder"].save_pretrained(out / "checkpoint" / "text_encoder", safe_serialization=True)

    save_pipeline(out, tokenizer, ema["text_encoder"], ema["unet"], scheduler)
    checkpoint = out / "checkpoint"
    if checkpoint.is_dir():
        import shutil

        shutil.rmtree(checkpoint)
    minutes = (time.time() - started) / 60
    record = {
        "command": " ".join(["python demo/train.py", *without_out(argv if argv is not None else sys.argv[1:])]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"},
        "phrasings": list(PHRASINGS),
        "unet_parameters": parameters,
        "torch": torch.__version__,
        "minutes": round(minutes, 1),
        "history": history,
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out} in {minutes:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
