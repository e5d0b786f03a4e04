"""GLIDE's noise-aware CLIP: OpenAI's CLIP trained on noisy 64 px images, told the diffusion timestep.

Anagram-MTL balances the views' noise predictions with it: at each step it asks how well every view of the
noisy image ``x_t`` matches its prompt, at timestep ``t``. A standard CLIP sees only clean pictures; this one
was trained on GLIDE's noised images (1000 steps of the squaredcos_cap_v2 schedule, the one DeepFloyd IF uses),
so its scores mean something from the first step on.

The modules here are our own code, with the module and parameter names of the published glide-text2im
encoders, so OpenAI's ``clip_image_enc.pt`` and ``clip_text_enc.pt`` load into them with ``strict=True``.
The tokenizer is our own byte-level BPE over GLIDE's ``bpe_simple_vocab_16e6.txt.gz``, giving the ids of
the published ``SimpleTokenizer``. :class:`GlideClip` follows the pack's scorer interface (see
:mod:`.clip_models`). Pure torch, no ComfyUI import.

Weights load without pickle code: safetensors, or ``torch.load(..., weights_only=True)`` for the published
.pt files (plain state dicts).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import regex  # a dependency of transformers; needed for the \p{L} / \p{N} classes of CLIP's token pattern
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from .device_memory import OUT_OF_MEMORY_ERRORS, free_module
from .glide_tokenizer import GlideTokenizer
from .model_errors import ModelLoadError, first_line
from .safetensors_headers import read_safetensors_header


@dataclass(frozen=True)
class GlideClipConfig:
    """The architecture of GLIDE's CLIP (the published ``glide_text2im/clip/config.yaml``)."""

    logit_scale: float = 100.0
    n_timesteps: int = 1000
    image_size: int = 64
    patch_size: int = 4
    n_vocab: int = 65536
    max_text_len: int = 77
    n_embd: int = 512
    n_head_state_text: int = 64
    n_head_text: int = 8
    n_xf_blocks_text: int = 12
    n_head_state_image: int = 64
    n_head_image: int = 12
    n_xf_blocks_image: int = 12
    #: BPE merges the tokenizer reads from the vocabulary file (SimpleTokenizer: 49152 - 256 - 2).
    bpe_merges: int = 48894


#: The published configuration: the one OpenAI's checkpoints were trained with.
GLIDE_CLIP_CONFIG = GlideClipConfig()

IMAGE_ENCODER_STEM = "clip_image_enc"
TEXT_ENCODER_STEM = "clip_text_enc"
VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"
#: The folder's files as OpenAI publishes them (each encoder may be a .safetensors instead of the .pt).
GLIDE_FILES = (f"{IMAGE_ENCODER_STEM}.pt", f"{TEXT_ENCODER_STEM}.pt", VOCAB_NAME)

#: Per-channel statistics of CLIP's training pictures, on the 0..255 scale (the published encoder's constants).
IMAGE_CHANNEL_MEANS = (122.77093945, 116.74601272, 104.09373519)
IMAGE_CHANNEL_STDS = (68.50053285, 66.63215831, 70.32316309)
LAYER_NORM_EPS = 1e-5
#: Added to the norm before dividing, as the published ``image_embeddings`` / ``text_embeddings`` do.
NORM_EPS = 1e-12

#: How torch.load(weights_only=True) names the class it refuses (older torch says "Unsupported class").
_REFUSED_GLOBAL = regex.compile(r"Unsupported (?:global: GLOBAL|class) ([\w.]+)")
_CHECKPOINT_URL = "https://openaipublic.blob.core.windows.net/diffusion/dec-2021/"
_WHERE = (
    "GLIDE's noise-aware CLIP comes from OpenAI's glide-text2im: clip_image_enc.pt and clip_text_enc.pt are its "
    f"checkpoints 'clip/image-enc' and 'clip/text-enc' ({_CHECKPOINT_URL}clip_image_enc.pt and "
    f"{_CHECKPOINT_URL}clip_text_enc.pt; its clip_guided.ipynb downloads them into glide_model_cache, as "
    f"Anagram-MTL's README says), and {VOCAB_NAME} is glide_text2im/tokenizer/{VOCAB_NAME} in the same "
    "repository. Put the three files together in one folder"
)


# -- the encoders ------------------------------------------------------------------------------
# Parameters are created empty: the weights always come from a checkpoint, never from an initialisation.


class _LayerNorm(nn.Module):
    """Layer norm with the published parameter names ``g`` and ``b``, computed in float32."""

    def __init__(self, width: int):
        super().__init__()
        self.g = nn.Parameter(torch.empty(width))
        self.b = nn.Parameter(torch.empty(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.layer_norm(x.float(), self.g.shape, self.g.float(), self.b.float(), LAYER_NORM_EPS)
        return normed.to(x.dtype)


class _Affine(nn.Module):
    """A linear layer with the published parameter names ``w`` (out, in) and ``b``."""

    def __init__(self, n_in: int, n_out: int, bias: bool = True):
        super().__init__()
        self.w = nn.Parameter(torch.empty(n_out, n_in))
        self.b = nn.Parameter(torch.empty(n_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.w, self.b)


class _Attention(nn.Module):
    """Pre-norm multi-head self-attention with a residual; the key projection has no bias."""

    def __init__(self, width: int, heads: int, causal: bool):
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.ln = _LayerNorm(width)
        self.f_q = _Affine(width, width)
        self.f_k = _Affine(width, width, bias=False)
        self.f_v = _Affine(width, width)
        self.f_c = _Affine(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        h = self.ln(x)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

        # The published code pads the context to blocks of 32 and masks the padding out; without padding the
        # image encoder's attention is full and the text encoder's is plain causal. The default scale,
        # 1 / sqrt(head width), is the published one.
        out = F.scaled_dot_product_attention(
            split(self.f_q(h)), split(self.f_k(h)), split(self.f_v(h)), is_causal=self.causal
        )
        return x + self.f_c(out.transpose(1, 2).reshape(batch, length, width))


class _MLP(nn.Module):
    """Pre-norm 4x GELU MLP with a residual."""

    def __init__(self, width: int):
        super().__init__()
        self.ln = _LayerNorm(width)
        self.f_1 = _Affine(width, 4 * width)
        self.f_2 = _Affine(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f_2(F.gelu(self.f_1(self.ln(x))))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, causal: bool):
        super().__init__()
        self.f_attn = _Attention(width, heads, causal)
        self.f_mlp = _MLP(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f_mlp(self.f_attn(x))


class _TextInput(nn.Module):
    def __init__(self, n_vocab: int, n_context: int, width: int):
        super().__init__()
        self.w_voc = nn.Parameter(torch.empty(n_vocab, width))
        self.w_pos = nn.Parameter(torch.empty(n_context, width))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.w_voc) + self.w_pos


class _TextOutput(nn.Module):
    """The features at each prompt's last token (end of text), normed and projected."""

    def __init__(self, width: int, n_embd: int):
        super().__init__()
        self.ln = _LayerNorm(width)
        self.f = _Affine(width, n_embd, bias=False)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        last = x[torch.arange(x.shape[0], device=x.device), lengths - 1]
        return self.f(self.ln(last))


class _ImageInput(nn.Module):
    """Patch embedding of 0..255 pictures; the first token embeds the timestep (the noise-aware part)."""

    def __init__(self, image_size: int, patch_size: int, width: int, n_timesteps: int):
        super().__init__()
        self.patch_size = patch_size
        self.patch_proj = nn.Parameter(torch.empty(width, 3, patch_size, patch_size))
        self.w_pos = nn.Parameter(torch.empty(1 + (image_size // patch_size) ** 2, width))
        self.w_t = nn.Parameter(torch.empty(n_timesteps, width))
        self.ln = _LayerNorm(width)

    def forward(self, pixels: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        means = torch.tensor(IMAGE_CHANNEL_MEANS, device=pixels.device).view(1, 3, 1, 1)
        stds = torch.tensor(IMAGE_CHANNEL_STDS, device=pixels.device).view(1, 3, 1, 1)
        x = ((pixels.float() - means) / stds).to(self.patch_proj.dtype)
        patches = F.conv2d(x, self.patch_proj, stride=self.patch_size).flatten(2).transpose(1, 2)
        first = F.embedding(timesteps, self.w_t)[:, None]
        return self.ln(torch.cat((first, patches), dim=1) + self.w_pos)


class _ImageOutput(nn.Module):
    """The features of the first (timestep) token, normed and projected."""

    def __init__(self, width: int, n_embd: int):
        super().__init__()
        self.ln = _LayerNorm(width)
        self.f = _Affine(width, n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(self.ln(x[:, 0]))


class GlideTextEncoder(nn.Module):
    """GLIDE CLIP's text tower: (P, max_text_len) token ids and (P,) lengths -> (P, n_embd) features."""

    def __init__(self, config: GlideClipConfig = GLIDE_CLIP_CONFIG):
        super().__init__()
        self.n_blocks = config.n_xf_blocks_text
        width = config.n_head_text * config.n_head_state_text
        blocks: dict[str, nn.Module] = {"input": _TextInput(config.n_vocab, config.max_text_len, width)}
        for index in range(self.n_blocks):
            blocks[f"block_{index}"] = _Block(width, config.n_head_text, causal=True)
        blocks["output"] = _TextOutput(width, config.n_embd)
        self.blocks = nn.ModuleDict(blocks)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.blocks["input"](tokens)
        for index in range(self.n_blocks):
            h = self.blocks[f"block_{index}"](h)
        return self.blocks["output"](h, lengths)


class GlideImageEncoder(nn.Module):
    """GLIDE CLIP's image tower: (B, 3, S, S) pixels on the 0..255 scale and (B,) timesteps -> (B, n_embd)."""

    def __init__(self, config: GlideClipConfig = GLIDE_CLIP_CONFIG):
        super().__init__()
        self.n_blocks = config.n_xf_blocks_image
        width = config.n_head_image * config.n_head_state_image
        blocks: dict[str, nn.Module] = {
            "input": _ImageInput(config.image_size, config.patch_size, width, config.n_timesteps)
        }
        for index in range(self.n_blocks):
            blocks[f"block_{index}"] = _Block(width, config.n_head_image, causal=False)
        blocks["output"] = _ImageOutput(width, config.n_embd)
        self.blocks = nn.ModuleDict(blocks)

    def forward(self, pixels: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        h = self.blocks["input"](pixels, timesteps)
        for index in range(self.n_blocks):
            h = self.blocks[f"block_{index}"](h)
        return self.blocks["output"](h)


# -- the scorer --------------------------------------------------------------------------------
@dataclass
class GlideClip:
    """GLIDE's noise-aware CLIP, loaded: the pack's scorer interface (see :mod:`.clip_models`)."""

    image_encoder: GlideImageEncoder | None
    text_encoder: GlideTextEncoder | None
    tokenizer: GlideTokenizer
    device: torch.device
    dtype: torch.dtype
    source: str
    config: GlideClipConfig = GLIDE_CLIP_CONFIG
    noise_aware: bool = field(default=True, init=False)
    _released: bool = field(default=False, repr=False)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def temperature(self) -> float:
        """``1 / exp(logit_scale)``: the published model fixes exp(logit_scale) at 100."""
        return 1.0 / self.config.logit_scale

    @property
    def released(self) -> bool:
        return self._released

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """(P, D) unit-norm float32 embeddings of ``texts``."""
        encoder = self._live(self.text_encoder)
        framed = [
            self.tokenizer.padded_tokens_and_len(self.tokenizer.encode(text), self.config.max_text_len)
            for text in texts
        ]
        # reshape: an empty list of texts still gives (0, max_text_len)
        tokens = torch.tensor([ids for ids, _ in framed], dtype=torch.long, device=self.device)
        tokens = tokens.reshape(-1, self.config.max_text_len)
        lengths = torch.tensor([length for _, length in framed], dtype=torch.long, device=self.device)
        return _unit(encoder(tokens, lengths))

    @torch.no_grad()
    def image_embeddings(self, images: torch.Tensor, timesteps: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) unit-norm float32 embeddings of ``images`` (B, 3, H, W) in [-1, 1] at diffusion ``timesteps``.

        ``images`` are the noisy ``x_t`` of the sampler, not clamped: the encoder was trained on them.
        ``timesteps`` (B,) are integers 0..n_timesteps-1; None means 0 (a clean picture).
        """
        encoder = self._live(self.image_encoder)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        images = images.to(device=self.device, dtype=torch.float32)
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        steps = self._timesteps(timesteps, images.shape[0])
        # The published image_embeddings maps [-1, 1] to the 0..255 scale its input layer normalises.
        return _unit(encoder(((images + 1) * 127.5).to(self.dtype), steps))

    def release(self) -> None:
        if not self._released:
            for encoder in (self.image_encoder, self.text_encoder):
                if encoder is not None:
                    free_module(encoder)
            self.image_encoder = self.text_encoder = None
            self._released = True

    def _timesteps(self, timesteps: torch.Tensor | None, batch: int) -> torch.Tensor:
        if timesteps is None:
            return torch.zeros(batch, dtype=torch.long, device=self.device)
        steps = torch.as_tensor(timesteps, device=self.device)
        if steps.shape != (batch,):
            raise ValueError(f"timesteps must be ({batch},), one per image, got {tuple(steps.shape)}")
        steps = steps.round().long() if steps.is_floating_point() else steps.long()
        if bool(((steps < 0) | (steps >= self.config.n_timesteps)).any()):
            raise ValueError(f"timesteps must be within 0..{self.config.n_timesteps - 1}, got {steps.tolist()}")
        return steps

    def _live(self, encoder: nn.Module | None) -> nn.Module:
        if self._released or encoder is None:
            raise ModelLoadError(f"GLIDE's CLIP from {self.source} was released: load it again")
        return encoder


def _unit(features: torch.Tensor) -> torch.Tensor:
    features = features.float()
    return features / (features.norm(dim=-1, keepdim=True) + NORM_EPS)


# -- loading -----------------------------------------------------------------------------------
def is_glide_clip_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds GLIDE's CLIP files (cheap: they exist); :func:`load_glide_clip` checks them."""
    folder = Path(folder)
    return (
        _weights_path(folder, IMAGE_ENCODER_STEM) is not None
        and _weights_path(folder, TEXT_ENCODER_STEM) is not None
        and (folder / VOCAB_NAME).is_file()
    )


def load_glide_clip(
    folder: str | os.PathLike,
    *,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    config: GlideClipConfig = GLIDE_CLIP_CONFIG,
) -> GlideClip:
    """Load GLIDE's noise-aware CLIP from a folder holding ``GLIDE_FILES`` (each encoder as .safetensors or .pt;
    safetensors is preferred when both are there). Out-of-memory errors are torch's own."""
    folder = Path(folder)
    device = torch.device(device)
    if not folder.is_dir():
        problem = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ModelLoadError(
            f"{folder} {problem}: GLIDE's CLIP is a folder holding {', '.join(GLIDE_FILES)}. {_WHERE}."
        )
    tokenizer = GlideTokenizer.from_file(folder / VOCAB_NAME, config.bpe_merges, _WHERE)  # small: fails fast
    if tokenizer.vocabulary_size > config.n_vocab:
        raise ModelLoadError(
            f"{folder / VOCAB_NAME} has {tokenizer.vocabulary_size} tokens, more than the text encoder's "
            f"{config.n_vocab}: it is not GLIDE's vocabulary. {_WHERE}."
        )
    image_encoder = _load_encoder(folder, IMAGE_ENCODER_STEM, GlideImageEncoder, config, device, dtype)
    text_encoder = _load_encoder(folder, TEXT_ENCODER_STEM, GlideTextEncoder, config, device, dtype)
    return GlideClip(
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        source=str(folder),
        config=config,
    )


def _weights_path(folder: Path, stem: str) -> Path | None:
    for suffix in (".safetensors", ".pt"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def _load_encoder(folder: Path, stem: str, kind: type[nn.Module], config, device, dtype) -> nn.Module:
    path = _weights_path(folder, stem)
    if path is None:
        raise ModelLoadError(f"{folder / (stem + '.pt')} is missing (nor is there a {stem}.safetensors). {_WHERE}.")
    state = _read_state_dict(path)
    with torch.device("meta"):  # no memory until the checkpoint's tensors are assigned
        encoder = kind(config)
    _check_state_dict(path, state, encoder)
    encoder.load_state_dict(state, strict=True, assign=True)
    return encoder.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    safetensors = path.suffix == ".safetensors"
    if safetensors:
        try:
            read_safetensors_header(path)
        except ModelLoadError as error:
            raise ModelLoadError(f"{error} (or delete it to load {path.stem}.pt instead)") from error
    try:
        if safetensors:
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except OUT_OF_MEMORY_ERRORS:
        raise
    except pickle.UnpicklingError as error:
        # torch names the class a refused pickle needs; any other unpickling failure is a damaged file.
        refused = _REFUSED_GLOBAL.search(str(error))
        if refused is None:
            raise _damaged(path, "UnpicklingError: not a torch checkpoint") from error
        raise ModelLoadError(
            f"{path} is not a plain state dict: it pickles {refused[1]}, which torch.load(weights_only=True) "
            "refuses. OpenAI's published file is a plain state dict: download it again. Or, only if you trust "
            'this file (a pickle can run code), convert it once to safetensors: python -c "import torch; from '
            f"safetensors.torch import save_file; save_file(torch.load('{path.name}', weights_only=False), "
            f"'{path.stem}.safetensors')\" and put the .safetensors in the folder. {_WHERE}."
        ) from error
    except Exception as error:  # a truncated or foreign file fails in many ways: name it and the reason
        raise _damaged(path, f"{type(error).__name__}: {first_line(error)}") from error
    if not isinstance(state, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise ModelLoadError(
            f"{path} holds a {type(state).__name__} that is not a state dict (names to tensors). {_WHERE}."
        )
    return state


def _damaged(path: Path, reason: str) -> ModelLoadError:
    fix = "convert it again from the .pt" if path.suffix == ".safetensors" else "download it again"
    return ModelLoadError(f"{path} cannot be read ({reason}): the file is damaged or incomplete: {fix}. {_WHERE}.")


def _check_state_dict(path: Path, state: dict[str, torch.Tensor], encoder: nn.Module) -> None:
    """Refuse weights that do not fit the encoder, with the keys at fault (someone else's CLIP, the wrong file)."""
    expected = {name: tuple(tensor.shape) for name, tensor in encoder.state_dict().items()}
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    reshaped = [
        f"{name} is {tuple(state[name].shape)}, expected {shape}"
        for name, shape in expected.items()
        if name in state and tuple(state[name].shape) != shape
    ]
    not_float = [name for name in expected if name in state and not state[name].is_floating_point()]
    problems = [
        f"{len(found)} {what} (e.g. {', '.join(found[:3])})"
        for what, found in (
            ("weights missing", missing),
            ("unknown weights", unexpected),
            ("weights of another shape", reshaped),
            ("weights that are not floating point", not_float),
        )
        if found
    ]
    if problems:
        what = "image" if isinstance(encoder, GlideImageEncoder) else "text"
        raise ModelLoadError(
            f"{path} is not GLIDE's noise-aware CLIP {what} encoder: {'; '.join(problems)}. It may be another "
            f"CLIP, or the other encoder's file under this name. {_WHERE}."
        )
