"""DeepFloyd IF's T5 encoder from the single files ComfyUI users have, and a tokenizer that gives IF's ids.

Flux and SD3 users keep Google's T5 v1.1 XXL encoder (the network IF-I's ``text_encoder/`` holds) as one
file in ``models/text_encoders``: ``t5xxl_fp16.safetensors``, ``t5xxl_fp8_e4m3fn.safetensors``,
``t5xxl_fp8_e4m3fn_scaled.safetensors``... Those files use transformers' T5 encoder names
(``shared.weight``, ``encoder.block.{i}.layer.0.SelfAttention.q.weight``, ...), sometimes under a prefix
(``text_encoders.t5xxl.transformer.`` in checkpoints that bundle their text encoders), and store the weights
in fp32/fp16/bf16 or in fp8, where a weight is the fp8 value times a float32 scale:

* ComfyUI's "scaled fp8" files mark themselves with a ``scaled_fp8`` tensor and give a layer's scale as
  ``<layer>.scale_weight`` (``<layer>.scale_input`` only serves fp8 matmuls: ignored here);
* ComfyUI's newer quantized files give it as ``<layer>.weight_scale`` next to ``<layer>.comfy_quant``
  (JSON bytes naming the format) or the header's ``_quantization_metadata``. Only tensor-wise float8 is
  read; block-scaled and 4-bit/int8 formats are refused with the fix (use the fp16 file).

:func:`t5_file_problem` says from the safetensors header alone whether a file holds such an encoder (the
model lists call it for every file), :func:`describe_t5_file` gives its transformers config and storage,
:func:`load_t5_file_model` builds a ``T5EncoderModel`` from it exactly as ``from_pretrained`` builds one
from a folder, and :func:`load_if_tokenizer` picks the first tokenizer folder that gives IF's token ids.
No ComfyUI import.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .model_errors import LoadCancelled, ModelLoadError, first_line
from .model_folders import PICKLE_SUFFIXES
from .safetensors_headers import LENGTH_BYTES, read_safetensors_header

__all__ = [
    "IF_T5_XXL",
    "T5File",
    "describe_t5_file",
    "if_token_id_problem",
    "load_if_tokenizer",
    "load_t5_file_model",
    "load_t5_tokenizer",
    "t5_file_problem",
]

logger = logging.getLogger(__name__)

#: The encoder IF-I's text_encoder/ holds (Google's t5-v1_1-xxl), as ComfyUI's t5_config_xxl.json has it.
IF_T5_XXL = {"vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64}
#: T5's sentencepiece vocabulary (32000 pieces) plus the 100 <extra_id_N> sentinels: what IF's tokenizer holds.
T5_TOKENIZER_SIZE = 32100
#: Not stored in the weights: T5 v1.1's values (IF's text_encoder/config.json and ComfyUI's config).
RELATIVE_ATTENTION_MAX_DISTANCE = 128
LAYER_NORM_EPSILON = 1e-6

_USE_INSTEAD = (
    "DeepFloyd IF needs Google's T5 v1.1 XXL encoder: t5xxl_fp16.safetensors (Flux's and SD3's), "
    "t5xxl_fp8_e4m3fn(_scaled).safetensors, or an IF-I folder's text_encoder/"
)
_USE_FP16 = "use t5xxl_fp16.safetensors (or t5xxl_fp8_e4m3fn / t5xxl_fp8_e4m3fn_scaled) instead"
_REDOWNLOAD = "the file is damaged or incomplete: download it again"
_TOKENIZER_FIX = (
    "put IF-I's tokenizer/ folder (spiece.model or tokenizer.json, with tokenizer_config.json) in "
    "ComfyUI/models/text_encoders/<name>/tokenizer, or keep ComfyUI's comfy/text_encoders/t5_tokenizer"
)

_FINAL_NORM = "encoder.final_layer_norm.weight"
_EMBEDDINGS = ("shared.weight", "encoder.embed_tokens.weight")
_BIAS = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
_BLOCK = re.compile(r"encoder\.block\.(\d+)\.")
#: safetensors dtype names the loader reads, as torch dtypes and storage names.
_DTYPES = {
    "F32": (torch.float32, "fp32"),
    "F16": (torch.float16, "fp16"),
    "BF16": (torch.bfloat16, "bf16"),
    "F8_E4M3": (torch.float8_e4m3fn, "fp8_e4m3fn"),
    "F8_E5M2": (torch.float8_e5m2, "fp8_e5m2"),
}
_FP8 = {"F8_E4M3", "F8_E5M2"}
#: ComfyUI's quantization format names for tensor-wise float8 (comfy/quant_ops.py QUANT_ALGOS), by dtype.
_COMFY_FP8_FORMATS = {"float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}
#: Per-layer tensors a quantized file adds that the weights do not need (they serve fp8 matmuls).
_IGNORED_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant")
_SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
#: Per-layer tensors of formats this loader cannot dequantize (nvfp4's second scale, AWQ's zero points...).
_UNREADABLE_SUFFIXES = (".weight_scale_2", ".pre_quant_scale", ".weight_zero", ".weight_scalar")
#: Tensors some files carry beside the encoder: a full T5's decoder, ComfyUI's embedded tokenizer.
_IGNORED_PREFIXES = ("decoder.", "lm_head.")
_IGNORED_NAMES = ("spiece_model", "scaled_fp8")
_SIZE_NAMES = {512: "Small", 768: "Base", 1024: "Large", 2048: "XL"}

#: Token ids the real T5 vocabulary gives, published in huggingface/transformers
#: tests/models/t5/test_tokenization_t5.py (test_eos_in_input; test_tokenizer_integration, which pins t5-base
#: at revision 5a7ff2d8f5117c194c7e32ec1ccbf04642cca99b; test_fast_and_slow_same_result). t5-base and
#: T5 v1.1 (so IF) share that sentencepiece vocabulary.
_PUBLISHED_IDS = (
    ("A long paragraph for summarization.", (71, 307, 8986, 21, 4505, 1635, 1707, 5, 1)),
    ("Summary of the text.", (20698, 13, 8, 1499, 5, 1)),
    ("The quick brown fox jumps over the lazy dog.", (37, 1704, 4216, 3, 20400, 4418, 7, 147, 8, 19743, 1782, 5, 1)),
    (
        "BERT is designed to pre-train deep bidirectional representations from unlabeled text by jointly "
        "conditioning on both left and right context in all layers.",
        (272, 24203, 19, 876, 12, 554, 18, 9719, 1659, 2647, 26352, 6497, 7, 45, 73, 9339, 400, 26, 1499, 57)
        + (22801, 10760, 30, 321, 646, 11, 269, 2625, 16, 66, 7500, 5, 1),
    ),
)
#: Special tokens inside the text: (text, ids without the end token), from test_fast_and_slow_same_result.
_PUBLISHED_SPECIAL_IDS = ("<pad> Today is <unk> nice day </s>", (0, 1960, 19, 2, 1245, 239, 1))
_IF_PROMPT_TOKENS = 77  # IFPipeline pads and truncates prompts to 77 tokens


class _NotIFT5(Exception):
    """Why a file is not a T5 encoder this loader reads (``reason``), and what to do instead (``fix``)."""

    def __init__(self, reason: str, fix: str = _USE_INSTEAD):
        super().__init__(reason)
        self.reason, self.fix = reason, fix


@dataclass(frozen=True)
class _Tensor:
    """Where one model tensor is in the file: its name there, its dtype, and its scale's name (fp8)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    scale: str | None = None


@dataclass(frozen=True)
class T5File:
    """A single-file T5 v1.1 encoder, as its header describes it (nothing of its data read)."""

    path: Path
    prefix: str  # before every tensor name ("" for Flux's and SD3's t5xxl files)
    vocab_size: int  # embedding rows (T5: 32128, the tokenizer's 32100 ids padded)
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_heads: int
    relative_attention_num_buckets: int
    storage: str  # fp32, fp16, bf16, fp8_e4m3fn, fp8_e5m2, with "_scaled" when fp8 weights carry scales
    parameter_count: int  # of the encoder, the tied embedding counted once
    tensors: dict[str, _Tensor] = field(repr=False)  # model key -> where it is in the file

    @property
    def is_if_t5_xxl(self) -> bool:
        """Whether it has the size of IF's T5-XXL (d_model 4096, 24 layers, ...)."""
        return all(getattr(self, name) == value for name, value in IF_T5_XXL.items())

    def config_kwargs(self) -> dict:
        """Arguments for ``transformers.T5Config``: T5 v1.1's gated-GELU encoder at this file's size."""
        return {
            "vocab_size": self.vocab_size,
            "d_model": self.d_model,
            "d_kv": self.d_kv,
            "d_ff": self.d_ff,
            "num_layers": self.num_layers,
            "num_decoder_layers": self.num_layers,
            "num_heads": self.num_heads,
            "relative_attention_num_buckets": self.relative_attention_num_buckets,
            "relative_attention_max_distance": RELATIVE_ATTENTION_MAX_DISTANCE,
            "layer_norm_epsilon": LAYER_NORM_EPSILON,
            "feed_forward_proj": "gated-gelu",
            "dropout_rate": 0.1,  # IF's config; unused in eval mode
            "is_encoder_decoder": False,
            "use_cache": False,
            "tie_word_embeddings": False,  # T5 v1.1 has its own LM head; the encoder's embeddings stay tied
            "pad_token_id": 0,
            "eos_token_id": 1,
            "decoder_start_token_id": 0,
        }

    def t5_config(self):
        from transformers import T5Config

        return T5Config(**self.config_kwargs())


def t5_file_problem(path: str | os.PathLike, *, xxl_only: bool = False) -> str | None:
    """None when ``path`` holds a T5 v1.1 encoder this loader reads, else a short reason.

    Reads the safetensors header only (bounded, no tensor data), so it is fast enough for every file of a
    model folder. ``xxl_only`` also refuses T5 v1.1 encoders of another size than IF's T5-XXL.
    """
    try:
        t5 = _describe(Path(path))
    except _NotIFT5 as refusal:
        return refusal.reason
    if xxl_only and not t5.is_if_t5_xxl:
        return _size_reason(t5)
    return None


def holds_t5_encoder(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a T5 v1.1 encoder this loader reads (False for any other model), for a loader's
    list; a damaged or unreadable file raises ModelLoadError naming the file, the problem and the fix, so the
    list can say why it left the file out. Reads the header only."""
    try:
        _describe(Path(path))
    except _NotIFT5 as refusal:
        if refusal.fix == _REDOWNLOAD:
            raise ModelLoadError(f"{path} is {refusal.reason}: {refusal.fix}") from None
        return False
    return True


def describe_t5_file(path: str | os.PathLike) -> T5File:
    """The file's encoder (config, storage, tensors), or a ModelLoadError naming the file, why and the fix."""
    path = Path(path)
    try:
        return _describe(path)
    except _NotIFT5 as refusal:
        message = f"{path} cannot be used as DeepFloyd IF's T5 encoder: it is {refusal.reason}. {refusal.fix}"
        raise ModelLoadError(message) from None


def load_t5_file_model(
    t5: T5File,
    *,
    weight_dtype: torch.dtype | None,
    should_stop: Callable[[], bool] | None = None,
    **from_pretrained_kwargs,
):
    """A ``T5EncoderModel`` with the file's weights, built by ``from_pretrained`` as from a folder.

    ``weight_dtype`` is the precision's dtype (fp32/fp16/bf16): each tensor is read, dequantized (fp8 as
    float32 times its scale) and cast once to the dtype ``from_pretrained`` keeps it in (T5 keeps ``wo`` in
    fp32 under fp16), so the weights equal those a folder with the same values gives. ``None`` (8-bit/4-bit)
    leaves float tensors in the file's dtype and dequantizes fp8 ones to fp16, for bitsandbytes to quantize.
    ``from_pretrained_kwargs`` are the dtype / quantization_config / device_map the folder loader passes.

    Peak memory: one copy of the model in ``weight_dtype``, plus one tensor in float32 while an fp8 tensor is
    dequantized. Tensors already in their final dtype are not copied: they stay in the file's memory map
    (page cache) and become the model's parameters. For 8-bit/4-bit the state dict is held while
    transformers quantizes it: the file's pages plus, for an fp8 file, a dequantized fp16 copy (9.5 GB for
    T5-XXL), then the quantized model.
    """
    from transformers import T5EncoderModel

    config = t5.t5_config()
    _check_against_model(t5, config)
    keep_fp32 = _modules_kept_in_fp32(T5EncoderModel, weight_dtype)
    state_dict = _read_state_dict(t5, weight_dtype, keep_fp32, should_stop)
    try:
        return T5EncoderModel.from_pretrained(None, config=config, state_dict=state_dict, **from_pretrained_kwargs)
    finally:
        state_dict.clear()


def if_token_id_problem(tokenizer) -> str | None:
    """None when ``tokenizer`` gives the token ids IF's T5 tokenizer gives, else why not.

    Checks T5's special ids (pad 0, end 1, unknown 2), its 32100 tokens, the ids the real T5 vocabulary
    gives for sentences published with transformers' tests, and IF's wrapping: the end token appended,
    truncation to 77 tokens keeping the end token, padding with 0 and an attention mask of the real tokens.
    """
    special = (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id)
    if special != (0, 1, 2):
        return f"its pad, end and unknown token ids are {special}, not T5's (0, 1, 2)"
    if len(tokenizer) != T5_TOKENIZER_SIZE:
        return f"it has {len(tokenizer)} tokens, not the {T5_TOKENIZER_SIZE} of T5's vocabulary"
    for text, expected in _PUBLISHED_IDS:
        ids = tuple(tokenizer(text).input_ids)
        if ids != expected:
            return f"it encodes {text!r} as {_shorten(ids)}, not T5's {_shorten(expected)}"
    text, expected = _PUBLISHED_SPECIAL_IDS
    ids = tuple(tokenizer(text, add_special_tokens=False).input_ids)
    if ids != expected:
        return f"it encodes {text!r} as {_shorten(ids)}, not T5's {_shorten(expected)}"
    # IFPipeline's call: a long text keeps its first 76 tokens and the end token; a short one is padded.
    long_text, long_ids = _PUBLISHED_IDS[3]
    short_text, short_ids = _PUBLISHED_IDS[1]
    batch = tokenizer(
        [" ".join([long_text] * 3), short_text],
        padding="max_length",
        max_length=_IF_PROMPT_TOKENS,
        truncation=True,
        add_special_tokens=True,
    )
    padding = _IF_PROMPT_TOKENS - len(short_ids)
    expected_ids = [list((long_ids[:-1] * 3)[: _IF_PROMPT_TOKENS - 1]) + [1], list(short_ids) + [0] * padding]
    expected_mask = [[1] * _IF_PROMPT_TOKENS, [1] * len(short_ids) + [0] * padding]
    if [list(row) for row in batch.input_ids] != expected_ids:
        return "it does not truncate and pad to 77 tokens as IF does (the end token kept, padding with id 0)"
    if [list(row) for row in batch.attention_mask] != expected_mask:
        return "its attention mask does not cover exactly the prompt's tokens and the end token"
    return None


def load_t5_tokenizer(folder: str | os.PathLike):
    """A T5 tokenizer from a folder: spiece.model (sentencepiece) or tokenizer.json (tokenizers)."""
    from transformers import T5Tokenizer, T5TokenizerFast

    folder = Path(folder)
    # transformers 4 reads spiece.model with T5Tokenizer and tokenizer.json with T5TokenizerFast; in 5 they
    # are one class that reads either (tokenizer.json first).
    cls = T5Tokenizer if (folder / "spiece.model").is_file() else T5TokenizerFast
    try:
        return cls.from_pretrained(str(folder))
    except Exception as error:
        if not (folder / "tokenizer.json").is_file() and not _protobuf_installed():
            # transformers 5 converts spiece.model to a fast tokenizer through protobuf, and when protobuf is
            # missing falls back to a tiktoken reader whose error says nothing about the real cause.
            raise RuntimeError(
                "reading spiece.model without tokenizer.json needs the protobuf package (pip install protobuf)"
            ) from error
        raise


def load_if_tokenizer(folders: Sequence[str | os.PathLike]) -> tuple[object, Path]:
    """The tokenizer of the first folder that loads and gives IF's token ids, and that folder.

    Folders that fail (missing, no tokenizer files, another vocabulary such as the tests' tiny tokenizer)
    are skipped; when none passes, a ModelLoadError lists each folder with its reason and the fix.
    """
    tried = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            tried.append(f"{folder} does not exist")
            continue
        if not any((folder / name).is_file() for name in ("spiece.model", "tokenizer.json")):
            tried.append(f"{folder} has no spiece.model or tokenizer.json")
            continue
        try:
            tokenizer = load_t5_tokenizer(folder)
        except Exception as error:  # noqa: BLE001 - any failure means: try the next folder
            tried.append(f"{folder} does not load ({type(error).__name__}: {first_line(error)})")
            continue
        problem = if_token_id_problem(tokenizer)
        if problem is None:
            return tokenizer, folder
        tried.append(f"{folder}: {problem}")
        logger.info("T5 tokenizer %s skipped: %s", folder, problem)
    listed = "; ".join(tried) if tried else "no tokenizer folder was given"
    raise ModelLoadError(f"no tokenizer giving DeepFloyd IF's T5 token ids was found ({listed}): {_TOKENIZER_FIX}")


# -- the header ----------------------------------------------------------------------------------------------------
def _describe(path: Path) -> T5File:
    if not path.is_file():
        raise _NotIFT5("a missing file" if not path.exists() else "not a file", "pick an existing .safetensors file")
    if not path.name.endswith(".safetensors"):
        raise _NotIFT5(_not_safetensors_reason(path))
    try:
        header = read_safetensors_header(path)
    except ModelLoadError as error:
        raise _NotIFT5(_header_problem(error), _REDOWNLOAD) from error
    metadata = header.get("__metadata__")
    tensors = {name: entry for name, entry in header.items() if name != "__metadata__"}
    _check_data_size(path, tensors)
    prefix = _t5_prefix(tensors)
    local = {name[len(prefix) :]: entry for name, entry in tensors.items() if name.startswith(prefix)}
    local = {name: entry for name, entry in local.items() if not name.startswith(_IGNORED_PREFIXES)}
    _check_variant(local)
    dims = _dimensions(local)
    expected = _expected_shapes(**dims)
    sources = _tensor_sources(local, expected, dims["d_model"])
    _check_quantization(metadata, prefix, sources)
    parameters = sum(_numel(expected[key]) for key in expected)
    return T5File(
        path=path,
        prefix=prefix,
        storage=_storage(sources),
        parameter_count=parameters,
        tensors=sources,
        **dims,
    )


def _not_safetensors_reason(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gguf"):
        return "a GGUF file (ComfyUI-GGUF's format), which this loader does not read: use a .safetensors file"
    if name.endswith(PICKLE_SUFFIXES):
        return f"a pickle checkpoint ({path.suffix}), which is unsafe to load: use a .safetensors file"
    return "not a .safetensors file"


def _header_problem(error: ModelLoadError) -> str:
    text = str(error)
    marker = "is not a valid safetensors file: "
    if marker in text:
        return "a damaged safetensors file (" + text.split(marker, 1)[1].split(". The file", 1)[0] + ")"
    return "an unreadable file (" + first_line(error) + ")"


def _check_data_size(path: Path, tensors: dict) -> None:
    """A truncated download keeps its header: the data it describes must fit in the file."""
    try:
        with open(path, "rb") as handle:
            (header_length,) = struct.unpack("<Q", handle.read(LENGTH_BYTES))
        actual = path.stat().st_size
    except OSError as error:  # removed or made unreadable since its header was read
        raise _NotIFT5(f"an unreadable file ({error.strerror or type(error).__name__})", _REDOWNLOAD) from error
    end = 0
    for name, entry in tensors.items():
        offsets = entry.get("data_offsets")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise _NotIFT5(f"a damaged safetensors file (tensor {name!r} has no data offsets)", _REDOWNLOAD)
        begin, stop = offsets
        size = _numel(entry["shape"]) * _item_size(entry["dtype"])
        if size is not None and stop - begin != size:
            raise _NotIFT5(f"a damaged safetensors file ({name!r} holds {stop - begin} bytes, not {size})", _REDOWNLOAD)
        end = max(end, stop)
    expected = LENGTH_BYTES + header_length + end
    if actual < expected:
        raise _NotIFT5(f"a truncated file ({actual} bytes, its header describes {expected})", _REDOWNLOAD)


def _t5_prefix(tensors: dict) -> str:
    prefixes = [
        name[: -len(_FINAL_NORM)]
        for name in tensors
        if name.endswith(_FINAL_NORM) and (name == _FINAL_NORM or name[-len(_FINAL_NORM) - 1] == ".")
    ]
    if len(prefixes) > 1:
        raise _NotIFT5(f"a file with {len(prefixes)} T5 encoders (under {', '.join(sorted(prefixes))})")
    if prefixes:
        return prefixes[0]
    raise _NotIFT5(_foreign_reason(tensors))


def _foreign_reason(tensors: dict) -> str:
    """What a file without a T5 encoder holds, as far as its tensor names tell."""
    names = list(tensors)

    def has(fragment: str) -> bool:
        return any(fragment in name for name in names)

    if has("text_model.encoder.layers.") or has("transformer.resblocks."):
        return "a CLIP text encoder, not T5"
    if has("model.layers.0.self_attn."):
        return "a decoder-only language model (Llama, Qwen, Gemma, Mistral...), not T5"
    if has("encoder.layer.0.attention."):
        return "a BERT-style text encoder, not T5"
    if has("model.diffusion_model.") or has("double_blocks.") or has("input_blocks.") or has("down_blocks."):
        return "a diffusion model, not a text encoder"
    if has("encoder.block.") or has("encoder.layers."):
        return "an encoder without encoder.final_layer_norm.weight, so not a complete T5 encoder"
    example = f" (it holds {names[0]!r}, ...)" if names else " (it holds no tensors)"
    return "not a T5 encoder" + example


def _check_variant(local: dict) -> None:
    """Refuse the T5 relatives that share the key names but are other networks."""
    if any(re.fullmatch(r"encoder\.block\.\d+\.layer\.1\.DenseReluDense\.wi\.weight", name) for name in local):
        raise _NotIFT5("a T5 v1.0 encoder (ReLU feed-forward, DenseReluDense.wi), not T5 v1.1's gated GELU")
    embedding = next((local[name] for name in _EMBEDDINGS if name in local), None)
    rows = embedding["shape"][0] if embedding and embedding["shape"] else None
    if "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" in local:
        if rows == 256384:
            raise _NotIFT5("an umT5 encoder (Wan's), not T5 v1.1")
        if rows == 32128:
            raise _NotIFT5("a Pile-T5 encoder (AuraFlow's: umT5 layout, another vocabulary), not T5 v1.1")
        raise _NotIFT5("an umT5-style encoder (a relative attention bias in every block), not T5 v1.1")
    if embedding is None:
        raise _NotIFT5("a T5 encoder without its token embedding (shared.weight)")
    if rows == 250112:
        raise _NotIFT5("an mT5 encoder (multilingual, e.g. HunyuanDiT's), not T5 v1.1")
    if rows is not None and rows < 4096:
        raise _NotIFT5(f"a byte-level encoder such as byT5 ({rows} embedding rows), not T5 v1.1")
    if rows != IF_T5_XXL["vocab_size"]:
        raise _NotIFT5(f"a T5-layout encoder with {rows} embedding rows, not T5 v1.1's {IF_T5_XXL['vocab_size']}")


def _dimensions(local: dict) -> dict:
    embedding = next(local[name] for name in _EMBEDDINGS if name in local)
    vocab_size, d_model = _shape(embedding, 2, "the token embedding")
    bias = local.get(_BIAS)
    if bias is None:
        raise _NotIFT5("a T5 encoder without block 0's relative attention bias")
    buckets, num_heads = _shape(bias, 2, "the relative attention bias")
    query = local.get("encoder.block.0.layer.0.SelfAttention.q.weight")
    gate = local.get("encoder.block.0.layer.1.DenseReluDense.wi_0.weight")
    if query is None or gate is None:
        missing = "SelfAttention.q" if query is None else "DenseReluDense.wi_0"
        raise _NotIFT5(f"a T5 encoder without block 0's {missing} weight")
    inner, _ = _shape(query, 2, "block 0's query weight")
    d_ff, _ = _shape(gate, 2, "block 0's wi_0 weight")
    if num_heads == 0 or inner % num_heads:
        raise _NotIFT5(f"a T5 encoder whose query width {inner} does not split into {num_heads} heads")
    blocks = sorted({int(match.group(1)) for name in local if (match := _BLOCK.match(name))})
    if blocks != list(range(len(blocks))):
        raise _NotIFT5(f"a T5 encoder with blocks {blocks}, not numbered 0 to {len(blocks) - 1}")
    return {
        "vocab_size": vocab_size,
        "d_model": d_model,
        "d_kv": inner // num_heads,
        "d_ff": d_ff,
        "num_layers": len(blocks),
        "num_heads": num_heads,
        "relative_attention_num_buckets": buckets,
    }


def _expected_shapes(
    vocab_size: int,
    d_model: int,
    d_kv: int,
    d_ff: int,
    num_layers: int,
    num_heads: int,
    relative_attention_num_buckets: int,
) -> dict[str, list[int]]:
    """transformers' T5 v1.1 encoder state dict (without the tied encoder.embed_tokens.weight)."""
    inner = d_kv * num_heads
    shapes = {"shared.weight": [vocab_size, d_model], _FINAL_NORM: [d_model]}
    for index in range(num_layers):
        attention = f"encoder.block.{index}.layer.0.SelfAttention."
        feed_forward = f"encoder.block.{index}.layer.1.DenseReluDense."
        shapes.update(
            {
                attention + "q.weight": [inner, d_model],
                attention + "k.weight": [inner, d_model],
                attention + "v.weight": [inner, d_model],
                attention + "o.weight": [d_model, inner],
                f"encoder.block.{index}.layer.0.layer_norm.weight": [d_model],
                feed_forward + "wi_0.weight": [d_ff, d_model],
                feed_forward + "wi_1.weight": [d_ff, d_model],
                feed_forward + "wo.weight": [d_model, d_ff],
                f"encoder.block.{index}.layer.1.layer_norm.weight": [d_model],
            }
        )
    shapes[_BIAS] = [relative_attention_num_buckets, num_heads]
    return shapes


def _tensor_sources(local: dict, expected: dict, d_model: int) -> dict[str, _Tensor]:
    """Match the file's tensors to the model's: every expected one present with its shape, nothing unknown."""
    used = set()
    sources = {}
    for key, shape in expected.items():
        name = key
        if key == "shared.weight" and key not in local:
            name = "encoder.embed_tokens.weight"  # files that keep only the encoder's (tied) copy
        entry = local.get(name)
        if entry is None:
            raise _NotIFT5(f"a T5 encoder without {name} (an incomplete file?)", _REDOWNLOAD)
        if entry["shape"] != shape:
            raise _NotIFT5(
                f"a T5 encoder whose {name} has shape {entry['shape']}, not {shape} (d_model {d_model})",
                _REDOWNLOAD,
            )
        layer = name[: -len(".weight")]
        scales = [layer + suffix for suffix in _SCALE_SUFFIXES if layer + suffix in local]
        if any(layer + suffix in local for suffix in _UNREADABLE_SUFFIXES):
            raise _NotIFT5(f"a T5 encoder quantized in a format this loader cannot read ({name})", _USE_FP16)
        if entry["dtype"] not in _DTYPES:
            raise _NotIFT5(_unreadable_dtype_reason(name, entry["dtype"], scales), _USE_FP16)
        if len(scales) > 1:
            raise _NotIFT5(f"a file with two scales for {name} ({', '.join(scales)})", _USE_FP16)
        scale = scales[0] if scales else None
        if scale is not None:
            if entry["dtype"] not in _FP8:
                raise _NotIFT5(f"a file with a scale for {name}, which is not fp8 but {entry['dtype']}", _USE_FP16)
            scale_entry = local[scale]
            if _numel(scale_entry["shape"]) != 1:
                raise _NotIFT5(
                    f"a T5 encoder quantized with block or channel scales ({scale} has shape {scale_entry['shape']}"
                    "), which this loader cannot read",
                    _USE_FP16,
                )
            if scale_entry["dtype"] not in ("F32", "F16", "BF16"):
                raise _NotIFT5(f"a file whose scale {scale} is {scale_entry['dtype']}", _USE_FP16)
        sources[key] = _Tensor(name=name, dtype=entry["dtype"], shape=tuple(shape), scale=scale)
        used.add(name)
        used.update(scales)
        used.update(layer + suffix for suffix in _IGNORED_SUFFIXES if layer + suffix in local)
    if "shared.weight" in local and "encoder.embed_tokens.weight" in local:
        duplicate = local["encoder.embed_tokens.weight"]
        if duplicate["shape"] != local["shared.weight"]["shape"]:
            raise _NotIFT5("a T5 encoder whose encoder.embed_tokens.weight and shared.weight differ in shape")
        used.add("encoder.embed_tokens.weight")  # the tied copy: shared.weight is read
    unknown = sorted(set(local) - used - set(_IGNORED_NAMES))
    if unknown:
        raise _NotIFT5(f"a T5 encoder with tensors T5 v1.1 does not have ({', '.join(unknown[:3])})")
    return sources


def _unreadable_dtype_reason(name: str, dtype: str, scales: list[str]) -> str:
    if dtype == "U8" and scales:
        return f"a T5 encoder quantized to 4 bits (nvfp4-style packed {name}), which this loader cannot read"
    if dtype in ("I8", "U8"):
        return f"a T5 encoder quantized to {dtype.lower()} ({name}), which this loader cannot read"
    return f"a T5 encoder stored as {dtype} ({name}), which this loader does not read"


def _check_quantization(metadata: object, prefix: str, sources: dict[str, _Tensor]) -> None:
    """The header's ``_quantization_metadata`` (ComfyUI's mixed-precision files) must name fp8 formats only."""
    if not isinstance(metadata, dict) or "_quantization_metadata" not in metadata:
        return
    try:
        layers = json.loads(metadata["_quantization_metadata"]).get("layers", {})
        formats = {name: (value.get("format") if isinstance(value, dict) else value) for name, value in layers.items()}
    except (ValueError, TypeError, AttributeError) as error:
        raise _NotIFT5(f"a file with unreadable quantization metadata ({error})", _USE_FP16) from error
    for layer, quant_format in formats.items():
        if quant_format not in _COMFY_FP8_FORMATS:
            reason = f"a T5 encoder quantized as {quant_format!r} ({layer}), which this loader cannot read"
            raise _NotIFT5(reason, _USE_FP16)
    stored = {source.name[: -len(".weight")]: source.dtype for source in sources.values()}
    for layer, quant_format in formats.items():
        dtype = stored.get(layer[len(prefix) :] if layer.startswith(prefix) else layer)
        if dtype is not None and dtype != _COMFY_FP8_FORMATS[quant_format]:
            raise _NotIFT5(f"a file whose metadata says {layer} is {quant_format} but stores it as {dtype}", _USE_FP16)


def _storage(sources: dict[str, _Tensor]) -> str:
    """The dtype most linear weights have (by name), with "_scaled" when fp8 weights carry scales."""
    linear = [source for key, source in sources.items() if ".SelfAttention." in key or ".DenseReluDense." in key]
    linear = [source for source in linear if "relative_attention_bias" not in source.name] or list(sources.values())
    dtype, _ = Counter(source.dtype for source in linear).most_common(1)[0]
    name = _DTYPES[dtype][1]
    return name + "_scaled" if any(source.scale for source in linear) else name


def _size_reason(t5: T5File) -> str:
    size = _SIZE_NAMES.get(t5.d_model)
    named = f" (T5 v1.1 {size}?)" if size else ""
    return (
        f"a T5 v1.1 encoder of another size{named}: d_model {t5.d_model}, {t5.num_layers} layers, not IF's T5-XXL "
        f"(d_model {IF_T5_XXL['d_model']}, {IF_T5_XXL['num_layers']} layers)"
    )


def _shape(entry: dict, dims: int, what: str) -> list[int]:
    shape = entry["shape"]
    if len(shape) != dims:
        raise _NotIFT5(f"a T5 encoder whose {what} has shape {shape}", _REDOWNLOAD)
    return shape


def _numel(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def _item_size(dtype: str) -> int | None:
    sizes = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2}
    return sizes.get(dtype, 1 if dtype in ("F8_E4M3", "F8_E5M2", "I8", "U8", "BOOL") else None)


# -- loading ------------------------------------------------------------------------------------------------------
def _check_against_model(t5: T5File, config) -> None:
    """The file's tensors against the state dict transformers' T5EncoderModel has for this config (on the meta
    device: nothing allocated), so a renamed or reshaped parameter in a later transformers fails here, naming
    the key, rather than being initialised at random."""
    from transformers import T5EncoderModel

    with torch.device("meta"):
        reference = T5EncoderModel(config)
    expected = {key: tuple(value.shape) for key, value in reference.state_dict().items()}
    expected.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight
    missing = sorted(set(expected) - set(t5.tensors))
    if missing:
        raise ModelLoadError(f"{t5.path} has no tensor for the model's {missing[0]}: {_REDOWNLOAD}")
    for key, source in t5.tensors.items():
        if key not in expected:
            raise ModelLoadError(f"{t5.path} has {t5.prefix}{source.name}, which T5EncoderModel does not have")
        if source.shape != expected[key]:
            raise ModelLoadError(
                f"{t5.path} has {t5.prefix}{source.name} of shape {list(source.shape)}, but T5EncoderModel's {key} "
                f"is {list(expected[key])}"
            )


def _modules_kept_in_fp32(model_class, dtype: torch.dtype | None) -> set[str]:
    """The module names ``from_pretrained`` keeps in fp32 at ``dtype`` (T5: ``wo`` under fp16), as transformers
    4.38+ decides it: ``_keep_in_fp32_modules`` for fp16, ``_keep_in_fp32_modules_strict`` for fp16 and bf16."""
    kept = set()
    if dtype == torch.float16:
        kept.update(getattr(model_class, "_keep_in_fp32_modules", None) or ())
    if dtype in (torch.float16, torch.bfloat16):
        kept.update(getattr(model_class, "_keep_in_fp32_modules_strict", None) or ())
    return kept


def _read_state_dict(
    t5: T5File, dtype: torch.dtype | None, keep_fp32: set[str], should_stop: Callable[[], bool] | None
) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    state_dict = {}
    try:
        with safe_open(str(t5.path), framework="pt", device="cpu") as handle:
            for key, source in t5.tensors.items():
                if should_stop is not None and should_stop():
                    raise LoadCancelled(f"loading the T5 text encoder {t5.path} was cancelled")
                tensor = handle.get_tensor(t5.prefix + source.name)
                if source.dtype in _FP8:
                    _check_comfy_quant(handle, t5, source)
                    tensor = tensor.to(torch.float32)
                    if source.scale is not None:
                        tensor *= handle.get_tensor(t5.prefix + source.scale).to(torch.float32).reshape(())
                if dtype is None:  # 8-bit/4-bit: bitsandbytes casts and quantizes; fp8 needs a float dtype first
                    target = torch.float16 if source.dtype in _FP8 else tensor.dtype
                else:
                    target = torch.float32 if keep_fp32 & set(key.split(".")) else dtype
                state_dict[key] = tensor.to(target)
    except (SafetensorError, OSError) as error:  # a short read, a bad offset: safetensors names no file
        raise ModelLoadError(
            f"could not read {t5.path} ({type(error).__name__}: {first_line(error)}): {_REDOWNLOAD}"
        ) from error
    return state_dict


def _check_comfy_quant(handle, t5: T5File, source: _Tensor) -> None:
    """A ``<layer>.comfy_quant`` tensor names the layer's format (JSON bytes): only tensor-wise fp8 is read."""
    name = t5.prefix + source.name[: -len(".weight")] + ".comfy_quant"
    if name not in handle.keys():
        return
    try:
        config = json.loads(bytes(handle.get_tensor(name).to(torch.uint8).tolist()).decode("utf-8"))
        quant_format = config.get("format")
    except (ValueError, AttributeError) as error:
        raise ModelLoadError(f"{t5.path}: {name} is not the JSON ComfyUI writes ({error}): {_REDOWNLOAD}") from error
    if _COMFY_FP8_FORMATS.get(quant_format) != source.dtype:
        raise ModelLoadError(
            f"{t5.path} stores {source.name} quantized as {quant_format!r} (in {source.dtype}), which this loader "
            f"cannot read: {_USE_FP16}"
        )


# -- tokenizers ---------------------------------------------------------------------------------------------------
def _protobuf_installed() -> bool:
    try:
        return importlib.util.find_spec("google.protobuf") is not None
    except ModuleNotFoundError:  # no "google" namespace package at all
        return False


def _shorten(ids: Sequence[int]) -> str:
    ids = list(ids)
    return str(ids) if len(ids) <= 12 else str(ids[:12])[:-1] + ", ...]"
