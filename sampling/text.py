"""DeepFloyd IF's T5 text encoder: loading it, and encoding one prompt per view.

``load_t5`` reads the T5-XXL encoder IF uses (from an IF-I folder's
``text_encoder/`` + ``tokenizer/``, a plain transformers T5 folder, a Hub id, or
a single .safetensors file such as Flux's and SD3's ``t5xxl_fp16.safetensors``
with a tokenizer folder: :mod:`.t5_single_file`) in fp32/fp16/bf16 or, through
bitsandbytes, 8-bit/4-bit. ``encode_prompts``
encodes exactly as diffusers' ``IFPipeline.encode_prompt(prompt,
clean_caption=False)`` does, one prompt at a time as the paper's
``generate.py`` does, so embeddings match the published code bit for bit.

A Hub id is downloaded first (only T5's files, bounded in time and cancellable:
:mod:`.hub`), then loaded like a local folder. Errors share the stage loader's
messages (missing folders, gated Hub repos, pickle files, damaged safetensors).
No ComfyUI import.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .device_memory import OUT_OF_MEMORY_ERRORS, empty_device_caches, free_module
from .errors import SamplingInputError
from .hub import ShouldStop, download_weights, resolve_source
from .if_models import COMFY_DIFFUSERS_DIR, T5_HUB_ID, T5_XXL_PARAMETER_COUNT
from .library_versions import transformers_dtype_kwarg
from .model_errors import LoadCancelled, ModelLoadError, first_line
from .model_folders import (
    TRANSFORMERS_WEIGHTS_NAME,
    has_variant_files,
    missing_folder_message,
    pickle_only_message,
    read_json_object,
    try_read_json_object,
    weight_file_patterns,
    weight_files,
)
from .multiview import PromptEmbeddings
from .safetensors_headers import check_safetensors_files, safetensors_parameter_count
from .scrubbing import scrub_secrets
from .t5_single_file import (
    IF_T5_XXL,
    T5File,
    describe_t5_file,
    load_if_tokenizer,
    load_t5_file_model,
    load_t5_tokenizer,
)

__all__ = [
    "PRECISIONS",
    "LoadCancelled",
    "T5Encoder",
    "concept_token_span",
    "encode_prompts",
    "estimated_t5_bytes",
    "load_t5",
    "release_t5",
    "t5_file_patterns",
]

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16", "8bit", "4bit")
MAX_PROMPT_TOKENS = 77  # T5 handles longer text, but IF was trained on 77 tokens

BITSANDBYTES_MESSAGE = (
    "8-bit/4-bit needs the bitsandbytes package (pip install bitsandbytes) on a machine where it runs; "
    "pick fp16/bf16/fp32 instead"
)
_T5_LAYOUT = (
    "text_encoder/ (config.json + model.safetensors, or its shards / fp16 variant) and tokenizer/ "
    "(spiece.model or tokenizer.json, with tokenizer_config.json), as in an IF-I repository; or a T5 "
    "model folder holding both"
)
_T5_WHERE = (
    f"{COMFY_DIFFUSERS_DIR}/<folder> (an IF-I folder such as {COMFY_DIFFUSERS_DIR}/IF-I-XL-v1.0: its "
    "text_encoder/ and tokenizer/ are used) or ComfyUI/models/text_encoders/<folder> (just text_encoder/ and "
    "tokenizer/)"
)
_T5_TOKENIZER_FILES = ("spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_BYTES_PER_PARAMETER = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "8bit": 1.1, "4bit": 0.6}
_PRECISION_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class T5Encoder:
    """A loaded T5 encoder. ``device`` is where token ids go (the model's device)."""

    tokenizer: object
    model: object
    device: torch.device
    precision: str
    source: str
    variant: str | None = None  # the weight set read: "fp16" for a folder's fp16 files; a single file's storage
    tokenizer_source: str | None = None  # the tokenizer folder a single file's encoder uses
    _released: bool = field(default=False, repr=False)

    @property
    def released(self) -> bool:
        return self._released

    @property
    def dtype(self) -> torch.dtype:
        return self._live().dtype

    @property
    def embedding_dim(self) -> int:
        return self._live().config.d_model

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self._live().parameters())

    @property
    def estimated_bytes(self) -> int:
        """Bytes the weights take (quantized sizes for 8-bit/4-bit)."""
        return int(self._live().get_memory_footprint())

    def _live(self):
        if self._released or self.model is None:
            raise ModelLoadError(f"the T5 text encoder {self.source} was released: load it again")
        return self.model


def load_t5(
    source: str | os.PathLike,
    *,
    precision: str | None = None,
    device: torch.device,
    keep_on_cpu: bool = False,
    should_stop: ShouldStop | None = None,
    hub_timeout: float | None = None,
    tokenizer_folders: Sequence[str | os.PathLike] = (),
) -> T5Encoder:
    """Load IF's T5 encoder and tokenizer.

    ``precision`` is one of :data:`PRECISIONS`; ``None`` picks fp16 on an
    accelerator and fp32 on the CPU. ``keep_on_cpu`` keeps the encoder on the
    CPU whatever ``device`` is (no VRAM, slower): there fp16 becomes fp32, while
    bf16, fp32 and (where bitsandbytes runs on the CPU) 8-bit/4-bit are kept.
    A Hub id is downloaded first: ``should_stop()`` (polled while it downloads)
    cancels with :class:`LoadCancelled`; ``hub_timeout`` seconds without an
    answer from the Hub fail (default :func:`.hub.hub_timeout`).

    ``source`` may be a single .safetensors file holding the encoder (ComfyUI's
    ``models/text_encoders/t5xxl_fp16.safetensors``, its fp8 versions, ...:
    :func:`.t5_single_file.describe_t5_file`). Such a file has no tokenizer:
    the first of ``tokenizer_folders`` that gives IF's token ids is used
    (:func:`.t5_single_file.load_if_tokenizer`); folders and Hub ids ignore them.
    """
    device = torch.device(device)
    run_device = torch.device("cpu") if keep_on_cpu else device
    if precision is None:
        precision = "fp32" if run_device.type == "cpu" else "fp16"
    if precision not in PRECISIONS:
        raise ModelLoadError(f"unknown T5 precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if keep_on_cpu and precision == "fp16":
        precision = "fp32"
    quantized = precision in ("8bit", "4bit")
    if quantized:
        problem = bitsandbytes_problem()
        if problem is not None:
            raise ModelLoadError(f"{BITSANDBYTES_MESSAGE} ({problem})")

    wants_fp16 = precision in ("fp16", "8bit", "4bit")
    location = resolve_source(source)
    t5_file = describe_t5_file(location) if _is_single_file(location) else None  # header only: fails fast
    tokenizer_source = None
    if t5_file is not None:
        tokenizer, tokenizer_folder = load_if_tokenizer(tokenizer_folders)
        tokenizer_source = str(tokenizer_folder)
        label = str(location)
    else:
        if isinstance(location, Path):
            folder, label = location, str(location)
        else:
            folder, label = _download_t5(location, wants_fp16, should_stop, hub_timeout), location
        model_dir, tokenizer_dir = _check_t5_folder(folder)
        preferred = "fp16" if wants_fp16 and has_variant_files(model_dir, "fp16") else None
        variants = [preferred, None] if preferred else [None]
        tokenizer = _load_tokenizer(tokenizer_dir)  # small: fails fast
    try:
        if t5_file is not None:
            model, variant = _load_file_model(t5_file, precision, run_device, should_stop), t5_file.storage
        else:
            model, variant = _load_model(model_dir, label, precision, run_device, variants)
        if not quantized:
            model.to(run_device)
    except OUT_OF_MEMORY_ERRORS as error:
        empty_device_caches()
        raise ModelLoadError(
            f"not enough memory on {run_device} for the T5 text encoder {label} in {precision}: free memory "
            "(unload other models), pick 8bit or 4bit, or keep the encoder on the CPU"
        ) from error
    model.eval()
    return T5Encoder(
        tokenizer=tokenizer,
        model=model,
        device=run_device,
        precision=precision,
        source=label,
        variant=variant,
        tokenizer_source=tokenizer_source,
    )


def encode_prompts(
    t5: T5Encoder,
    prompts: Sequence[str],
    negative_prompt: str = "",
    *,
    style: str = "",
    concept_words: Sequence[str | None] | None = None,
) -> PromptEmbeddings:
    """One embedding per prompt (view order), as ``IFPipeline.encode_prompt`` makes them.

    Each prompt becomes ``f"{style} {prompt}".strip()`` (the paper's style
    prefix), is lower-cased and stripped, padded/truncated to 77 tokens and
    encoded with its attention mask. Returns ``positive`` (N, 77, D) and the
    negative prompt encoded once, (1, 77, D), both on the CPU in the encoder's
    dtype (the samplers move and cast them). T5 runs under ``torch.inference_mode``.

    ``concept_spans`` locate each prompt's concept word for anti-segregation: the
    word ``concept_words[k]`` names, or (None, empty, or no list) the prompt's last
    word, as Anagram-MTL takes it.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise SamplingInputError("prompts", "no prompts given: give one prompt per view, in view order")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise SamplingInputError("prompts", f"prompt {index + 1} is a {type(prompt).__name__}, not text")
    if not isinstance(negative_prompt, str) or not isinstance(style, str):
        raise SamplingInputError("prompts", "the negative prompt and the style must be text")
    words = _concept_words(concept_words, len(prompts))
    t5._live()
    texts = [f"{style} {prompt}".strip() for prompt in prompts]
    spans = tuple(
        concept_token_span(t5.tokenizer, text, word, prompt_number=index + 1)
        for index, (text, word) in enumerate(zip(texts, words, strict=True))
    )
    with torch.inference_mode():
        # One prompt per call, as the published code does: batched GEMMs may round differently.
        positive = torch.cat([_encode_one(t5, text) for text in texts])
        negative = _encode_one(t5, negative_prompt)
    # Ordinary tensors (not inference tensors), so later autograd code can use them too.
    return PromptEmbeddings(positive=positive.clone(), negative=negative.clone(), concept_spans=spans)


def concept_token_span(
    tokenizer, text: str, word: str | None = None, *, prompt_number: int = 1
) -> tuple[int, int] | None:
    """The tokens ``[start, end)`` of ``word`` in ``text`` as IF encodes it (lower-cased, 77 tokens).

    ``word`` None means the text's last word (Anagram-MTL's choice). As MTL does, the word is
    tokenized alone (without the end-of-text token) and its first occurrence among the prompt's
    tokens is taken. A named word that is not there is an error; the last word, which is always
    there, gives None only when the prompt's end was cut off at 77 tokens.
    """
    text = text.lower().strip()
    named = word is not None
    word = (word if named else (text.split() or [""])[-1]).lower().strip()
    word_ids = tokenizer(word, add_special_tokens=False).input_ids if word else []
    prompt_ids = tokenizer(text, max_length=MAX_PROMPT_TOKENS, truncation=True).input_ids
    length = len(word_ids)
    for start in range(len(prompt_ids) - length + 1 if length else 0):
        if prompt_ids[start : start + length] == word_ids:
            return start, start + length
    if named:
        raise SamplingInputError(
            "concept words",
            f"{word!r} is not a word of prompt {prompt_number} ({text!r}"
            + (", or lies past its first 77 tokens" if len(prompt_ids) >= MAX_PROMPT_TOKENS else "")
            + "): name a word of that prompt, or leave it empty for the prompt's last word",
        )
    return None


def release_t5(t5: T5Encoder) -> None:
    """Free the encoder's weights; the ``T5Encoder`` is unusable after."""
    model = t5.model
    t5._released = True
    t5.model = None
    t5.tokenizer = None
    if model is not None:
        free_module(model)
        del model
    empty_device_caches()


def estimated_t5_bytes(source: str | os.PathLike, precision: str) -> int | None:
    """Approximate bytes T5 takes at ``precision``, before loading it (for freeing memory first)."""
    if precision not in PRECISIONS:
        raise ModelLoadError(f"unknown T5 precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    location = resolve_source(source)
    count, shape = None, IF_T5_XXL
    if _is_single_file(location):
        try:
            described = describe_t5_file(location)  # header only
            count, shape = described.parameter_count, {name: getattr(described, name) for name in IF_T5_XXL}
        except ModelLoadError:
            count = None  # the loader says what is wrong with the file
    elif isinstance(location, Path):
        for folder in (location / "text_encoder", location):
            count = safetensors_parameter_count(folder)  # header-only count
            if count:
                shape = {**IF_T5_XXL, **(try_read_json_object(folder / "config.json") or {})}
                break
    elif location.startswith("DeepFloyd/IF-I-"):
        count = T5_XXL_PARAMETER_COUNT
    if not count:
        return None
    if precision not in ("8bit", "4bit"):
        return int(count * _BYTES_PER_PARAMETER[precision])
    # transformers keeps T5's feed-forward output layers (``wo``) in fp32 and bitsandbytes leaves them unquantised:
    # a fifth of T5-XXL at 4 bytes (measured: 8.2 GB at 8bit, 6.4 GB at 4bit, not 5.2 / 2.9).
    kept = min(count, int(shape["d_ff"]) * int(shape["d_model"]) * int(shape["num_layers"]))
    return int((count - kept) * _BYTES_PER_PARAMETER[precision] + kept * 4)


def bitsandbytes_problem() -> str | None:
    """Why bitsandbytes cannot be used here, or None when it imports."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed"
    try:
        importlib.import_module("bitsandbytes")
    except Exception as error:  # noqa: BLE001 - broken CUDA setup, unsupported platform, ...: all mean "cannot use"
        return f"bitsandbytes does not import: {type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
    return None


# -- internals --------------------------------------------------------------------------------
def _concept_words(concept_words, count: int) -> list[str | None]:
    if concept_words is None:
        return [None] * count
    if isinstance(concept_words, str) or len(concept_words) != count:
        raise SamplingInputError(
            "concept words", f"give one word (or None) per prompt: {count} prompts, got {concept_words!r}"
        )
    words = []
    for index, word in enumerate(concept_words):
        if word is not None and not isinstance(word, str):
            raise SamplingInputError("concept words", f"word {index + 1} is a {type(word).__name__}, not text")
        words.append(word.strip() if word and word.strip() else None)
    return words


def _encode_one(t5: T5Encoder, text: str) -> torch.Tensor:
    text = text.lower().strip()  # IFPipeline._text_preprocessing with clean_caption=False
    tokens = t5.tokenizer(
        [text],
        padding="max_length",
        max_length=MAX_PROMPT_TOKENS,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )
    untruncated = t5.tokenizer([text], padding="longest", return_tensors="pt").input_ids
    if untruncated.shape[-1] > MAX_PROMPT_TOKENS:
        removed = t5.tokenizer.batch_decode(untruncated[:, MAX_PROMPT_TOKENS - 1 : -1])
        logger.warning(
            "this part of the prompt was cut off, as IF reads only %d tokens: %s", MAX_PROMPT_TOKENS, removed
        )
    model = t5.model
    silence_bitsandbytes_cast_notices()
    states = model(tokens.input_ids.to(t5.device), attention_mask=tokens.attention_mask.to(t5.device))[0]
    return states.to(dtype=model.dtype).to("cpu")


class _DropCastNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "inputs will be cast" not in record.getMessage()


_DROP_CAST_NOTICES = _DropCastNotices()


def silence_bitsandbytes_cast_notices() -> None:
    """bitsandbytes logs one warning per 8-bit matmul and call whose inputs are not fp16 (the pack's fp32 or
    bf16 layers around them, on the CPU: for accuracy), hundreds of lines per sampling step; the cast is
    intended, so that one notice is dropped. ``addFilter`` keeps a single copy however often this runs."""
    logging.getLogger("bitsandbytes.autograd._functions").addFilter(_DROP_CAST_NOTICES)


def _check_t5_folder(folder: Path) -> tuple[Path, Path]:
    """(model folder, tokenizer folder) of a local T5 source, or a ModelLoadError."""
    if not folder.is_dir():
        raise ModelLoadError(missing_folder_message(folder, "T5 text encoder", _T5_LAYOUT, _T5_WHERE))
    if (folder / "text_encoder" / "config.json").is_file():
        model_dir, tokenizer_dir = folder / "text_encoder", folder / "tokenizer"
    elif (folder / "config.json").is_file():
        model_dir = folder
        tokenizer_dir = folder / "tokenizer" if (folder / "tokenizer").is_dir() else folder
    else:
        index = try_read_json_object(folder / "model_index.json")
        if index is not None:
            kind = index.get("_class_name", "a diffusers pipeline")
            raise ModelLoadError(
                f"{folder} holds {kind} without a T5 text encoder (Stage II and III folders have none): point "
                f"the T5 loader at an IF-I folder (e.g. {T5_HUB_ID.split('/')[-1]}) or a T5 folder, which holds "
                f"{_T5_LAYOUT}"
            )
        raise ModelLoadError(missing_folder_message(folder, "T5 text encoder", _T5_LAYOUT, _T5_WHERE))

    config = read_json_object(model_dir / "config.json")  # raises naming the file, the problem and the fix
    if config.get("model_type") not in (None, "t5"):
        raise ModelLoadError(
            f"{model_dir} holds a {config.get('model_type')} text encoder, not T5: DeepFloyd IF needs the T5-XXL "
            f"encoder of an IF-I repository (e.g. {T5_HUB_ID})"
        )
    safe, pickled = weight_files(model_dir)
    if not safe:
        if pickled:
            raise ModelLoadError(pickle_only_message(model_dir, "T5 text encoder"))
        raise ModelLoadError(
            f"{model_dir} has no weights: it needs model.safetensors (or its shards and "
            "model.safetensors.index.json) from the IF-I repository's text_encoder/ folder"
        )
    check_safetensors_files(model_dir)
    if not any((tokenizer_dir / name).is_file() for name in _T5_TOKENIZER_FILES[:2]):
        raise ModelLoadError(
            f"{tokenizer_dir} has no T5 tokenizer files: it needs spiece.model (or tokenizer.json) and "
            "tokenizer_config.json from the IF-I repository's tokenizer/ folder"
        )
    return model_dir, tokenizer_dir


def _from_pretrained_kwargs(precision: str, device: torch.device) -> dict:
    """``from_pretrained``'s dtype, and for 8-bit/4-bit its bitsandbytes config and device map."""
    kwargs = {}
    dtype_key = transformers_dtype_kwarg()
    compute = torch.float32 if device.type == "cpu" else torch.float16
    if precision in ("8bit", "4bit"):
        from transformers import BitsAndBytesConfig

        if precision == "8bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute)
        kwargs[dtype_key] = compute  # the layers bitsandbytes leaves unquantized
        kwargs["device_map"] = {"": _device_map_target(device)}
    else:
        kwargs[dtype_key] = _PRECISION_DTYPES[precision]
    return kwargs


def _load_model(model_dir: Path, label: str, precision: str, device: torch.device, variants: list[str | None]):
    from transformers import T5EncoderModel

    kwargs = dict(use_safetensors=True, **_from_pretrained_kwargs(precision, device))
    error = None
    for variant in variants:
        try:
            model = T5EncoderModel.from_pretrained(str(model_dir), variant=variant, **kwargs)
            if precision == "4bit":
                _avoid_packed_cpu_path_for_narrow_layers(model)
            return model, variant
        except Exception as caught:  # noqa: BLE001 - classified below
            error = caught
            if variant is not None and not isinstance(caught, (ImportError, RuntimeError)):
                continue
            break
    raise _load_failure(error, label, precision) from error


def _load_file_model(t5_file: T5File, precision: str, device: torch.device, should_stop):
    """The encoder of a single file, through ``from_pretrained`` with the folder loader's arguments."""
    try:
        model = load_t5_file_model(
            t5_file,
            weight_dtype=_PRECISION_DTYPES.get(precision),  # None for 8-bit/4-bit
            should_stop=should_stop,
            **_from_pretrained_kwargs(precision, device),
        )
    except (ModelLoadError, *OUT_OF_MEMORY_ERRORS):
        raise
    except Exception as error:  # noqa: BLE001 - classified as for a folder
        raise _load_failure(error, str(t5_file.path), precision) from error
    if precision == "4bit":
        _avoid_packed_cpu_path_for_narrow_layers(model)
    return model


def _load_failure(error: BaseException, label: str, precision: str) -> ModelLoadError:
    if precision in ("8bit", "4bit") and not isinstance(error, OSError):  # file errors are not bitsandbytes' fault
        return ModelLoadError(
            scrub_secrets(
                f"{BITSANDBYTES_MESSAGE} (loading {label} failed: {type(error).__name__}: {first_line(error)})"
            )
        )
    return ModelLoadError(
        scrub_secrets(f"could not load the T5 text encoder from {label}: {type(error).__name__}: {first_line(error)}")
    )


def _avoid_packed_cpu_path_for_narrow_layers(model) -> None:
    """On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit layer's weights on its first CPU forward,
    and the repacking assumes whole quantization blocks (64) in both the inputs and the outputs: narrower
    layers fail with "shape '[N, 0]' is invalid". T5-XXL's layers are 4096+ wide; the tiny T5s of the demo
    model and the tests are 32 wide. Such layers keep bitsandbytes' generic CPU kernel."""
    for module in model.modules():
        quant_state = getattr(getattr(module, "weight", None), "quant_state", None)
        if quant_state is None or not hasattr(module, "support_avx512bf16_for_cpu"):
            continue
        if any(width % quant_state.blocksize for width in quant_state.shape):
            module.support_avx512bf16_for_cpu = False


def _load_tokenizer(tokenizer_dir: Path):
    try:
        return load_t5_tokenizer(tokenizer_dir)
    except Exception as error:  # any failure of a checked folder is reported with the folder
        reason = f"{type(error).__name__}: {first_line(error)}"
        message = f"could not load the T5 tokenizer from {tokenizer_dir}: {reason}"
        raise ModelLoadError(scrub_secrets(message)) from error


def t5_file_patterns(repo_id: str, variant: str | None) -> list[str]:
    """The repository files the T5 loader needs (config, one weight set, tokenizer), as glob patterns.

    IF repositories keep T5 in text_encoder/ and tokenizer/; other ids are plain T5 repositories.
    """
    if repo_id.startswith("DeepFloyd/"):
        return [
            "text_encoder/config.json",
            *weight_file_patterns("text_encoder", TRANSFORMERS_WEIGHTS_NAME, variant),
            "tokenizer/*",
        ]
    return [
        "config.json",
        *weight_file_patterns("", TRANSFORMERS_WEIGHTS_NAME, variant),
        *_T5_TOKENIZER_FILES,
    ]


def _download_t5(repo_id: str, wants_fp16: bool, should_stop, hub_timeout) -> Path:
    def model_dir(folder: Path) -> Path:
        return folder / "text_encoder" if repo_id.startswith("DeepFloyd/") else folder

    return download_weights(
        repo_id,
        lambda variant: t5_file_patterns(repo_id, variant),
        variant="fp16" if wants_fp16 else None,  # the smaller files, where the repository has them
        has_variant=lambda folder: has_variant_files(model_dir(folder), "fp16"),
        what="T5 text encoder",
        timeout=hub_timeout,
        should_stop=should_stop,
    )


def _is_single_file(location: Path | str) -> bool:
    """A local file (or a missing path named like one), not a folder or a Hub id."""
    return isinstance(location, Path) and (location.is_file() or location.suffix.lower() == ".safetensors")


def _device_map_target(device: torch.device) -> str:
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)
