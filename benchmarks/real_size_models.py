"""DeepFloyd IF's models at their real size, with random weights, built at run time.

The real weights cannot be downloaded here, but memory and speed depend on the architecture, not on the
values: these are the published architectures filled with random numbers. Nothing here is committed; the
folders are built into ``.cache/benchmarks/`` (gitignored) and reused while complete.

Architectures (``ARCHITECTURES``), as ``diffusers.UNet2DConditionModel`` configs:

* The IF family's layout is taken from the two DeepFloyd ``unet/config.json`` files recorded in public
  fine-tune repositories that start from them (their ``_name_or_path`` names the DeepFloyd repo):
  IF-I-XL-v1.0 (huggingface.co/lucostiguy11/dreambooth_if, unet/config.json) and IF-II-L-v1.0
  (huggingface.co/williamberman/dreambooth_me_upscale, unet/config.json). Keys those excerpts cut off
  (Stage II's ``sample_size``, ``time_embedding_act_fn``, ``time_embedding_dim``, the mirrored up blocks) are
  what diffusers' scripts/convert_if.py (``get_super_res_unet``) sets when it converts DeepFloyd's
  config.yml. Counted here, the two reproduce their model cards: IF-I-XL 4.305B (card 4.3B), IF-II-L 1.243B
  (card 1.2B) -- see :data:`REFERENCE_ARCHITECTURES`.
* IF-I-M and IF-II-M: no public copy of their ``unet/config.json`` was found (searched: diffusers' code, tests
  and docs; github.com/deep-floyd/IF, which reads config.yml from the gated Hub repos; fine-tune repos). They are
  the family layout above at the width closest to the model card: Stage I widths come in steps of 64 (every
  level's channels must split into 64-channel heads), Stage II widths in steps of 32. That is 192 (IF-I-M,
  371.6M parameters against the card's 400M) and 96 (IF-II-M, 482.5M against the card's 450M; DeepFloyd's
  README first listed IF-II-M as 500M). The next widths are far off (Stage I 256: 618.5M; Stage II 64 and 128:
  243.9M and 815.6M), so these are the best estimates, 7 % from the cards.

T5-XXL's encoder (``T5_XXL_CONFIG``) is google/t5-v1_1-xxl's config.json (huggingface.co/google/t5-v1_1-xxl,
the encoder IF-I repos ship in text_encoder/): 24 layers, d_model 4096, d_ff 10240, 64 heads of 64, vocabulary
32128, gated GELU: 4,762,310,656 parameters.

    python benchmarks/real_size_models.py            # the architecture table (meta device, seconds)
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from pack import import_submodule  # noqa: E402

if_models = import_submodule("sampling.if_models")
t5_single_file = import_submodule("sampling.t5_single_file")

#: Where models built at run time go (gitignored through .cache/).
CACHE_DIR = REPO / ".cache" / "benchmarks"
#: Written last into a built folder: what it holds. A folder without it (an interrupted build) is rebuilt.
COMPLETE_MARKER = "real_size_model.json"
#: T5 shards are written one at a time, so building the encoder holds at most one shard in memory.
T5_SHARD_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class Architecture:
    """A real-size IF UNet: its diffusers config, where it comes from and its model card's parameter count."""

    name: str
    hub_id: str
    stage: int
    config: dict = field(repr=False)
    source: str
    card_parameters: int


# -- the IF family's layouts, from the published configs ---------------------------------------------------
def _shared_keys() -> dict:
    """Keys both published configs (IF-I-XL, IF-II-L) share."""
    return dict(
        out_channels=6,  # 3 noise + 3 learned-range variance channels
        act_fn="gelu",
        addition_embed_type="text",
        addition_embed_type_num_heads=64,
        attention_head_dim=64,
        cross_attention_norm="group_norm",
        encoder_hid_dim=4096,  # T5-XXL's width, projected to cross_attention_dim
        encoder_hid_dim_type="text_proj",
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        norm_num_groups=32,
        only_cross_attention=False,
        resnet_time_scale_shift="scale_shift",
    )


def stage_1_config(model_channels: int) -> dict:
    """IF-I-XL-v1.0's unet/config.json with its width (704) replaced by ``model_channels``."""
    widths = [model_channels * multiple for multiple in (1, 2, 3, 4)]
    return dict(
        _shared_keys(),
        sample_size=64,
        in_channels=3,
        block_out_channels=widths,
        cross_attention_dim=widths[-1],
        layers_per_block=3,
        down_block_types=["ResnetDownsampleBlock2D"] + ["SimpleCrossAttnDownBlock2D"] * 3,
        up_block_types=["SimpleCrossAttnUpBlock2D"] * 3 + ["ResnetUpsampleBlock2D"],
        mid_block_scale_factor=1,
    )


def stage_2_config(model_channels: int) -> dict:
    """IF-II-L-v1.0's unet/config.json with its width (160) replaced by ``model_channels``."""
    widths = [model_channels * multiple for multiple in (1, 2, 4, 6, 8)]
    scale = 1.4142271248762552  # 1 / 0.7071, as published (convert_if.py: resnet_out/mid_block scale factors)
    return dict(
        _shared_keys(),
        sample_size=256,
        in_channels=6,  # the noisy 256 px image ++ the upsampled, noise-augmented Stage I image
        block_out_channels=widths,
        cross_attention_dim=widths[-1],
        layers_per_block=[2, 2, 3, 5, 5],
        down_block_types=["ResnetDownsampleBlock2D"] * 3 + ["SimpleCrossAttnDownBlock2D"] * 2,
        up_block_types=["SimpleCrossAttnUpBlock2D"] * 2 + ["ResnetUpsampleBlock2D"] * 3,
        class_embed_type="timestep",  # the augmentation noise level, fed as class_labels
        mid_block_scale_factor=scale,
        resnet_out_scale_factor=scale,
        resnet_skip_time_act=True,
        time_embedding_act_fn="gelu",
        time_embedding_dim=widths[-1],
    )


_FAMILY_SOURCE = {
    1: "layout: DeepFloyd/IF-I-XL-v1.0 unet/config.json as copied in huggingface.co/lucostiguy11/dreambooth_if",
    2: "layout: DeepFloyd/IF-II-L-v1.0 unet/config.json as copied in huggingface.co/williamberman/dreambooth_me_upscale"
    " (+ diffusers scripts/convert_if.py get_super_res_unet)",
}
_CARD = "card: github.com/deep-floyd/IF README model zoo and the Hub model card"


def _architecture(name: str, stage: int, model_channels: int, width_note: str) -> Architecture:
    hub_id = f"DeepFloyd/{name}-v1.0"
    config = stage_1_config(model_channels) if stage == 1 else stage_2_config(model_channels)
    source = f"{_FAMILY_SOURCE[stage]}; width {model_channels}: {width_note}; {_CARD}"
    return Architecture(name, hub_id, stage, config, source, if_models.HUB_PARAMETER_COUNTS[hub_id])


#: The architectures the benchmarks build.
ARCHITECTURES = {
    "IF-I-M": _architecture("IF-I-M", 1, 192, "not published; the legal width nearest the card (see module doc)"),
    "IF-II-M": _architecture("IF-II-M", 2, 96, "not published; the legal width nearest the card (see module doc)"),
}
#: The published configs the family layouts come from (too large to build here; counted on the meta device).
REFERENCE_ARCHITECTURES = {
    "IF-I-XL": _architecture("IF-I-XL", 1, 704, "published"),
    "IF-II-L": _architecture("IF-II-L", 2, 160, "published"),
}

#: google/t5-v1_1-xxl's config.json (the encoder of every IF-I repo's text_encoder/).
#: Its sizes are the pack's one record of them (``sampling.t5_single_file.IF_T5_XXL``).
T5_XXL_CONFIG = dict(
    **t5_single_file.IF_T5_XXL,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=t5_single_file.RELATIVE_ATTENTION_MAX_DISTANCE,
    feed_forward_proj="gated-gelu",
    layer_norm_epsilon=t5_single_file.LAYER_NORM_EPSILON,
    dropout_rate=0.1,
    tie_word_embeddings=False,
)
T5_SOURCE = "huggingface.co/google/t5-v1_1-xxl config.json"


def _architecture_named(name: str) -> Architecture:
    table = {**ARCHITECTURES, **REFERENCE_ARCHITECTURES}
    if name not in table:
        raise KeyError(f"unknown architecture {name!r}: choose one of {', '.join(table)}")
    return table[name]


# -- counting and building ----------------------------------------------------------------------------------
def parameter_count(name: str) -> int:
    """The UNet's parameter count, from a copy on the meta device (no memory, about a second)."""
    return config_parameter_count(_architecture_named(name).config)


def config_parameter_count(config: dict) -> int:
    """The parameter count of a ``UNet2DConditionModel`` config, built on the meta device."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    return sum(parameter.numel() for parameter in unet.parameters())


def t5_config():
    from transformers import T5Config

    return T5Config(**T5_XXL_CONFIG, architectures=["T5EncoderModel"])


def t5_parameter_count() -> int:
    """T5-XXL's encoder parameter count (the tied input embedding counted once), on the meta device."""
    from transformers import T5EncoderModel

    with torch.device("meta"):
        model = T5EncoderModel(t5_config())
    return sum(parameter.numel() for parameter in model.parameters())


def build_unet(name: str, dtype: torch.dtype = torch.float32, seed: int = 0):
    """A real-size random UNet on the CPU in eval mode; the same seed always gives the same weights."""
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**_architecture_named(name).config)
    if dtype != torch.float32:  # built in fp32: casting to it again only makes diffusers warn
        unet = unet.to(dtype)
    return unet.eval()


def write_stage_folder(name: str, folder: str | Path, dtype: torch.dtype = torch.float32, seed: int = 0) -> Path:
    """A diffusers pipeline folder like the Hub repo's (model_index.json, unet/, scheduler/ and, for Stage II,
    image_noising_scheduler/) holding the random UNet in ``dtype``, for ``sampling.loading.load_if_stage``.

    A complete folder made with the same arguments is reused; anything else there is rebuilt.
    """
    from diffusers import IFPipeline, IFSuperResolutionPipeline

    from tiny_models import if_image_noising_scheduler, if_scheduler

    folder = Path(folder)
    architecture = _architecture_named(name)
    description = {"architecture": name, "dtype": str(dtype), "seed": seed, "config": architecture.config}
    if _complete(folder, description):
        return folder
    parts = dict(tokenizer=None, text_encoder=None, safety_checker=None, feature_extractor=None, watermarker=None)
    unet = build_unet(name, dtype, seed)
    if architecture.stage == 1:
        pipeline = IFPipeline(unet=unet, scheduler=if_scheduler(), requires_safety_checker=False, **parts)
    else:
        pipeline = IFSuperResolutionPipeline(
            unet=unet,
            scheduler=if_scheduler(),
            image_noising_scheduler=if_image_noising_scheduler(),
            requires_safety_checker=False,
            **parts,
        )
    with _building(folder) as partial:
        pipeline.save_pretrained(partial, safe_serialization=True)
        _mark_complete(partial, description)
    return folder


def write_t5_folder(folder: str | Path, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> Path:
    """A random T5-XXL encoder as ``sampling.text.load_t5`` reads IF's: text_encoder/ (config.json, sharded
    safetensors and their index) and tokenizer/ (the tiny test tokenizer: its ids are T5's special ids and a few
    hundred pieces, enough to encode prompts; the real vocabulary only changes which rows are read).

    Written tensor by tensor into shards of :data:`T5_SHARD_BYTES`, so building it holds one shard (about 2 GB)
    in memory, not the 9.5 GB bf16 encoder. Values follow T5's own initialisation (normal, std by layer;
    layer norms at 1), so the encoder's outputs are finite. A complete folder made with the same arguments
    is reused.
    """
    from safetensors.torch import save_file
    from transformers import T5EncoderModel

    from tiny_models import build_tokenizer

    folder = Path(folder)
    config = t5_config()
    description = {"architecture": "T5-XXL encoder", "dtype": str(dtype), "seed": seed, "config": T5_XXL_CONFIG}
    if _complete(folder, description):
        return folder
    with torch.device("meta"):
        shapes = [(name, tuple(p.shape)) for name, p in T5EncoderModel(config).named_parameters()]
    element = torch.empty((), dtype=dtype).element_size()
    shards, current, size = [], [], 0
    for name, shape in shapes:
        nbytes = element * torch.Size(shape).numel()
        if current and size + nbytes > T5_SHARD_BYTES:
            shards.append(current)
            current, size = [], 0
        current.append((name, shape))
        size += nbytes
    shards.append(current)

    generator = torch.Generator().manual_seed(seed)
    weight_map, total = {}, 0
    with _building(folder) as partial:
        model_dir = partial / "text_encoder"
        model_dir.mkdir(parents=True)
        config.dtype = dtype
        config.save_pretrained(model_dir)
        for index, shard in enumerate(shards, start=1):
            filename = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
            tensors = {name: _t5_initial_values(name, shape, dtype, generator) for name, shape in shard}
            save_file(tensors, model_dir / filename, metadata={"format": "pt"})
            total += sum(t.numel() * t.element_size() for t in tensors.values())
            weight_map.update({name: filename for name in tensors})
            del tensors
        index_file = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (model_dir / "model.safetensors.index.json").write_text(json.dumps(index_file, indent=2))
        build_tokenizer().save_pretrained(partial / "tokenizer")
        _mark_complete(partial, description)
    return folder


def _t5_initial_values(name: str, shape: tuple, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """T5's initialisation (transformers' T5PreTrainedModel._init_weights, factor 1) for one tensor."""
    if name.endswith("layer_norm.weight"):
        return torch.ones(shape, dtype=dtype)
    d_model, d_kv, heads, d_ff = (T5_XXL_CONFIG[k] for k in ("d_model", "d_kv", "num_heads", "d_ff"))
    stds = {
        "shared": 1.0,
        "q": (d_model * d_kv) ** -0.5,
        "k": d_model**-0.5,
        "v": d_model**-0.5,
        "o": (heads * d_kv) ** -0.5,
        "relative_attention_bias": d_model**-0.5,
        "wi_0": d_model**-0.5,
        "wi_1": d_model**-0.5,
        "wo": d_ff**-0.5,
    }
    layer = name.removesuffix(".weight").rsplit(".", 1)[-1]
    return torch.empty(shape, dtype=dtype).normal_(0.0, stds[layer], generator=generator)


class _building:
    """Build into ``<folder>.partial`` and move it into place only once complete, so an interrupted build
    (out of memory, disk full, Ctrl-C) never leaves a folder that looks usable."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.partial = folder.with_name(folder.name + ".partial")

    def __enter__(self) -> Path:
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        return self.partial

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            shutil.rmtree(self.partial, ignore_errors=True)
            return
        shutil.rmtree(self.folder, ignore_errors=True)
        self.partial.rename(self.folder)


def _complete(folder: Path, description: dict) -> bool:
    marker = folder / COMPLETE_MARKER
    try:
        return json.loads(marker.read_text()) == json.loads(json.dumps(description))
    except (OSError, ValueError):
        return False


def _mark_complete(folder: Path, description: dict) -> None:
    (folder / COMPLETE_MARKER).write_text(json.dumps(description, indent=2))


# -- the architecture table ---------------------------------------------------------------------------------
def architecture_table() -> list[str]:
    """Markdown lines: each architecture's layout, its parameters counted here, its card's figure."""
    lines = [
        "| architecture | stage | widths (block_out_channels) | layers per block | parameters counted | card | "
        "difference | source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for table in (ARCHITECTURES, REFERENCE_ARCHITECTURES):
        for name, architecture in table.items():
            counted, card = parameter_count(name), architecture.card_parameters
            config = architecture.config
            lines.append(
                f"| {name} | {architecture.stage} | {config['block_out_channels']} | {config['layers_per_block']} | "
                f"{counted / 1e6:,.1f}M | {card / 1e6:,.0f}M | {100 * (counted - card) / card:+.1f} % | "
                f"{architecture.source} |"
            )
    counted, card = t5_parameter_count(), if_models.T5_XXL_PARAMETER_COUNT
    lines.append(
        f"| T5-XXL encoder | text | d_model 4096, d_ff 10240 | 24 | {counted / 1e6:,.1f}M | {card / 1e6:,.0f}M | "
        f"{100 * (counted - card) / card:+.1f} % | {T5_SOURCE} |"
    )
    return lines


if __name__ == "__main__":
    print("\n".join(architecture_table()))
