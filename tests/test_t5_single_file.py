"""IF's T5 encoder from ComfyUI users' single files (sampling/t5_single_file.py through sampling/text.load_t5).

- Every storage of the tiny T5 v1.1 (tests/tiny_models.write_tiny_t5_files) encodes prompts exactly as the
  same network loaded from a transformers folder: fp32/fp16/bf16 files equal the folder loaded in that
  dtype; fp8 files equal the folder of their dequantized weights, and stay within fp8's rounding of the
  unrounded network; 8-bit/4-bit (bitsandbytes, CPU) load and encode.
- Detection from the header names what a file is (umT5, Pile-T5, mT5, byT5, T5 v1.0, CLIP, truncated,
  GGUF, formats that cannot be read) and reads IF's T5-XXL size as ComfyUI's and IF's configs give it.
- The tokenizer: the first candidate folder giving IF's ids is used; ComfyUI's T5 tokenizer gives the ids
  published for T5's vocabulary, and the same ids as a sentencepiece (slow) tokenizer rebuilt from its
  tokenizer.json, for the pack's prompts and harder text.

ComfyUI's T5 tokenizer files come from COMFYUI_DIR (scripts/test.sh provides it); without them the tests
that need T5's real vocabulary skip.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from comfy_test_server import comfyui_dir
from pack import import_submodule
from tiny_models import BUNDLED_T5_PREFIX, build_tokenizer, write_tiny_t5_files

text = import_submodule("sampling.text")
t5_single_file = import_submodule("sampling.t5_single_file")
if_models = import_submodule("sampling.if_models")
model_errors = import_submodule("sampling.model_errors")
ModelLoadError = model_errors.ModelLoadError

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["an oil painting of people around a campfire", "an oil painting of an old man", "a horse"]
FLOAT_CASES = [
    ("fp32", "fp32"),
    ("fp16", "fp16"),
    ("bf16", "bf16"),
    ("fp16_with_embed_tokens", "fp16"),
    ("bf16_embed_tokens_only", "bf16"),
    ("fp16_bundled", "fp16"),
]
#: Round to nearest keeps every normal value within half a unit in the last place: 2^-(mantissa bits + 1).
FP8_RELATIVE_ROUNDING = {"fp8_e4m3fn": 2.0**-4, "fp8_e5m2": 2.0**-3}


# -- fixtures ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def t5_tokenizer_dir() -> Path:
    """ComfyUI's T5 tokenizer (tokenizer.json of T5's sentencepiece vocabulary), from COMFYUI_DIR."""
    folder = comfyui_dir() and comfyui_dir() / "comfy" / "text_encoders" / "t5_tokenizer"
    if not folder or not (folder / "tokenizer.json").is_file():
        pytest.skip("needs ComfyUI's comfy/text_encoders/t5_tokenizer (set COMFYUI_DIR)")
    return folder


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory, t5_tokenizer_dir):
    return write_tiny_t5_files(tmp_path_factory.mktemp("tiny-t5-files"), t5_tokenizer_dir)


@pytest.fixture(scope="module")
def comfy_tokenizer(t5_tokenizer_dir):
    return t5_single_file.load_t5_tokenizer(t5_tokenizer_dir)


@pytest.fixture(scope="module")
def folder_encoder(tiny_t5, comfy_tokenizer):
    """A folder's encoder at a precision, through the folder loader (cached per folder/precision)."""
    cache = {}

    def load(folder: Path, precision: str):
        if (folder, precision) not in cache:
            model, _variant = text._load_model(folder / "text_encoder", str(folder), precision, CPU, [None])
            cache[folder, precision] = text.T5Encoder(
                tokenizer=comfy_tokenizer, model=model.eval(), device=CPU, precision=precision, source=str(folder)
            )
        return cache[folder, precision]

    return load


@pytest.fixture(scope="module")
def loaded_tokenizers() -> dict:
    return {}


@pytest.fixture
def reused_tokenizers(monkeypatch, loaded_tokenizers):
    """Tests about weights read each tokenizer folder once (a T5 tokenizer takes about a second to load here);
    the tokenizer tests below load theirs for real."""
    original = t5_single_file.load_t5_tokenizer

    def load_once(folder):
        if folder not in loaded_tokenizers:
            loaded_tokenizers[folder] = original(folder)
        return loaded_tokenizers[folder]

    monkeypatch.setattr(t5_single_file, "load_t5_tokenizer", load_once)


def _load_file(tiny_t5, variant: str, precision: str):
    return text.load_t5(tiny_t5.files[variant], precision=precision, device=CPU, tokenizer_folders=[tiny_t5.tokenizer])


def _embeddings(t5) -> torch.Tensor:
    encoded = text.encode_prompts(t5, PROMPTS, "a blurry photo")
    return torch.cat([encoded.positive, encoded.negative])


# -- single files equal the folder -------------------------------------------------------------------------------
@pytest.mark.usefixtures("reused_tokenizers")
@pytest.mark.parametrize("variant, precision", FLOAT_CASES)
def test_float_files_encode_as_the_folder_in_the_same_dtype(tiny_t5, folder_encoder, variant, precision):
    t5 = _load_file(tiny_t5, variant, precision)
    reference = folder_encoder(tiny_t5.folder, precision)
    assert (t5.source, t5.variant, t5.precision) == (str(tiny_t5.files[variant]), variant[:4], precision)
    assert t5.tokenizer_source == str(tiny_t5.tokenizer)
    assert torch.equal(_embeddings(t5), _embeddings(reference))
    # Every parameter, in the dtype from_pretrained keeps it in (T5 keeps wo in fp32 under fp16).
    ours, theirs = dict(t5.model.named_parameters()), dict(reference.model.named_parameters())
    assert ours.keys() == theirs.keys()
    for name, parameter in ours.items():
        assert parameter.dtype == theirs[name].dtype and torch.equal(parameter, theirs[name]), name
    assert t5.model.encoder.embed_tokens.weight is t5.model.shared.weight
    assert t5.parameter_count == reference.parameter_count


@pytest.mark.usefixtures("reused_tokenizers")
@pytest.mark.parametrize(
    "variant, precision",
    [
        ("fp8_e4m3fn", "fp32"),
        ("fp8_e5m2", "fp32"),
        ("fp8_e4m3fn_scaled", "fp32"),
        ("fp8_e4m3fn_scaled", "fp16"),
        ("fp8_e4m3fn_comfy_quant", "fp32"),
        ("fp8_e4m3fn_comfy_quant", "bf16"),
    ],
)
def test_fp8_files_encode_as_their_dequantized_weights(tiny_t5, folder_encoder, variant, precision):
    t5 = _load_file(tiny_t5, variant, precision)
    assert t5.variant == variant.replace("_comfy_quant", "_scaled")
    ours = _embeddings(t5)
    # Exact: the folder holding what the file stands for (fp8 value x scale, in fp32), loaded at the same precision.
    assert torch.equal(ours, _embeddings(folder_encoder(tiny_t5.rounded[variant], precision)))
    # Loose: against the unrounded network. Each weight is within fp8's relative rounding of the original;
    # through the tiny T5's two blocks the embeddings move by at most a few times that (measured: 0.04 to 0.07
    # for e4m3, 0.14 for e5m2); a wrong scale moves them by far more.
    unrounded = _embeddings(folder_encoder(tiny_t5.folder, "fp32")).float()
    error = ((ours.float() - unrounded).norm() / unrounded.norm()).item()
    assert error < 3 * FP8_RELATIVE_ROUNDING[variant[:10].rstrip("_")], error


@pytest.mark.usefixtures("reused_tokenizers")
@pytest.mark.parametrize("precision", ["8bit", "4bit"])
def test_quantized_single_files_load_and_encode_on_the_cpu(tiny_t5, folder_encoder, precision):
    pytest.importorskip("bitsandbytes")
    if text.bitsandbytes_problem():
        pytest.skip(text.bitsandbytes_problem())
    t5 = _load_file(tiny_t5, "fp32", precision)
    # The same fp32 weights quantized the same way as from the folder: the same embeddings.
    assert torch.equal(_embeddings(t5), _embeddings(folder_encoder(tiny_t5.folder, precision)))
    scaled = _load_file(tiny_t5, "fp8_e4m3fn_scaled", precision)
    embeddings = _embeddings(scaled).float()
    unrounded = _embeddings(folder_encoder(tiny_t5.folder, "fp32")).float()
    assert torch.isfinite(embeddings).all() and embeddings.shape == unrounded.shape
    assert ((embeddings - unrounded).norm() / unrounded.norm()).item() < 0.5  # 4-bit NF4 on a 64-wide T5


@pytest.mark.usefixtures("reused_tokenizers")
def test_estimated_bytes_of_a_file_match_the_loaded_model(tiny_t5):
    t5 = _load_file(tiny_t5, "fp32", "fp32")
    assert text.estimated_t5_bytes(tiny_t5.files["fp16"], "fp32") == t5.estimated_bytes
    assert text.estimated_t5_bytes(tiny_t5.files["fp8_e4m3fn_scaled"], "fp16") == t5.estimated_bytes // 2


@pytest.mark.usefixtures("reused_tokenizers")
def test_single_file_errors_name_the_file_and_the_fix(tiny_t5, tmp_path):
    with pytest.raises(ModelLoadError, match="no tokenizer folder was given"):
        text.load_t5(tiny_t5.files["fp16"], precision="fp32", device=CPU)
    with pytest.raises(model_errors.LoadCancelled):
        text.load_t5(tiny_t5.files["fp16"], device=CPU, tokenizer_folders=[tiny_t5.tokenizer], should_stop=lambda: True)
    missing = tmp_path / "t5xxl_fp16.safetensors"
    with pytest.raises(ModelLoadError, match=re.escape(f"{missing} cannot be used") + ".*a missing file"):
        text.load_t5(missing, device=CPU, tokenizer_folders=[tiny_t5.tokenizer])
    assert text.estimated_t5_bytes(missing, "fp16") is None
    umt5 = _write_header_only(tmp_path / "umt5_xxl_fp16.safetensors", _t5_shapes(vocab=256384, bias_everywhere=True))
    with pytest.raises(ModelLoadError, match=re.escape(str(umt5)) + ".*umT5 encoder.*t5xxl_fp16.safetensors"):
        text.load_t5(umt5, device=CPU, tokenizer_folders=[tiny_t5.tokenizer])


@pytest.mark.usefixtures("reused_tokenizers")
def test_a_comfy_quant_format_that_cannot_be_read_is_refused_when_loading(tiny_t5, tmp_path):
    from safetensors.torch import load_file

    tensors = load_file(tiny_t5.files["fp8_e4m3fn_comfy_quant"])
    name = "encoder.block.1.layer.1.DenseReluDense.wo.comfy_quant"
    tensors[name] = torch.tensor(list(json.dumps({"format": "mxfp8"}).encode()), dtype=torch.uint8)
    path = tmp_path / "t5xxl_mxfp8.safetensors"
    save_file(tensors, path)
    assert t5_single_file.t5_file_problem(path) is None  # the format is inside the tensor: read when loading
    with pytest.raises(ModelLoadError, match=re.escape(str(path)) + ".*'mxfp8'.*t5xxl_fp16"):
        text.load_t5(path, precision="fp32", device=CPU, tokenizer_folders=[tiny_t5.tokenizer])


def test_the_model_keys_are_checked_against_transformers(tiny_t5):
    described = t5_single_file.describe_t5_file(tiny_t5.files["fp16"])
    kwargs = text._from_pretrained_kwargs("fp32", CPU)
    tensors = dict(described.tensors)
    wo = tensors.pop("encoder.block.1.layer.1.DenseReluDense.wo.weight")
    with pytest.raises(ModelLoadError, match="no tensor for the model's encoder.block.1.layer.1.DenseReluDense.wo"):
        t5_single_file.load_t5_file_model(dataclasses.replace(described, tensors=tensors), weight_dtype=None, **kwargs)
    d_model, d_ff = wo.shape
    tensors["encoder.block.1.layer.1.DenseReluDense.wo.weight"] = dataclasses.replace(wo, shape=(d_ff, d_ff))
    with pytest.raises(
        ModelLoadError, match=rf"DenseReluDense.wo.weight of shape \[{d_ff}, {d_ff}\].*\[{d_model}, {d_ff}\]"
    ):
        t5_single_file.load_t5_file_model(dataclasses.replace(described, tensors=tensors), weight_dtype=None, **kwargs)


# -- detection from the header ---------------------------------------------------------------------------------
def _t5_shapes(
    *,
    vocab=32128,
    d_model=8,
    d_kv=4,
    heads=2,
    d_ff=16,
    layers=2,
    buckets=32,
    dtype="F16",
    gated=True,
    bias_everywhere=False,
    prefix="",
):
    """name -> (dtype, shape) of a T5 encoder state dict, written independently of the module under test."""
    shapes = {"shared.weight": [vocab, d_model], "encoder.final_layer_norm.weight": [d_model]}
    for index in range(layers):
        block = f"encoder.block.{index}.layer."
        for name in ("q", "k", "v"):
            shapes[f"{block}0.SelfAttention.{name}.weight"] = [heads * d_kv, d_model]
        shapes[f"{block}0.SelfAttention.o.weight"] = [d_model, heads * d_kv]
        if index == 0 or bias_everywhere:
            shapes[f"{block}0.SelfAttention.relative_attention_bias.weight"] = [buckets, heads]
        shapes[f"{block}0.layer_norm.weight"] = [d_model]
        for name in ("wi_0", "wi_1") if gated else ("wi",):
            shapes[f"{block}1.DenseReluDense.{name}.weight"] = [d_ff, d_model]
        shapes[f"{block}1.DenseReluDense.wo.weight"] = [d_model, d_ff]
        shapes[f"{block}1.layer_norm.weight"] = [d_model]
    return {prefix + name: (dtype, shape) for name, shape in shapes.items()}


def _write_header_only(path: Path, tensors: dict, metadata: dict | None = None, *, cut: int = 0) -> Path:
    """A safetensors file whose data is a hole (sparse: an XXL header costs no disk), ``cut`` bytes short."""
    sizes = {"F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "U8": 1, "I8": 1}
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = sizes[dtype]
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        handle.truncate(8 + len(raw) + offset - cut)
    return path


def _linear_layers(tensors: dict) -> list[str]:
    return [name[: -len(".weight")] for name in tensors if re.search(r"\.(q|k|v|o|wi_0|wi_1|wo)\.weight$", name)]


def _quantized(tensors: dict, weight_dtype: str, extras: dict) -> dict:
    """Linear weights in ``weight_dtype`` with per-layer ``extras`` (suffix -> (dtype, shape))."""
    out = dict(tensors)
    for layer in _linear_layers(tensors):
        out[layer + ".weight"] = (weight_dtype, tensors[layer + ".weight"][1])
        out.update({layer + suffix: entry for suffix, entry in extras.items()})
    return out


def _clip_text_encoder():
    return {
        "text_model.embeddings.token_embedding.weight": ("F16", [49408, 8]),
        "text_model.encoder.layers.0.mlp.fc1.weight": ("F16", [32, 8]),
        "text_model.final_layer_norm.weight": ("F16", [8]),
    }


HEADER_CASES = {
    "t5_v1_1": (_t5_shapes(), None, None),
    "bundled": (_t5_shapes(prefix=BUNDLED_T5_PREFIX) | {"model.diffusion_model.x.weight": ("F16", [2])}, None, None),
    "umt5": (_t5_shapes(vocab=256384, bias_everywhere=True), None, "an umT5 encoder (Wan's), not T5 v1.1"),
    "pile_t5": (_t5_shapes(bias_everywhere=True), None, "a Pile-T5 encoder"),
    "mt5": (_t5_shapes(vocab=250112), None, "an mT5 encoder"),
    "byt5": (_t5_shapes(vocab=1510), None, "a byte-level encoder such as byT5"),
    "t5_v1_0": (_t5_shapes(gated=False), None, "a T5 v1.0 encoder (ReLU feed-forward"),
    "clip": (_clip_text_encoder(), None, "a CLIP text encoder, not T5"),
    "llm": ({"model.layers.0.self_attn.q_proj.weight": ("BF16", [8, 8])}, None, "a decoder-only language model"),
    "no_bias": (
        {k: v for k, v in _t5_shapes().items() if "relative_attention_bias" not in k},
        None,
        "without block 0's relative attention bias",
    ),
    "missing_wo": (
        {k: v for k, v in _t5_shapes().items() if k != "encoder.block.1.layer.1.DenseReluDense.wo.weight"},
        None,
        "without encoder.block.1.layer.1.DenseReluDense.wo.weight",
    ),
    "wrong_shape": (
        _t5_shapes() | {"encoder.block.1.layer.0.SelfAttention.k.weight": ("F16", [8, 9])},
        None,
        "k.weight has shape [8, 9], not [8, 8]",
    ),
    "extra_tensor": (_t5_shapes() | {"encoder.block.0.extra.weight": ("F16", [8])}, None, "encoder.block.0.extra"),
    "scaled_fp8": (
        _quantized(_t5_shapes(), "F8_E4M3", {".scale_weight": ("F32", []), ".scale_input": ("F32", [])})
        | {"scaled_fp8": ("F8_E4M3", [0])},
        None,
        None,
    ),
    "nvfp4": (
        _quantized(
            _t5_shapes(),
            "U8",
            {".weight_scale": ("F8_E4M3", [8, 1]), ".weight_scale_2": ("F32", []), ".comfy_quant": ("U8", [22])},
        ),
        None,
        "a T5 encoder quantized in a format this loader cannot read",
    ),
    "int8": (
        _quantized(_t5_shapes(), "I8", {".weight_scale": ("F32", []), ".comfy_quant": ("U8", [28])}),
        None,
        "quantized to i8",
    ),
    "block_scaled_fp8": (
        _quantized(_t5_shapes(), "F8_E4M3", {".weight_scale": ("F32", [8, 1]), ".comfy_quant": ("U8", [20])}),
        None,
        "block or channel scales",
    ),
    "metadata_nvfp4": (
        _t5_shapes(),
        {"_quantization_metadata": json.dumps({"layers": {"encoder.block.0.layer.0.SelfAttention.q": "nvfp4"}})},
        "quantized as 'nvfp4'",
    ),
    "metadata_fp8": (
        _quantized(_t5_shapes(), "F8_E4M3", {".weight_scale": ("F32", [])}),
        {
            "_quantization_metadata": json.dumps(
                {"layers": {"encoder.block.0.layer.0.SelfAttention.q": "float8_e4m3fn"}}
            )
        },
        None,
    ),
}


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_header_detection_says_what_a_file_holds(tmp_path, case):
    tensors, metadata, reason = HEADER_CASES[case]
    path = _write_header_only(tmp_path / f"{case}.safetensors", tensors, metadata)
    problem = t5_single_file.t5_file_problem(path)
    if reason is None:
        assert problem is None
    else:
        assert problem is not None and reason in problem, problem
        with pytest.raises(ModelLoadError, match=re.escape(f"{path} cannot be used") + ".*" + re.escape(reason)):
            t5_single_file.describe_t5_file(path)


def test_damaged_and_foreign_files_are_named(tmp_path):
    problem = t5_single_file.t5_file_problem
    truncated = _write_header_only(tmp_path / "t5xxl_fp16.safetensors", _t5_shapes(), cut=10)
    assert problem(truncated).startswith("a truncated file (")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(struct.pack("<Q", 12) + b"not json at all")
    assert problem(garbage).startswith("a damaged safetensors file (its header is not valid JSON")
    cut_header = tmp_path / "cut.safetensors"
    cut_header.write_bytes(struct.pack("<Q", 4000) + b"{}")
    assert "is larger than the file" in problem(cut_header)
    for name, reason in [
        ("t5-v1_1-xxl-encoder-Q8_0.gguf", "a GGUF file"),
        ("pytorch_model.bin", "a pickle checkpoint (.bin)"),
        ("notes.txt", "not a .safetensors file"),
    ]:
        (tmp_path / name).write_bytes(b"x" * 16)
        assert problem(tmp_path / name).startswith(reason)
    assert problem(tmp_path / "absent.safetensors") == "a missing file"


def test_if_t5_xxl_reads_as_comfyuis_and_ifs_configs(tmp_path):
    """T5-XXL's real shapes in fp8 (a sparse file: no data is written) against ComfyUI's t5_config_xxl.json and
    the values of IF-I's text_encoder/config.json (google/t5-v1_1-xxl)."""
    xxl = {"vocab": 32128, "d_model": 4096, "d_kv": 64, "heads": 64, "d_ff": 10240, "layers": 24}
    shapes = _quantized(_t5_shapes(**xxl), "F8_E4M3", {".scale_weight": ("F32", [])})
    path = _write_header_only(
        tmp_path / "t5xxl_fp8_e4m3fn_scaled.safetensors", shapes | {"scaled_fp8": ("F8_E4M3", [0])}
    )
    assert t5_single_file.t5_file_problem(path, xxl_only=True) is None
    described = t5_single_file.describe_t5_file(path)
    assert described.is_if_t5_xxl and described.storage == "fp8_e4m3fn_scaled"
    assert abs(described.parameter_count - if_models.T5_XXL_PARAMETER_COUNT) < 0.01 * if_models.T5_XXL_PARAMETER_COUNT
    assert text.estimated_t5_bytes(path, "fp16") == 2 * described.parameter_count
    config = described.t5_config()
    if_text_encoder_config = {
        "vocab_size": 32128,
        "d_model": 4096,
        "d_kv": 64,
        "d_ff": 10240,
        "num_layers": 24,
        "num_heads": 64,
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "layer_norm_epsilon": 1e-6,
        "feed_forward_proj": "gated-gelu",
        "is_gated_act": True,
        "dense_act_fn": "gelu_new",
        "pad_token_id": 0,
        "eos_token_id": 1,
    }
    assert {key: getattr(config, key) for key in if_text_encoder_config} == if_text_encoder_config
    comfy_config_path = comfyui_dir() and comfyui_dir() / "comfy" / "text_encoders" / "t5_config_xxl.json"
    if comfy_config_path and comfy_config_path.is_file():
        comfy = json.loads(comfy_config_path.read_text())
        for key in (
            "vocab_size",
            "d_model",
            "d_kv",
            "d_ff",
            "num_layers",
            "num_heads",
            "relative_attention_num_buckets",
        ):
            assert getattr(config, key) == comfy[key], key
        assert comfy["is_gated_act"] and comfy["dense_act_fn"] == "gelu_pytorch_tanh"  # gelu_new's formula
        assert (config.layer_norm_epsilon, config.pad_token_id, config.eos_token_id) == (
            comfy["layer_norm_epsilon"],
            comfy["pad_token_id"],
            comfy["eos_token_id"],
        )
    xl = _write_header_only(tmp_path / "t5_xl.safetensors", _t5_shapes(d_model=2048, d_kv=64, heads=32, d_ff=5120))
    assert t5_single_file.t5_file_problem(xl) is None
    assert "another size (T5 v1.1 XL?)" in t5_single_file.t5_file_problem(xl, xxl_only=True)


# -- the tokenizer ------------------------------------------------------------------------------------------------
def test_comfyuis_t5_tokenizer_gives_the_published_t5_ids(comfy_tokenizer):
    # huggingface/transformers tests/models/t5/test_tokenization_t5.py (t5-base, the vocabulary of T5 v1.1).
    assert comfy_tokenizer("A long paragraph for summarization.").input_ids == [
        71,
        307,
        8986,
        21,
        4505,
        1635,
        1707,
        5,
        1,
    ]
    assert comfy_tokenizer("The quick brown fox jumps over the lazy dog.").input_ids == [
        *(37, 1704, 4216, 3, 20400, 4418, 7, 147, 8, 19743, 1782, 5, 1)
    ]
    assert comfy_tokenizer("Summary of the text.").input_ids == [20698, 13, 8, 1499, 5, 1]
    assert t5_single_file.if_token_id_problem(comfy_tokenizer) is None


def test_if_token_id_problem_catches_other_tokenizers(t5_tokenizer_dir):
    assert "tokens, not the 32100 of T5's vocabulary" in t5_single_file.if_token_id_problem(build_tokenizer())
    no_end_token = t5_single_file.load_t5_tokenizer(t5_tokenizer_dir)
    no_end_token._tokenizer.post_processor = None
    assert "encodes 'A long paragraph for summarization.' as [71, 307" in t5_single_file.if_token_id_problem(
        no_end_token
    )


def test_the_first_tokenizer_giving_ifs_ids_is_used(tiny_t5, t5_tokenizer_dir, tmp_path):
    tiny = tmp_path / "tiny-tokenizer"
    build_tokenizer().save_pretrained(tiny)
    empty = tmp_path / "empty"
    empty.mkdir()
    candidates = [tmp_path / "absent", empty, tiny, tiny_t5.tokenizer, t5_tokenizer_dir]
    tokenizer, folder = t5_single_file.load_if_tokenizer(candidates)
    assert folder == tiny_t5.tokenizer
    assert t5_single_file.if_token_id_problem(tokenizer) is None
    with pytest.raises(ModelLoadError) as caught:
        t5_single_file.load_if_tokenizer(candidates[:3])
    message = str(caught.value)
    assert f"{tmp_path / 'absent'} does not exist" in message
    assert f"{empty} has no spiece.model or tokenizer.json" in message
    assert f"{tiny}: it has" in message and "models/text_encoders/<name>/tokenizer" in message
    with pytest.raises(ModelLoadError, match="no tokenizer giving DeepFloyd IF's T5 token ids"):
        text.load_t5(tiny_t5.files["fp16"], device=CPU, tokenizer_folders=[tiny])


def test_a_spiece_only_tokenizer_folder_loads(t5_tokenizer_dir, tmp_path):
    """IF-I's tokenizer/ holds spiece.model alone: transformers 5 reads it through protobuf (requirements.txt)."""
    folder = tmp_path / "if-tokenizer"
    folder.mkdir()
    (folder / "spiece.model").write_bytes(_spiece_model_proto(t5_tokenizer_dir / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"extra_ids": 100, "model_max_length": 77}))
    tokenizer, _ = t5_single_file.load_if_tokenizer([folder])
    assert t5_single_file.if_token_id_problem(tokenizer) is None


def _pack_prompts() -> list[str]:
    """Every prompt, style and negative prompt of the pack's API workflows, as IF would encode them."""
    subjects, styles = set(), {""}
    for path in sorted((REPO / "api_workflows").glob("*.json")):
        for node in json.loads(path.read_text()).values():
            for name, value in (node.get("inputs", {}) if isinstance(node, dict) else {}).items():
                if isinstance(value, str) and value.strip():
                    if name.startswith("prompt") or name.startswith("negative"):
                        subjects.add(value)
                    elif name == "style":
                        styles.add(value)
    return sorted(f"{style} {subject}".strip() for style in styles for subject in subjects)


HARD_TEXT = [
    "a  double  space and a\ttab and a\nnewline",
    "   leading and trailing spaces   ",
    "punctuation!!! ??? ... ,,, ;;; :: (parens) [brackets] {braces} <angle> a.b,c;d:e hyphen-ated",
    "café crème brûlée, naïve façade, c'est l'été, straße",
    "ﬁ ligature ① circled ＡＢＣ１２３ fullwidth ｶﾀｶﾅ Ω Å x² ½ ™",
    "日本語の文章 and emoji 😀🎉 and x😀y",
    "a—b – c … “quoted” ‘single’",
    "\u00a0no-break\u00a0spaces, zero\u200bwidth, ideographic\u3000space, ▁ underscores▁",
    "e\u0301 combining accent and precomposed é",
    "100% 3.14 1,000 2nd 4th",
    "",
    " ".join(["a very long prompt about an oil painting of a snowy mountain village"] * 12),
    "a" * 400,
]


def test_the_fast_tokenizer_gives_the_slow_sentencepiece_ids(comfy_tokenizer, t5_tokenizer_dir):
    """ComfyUI's tokenizer.json (T5TokenizerFast) against sentencepiece itself, with the model rebuilt from that
    file's pieces, scores and normalisation charsmap, wrapped as transformers' slow T5Tokenizer (legacy, as IF
    loads it) wraps it. (Checked once against transformers 4.57's slow T5Tokenizer on these texts: identical.)"""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(
        model_proto=_spiece_model_proto(t5_tokenizer_dir / "tokenizer.json")
    )
    texts = _pack_prompts() + HARD_TEXT
    assert len(texts) > 100
    for raw in texts:
        prompt = raw.lower().strip()  # IFPipeline's preprocessing (clean_caption=False), as encode_prompts does
        fast = comfy_tokenizer([prompt], padding="max_length", max_length=77, truncation=True, add_special_tokens=True)
        assert (fast.input_ids[0], fast.attention_mask[0]) == _slow_t5_tokenizer(processor, prompt), raw


_SPECIAL = re.compile(r"(<pad>|</s>|<unk>|<extra_id_\d+>)")


def _slow_t5_tokenizer(processor, text: str, max_length: int = 77) -> tuple[list[int], list[int]]:
    """transformers 4's T5Tokenizer (legacy=True) called as IFPipeline calls it: special tokens split out, each
    piece of text through sentencepiece, truncated to leave room for the end token, which is added unless
    already last, then padded with 0."""
    ids = []
    for part in _SPECIAL.split(text):
        if _SPECIAL.fullmatch(part):
            number = re.fullmatch(r"<extra_id_(\d+)>", part)
            ids.append(32099 - int(number.group(1)) if number else {"<pad>": 0, "</s>": 1, "<unk>": 2}[part])
        elif part:
            ids += processor.encode(part)
    ids = ids[: max_length - 1]
    if not ids or ids[-1] != 1:
        ids.append(1)
    padding = max_length - len(ids)
    return ids + [0] * padding, [1] * len(ids) + [0] * padding


def _spiece_model_proto(tokenizer_json: Path) -> bytes:
    """A sentencepiece ModelProto (protobuf wire format, written by hand: protobuf is not needed) with T5's
    unigram pieces and scores, <pad>/</s> as control pieces, <unk> as the unknown piece, and the
    nmt_nfkc normaliser's precompiled charsmap; the 100 sentinels are transformers' additions, not pieces."""
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    normalizers = data["normalizer"].get("normalizers", [data["normalizer"]])
    charsmap = next(item["precompiled_charsmap"] for item in normalizers if item["type"] == "Precompiled")
    piece_types = {"<pad>": 3, "</s>": 3, "<unk>": 2}  # CONTROL, CONTROL, UNKNOWN; others NORMAL (1)
    proto = b""
    for piece, score in data["model"]["vocab"]:
        if not piece.startswith("<extra_id_"):
            fields = _bytes_field(1, piece.encode()) + _key(2, 5) + struct.pack("<f", score)
            proto += _bytes_field(1, fields + _int_field(3, piece_types.get(piece, 1)))
    # trainer_spec: unigram, 32000 pieces, unk 2, no bos, eos 1, pad 0 (T5's).
    trainer = b"".join(_int_field(number, value) for number, value in [(3, 1), (4, 32000), (40, 2), (41, -1), (42, 1)])
    trainer += _int_field(43, 0)
    # normalizer_spec: name, charsmap, add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces.
    normalizer = _bytes_field(1, b"nmt_nfkc") + _bytes_field(2, base64.b64decode(charsmap))
    normalizer += _int_field(3, 1) + _int_field(4, 1) + _int_field(5, 1)
    return proto + _bytes_field(2, trainer) + _bytes_field(3, normalizer)


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32 values are written as 64-bit two's complement
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _int_field(number: int, value: int) -> bytes:
    return _key(number, 0) + _varint(value)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload
