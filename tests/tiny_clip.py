"""A tiny random CLIP (image and text towers) in the transformers folder layout, built offline in a moment.

The real CLIPs (OpenAI ViT-L/14, LAION ViT-H/14) cannot be downloaded in tests. This one has their
layout (config.json of a ``CLIPModel``, model.safetensors, a BPE tokenizer's vocab.json + merges.txt,
preprocessor_config.json), so the real loading and scoring code runs on it. Its tokenizer knows single
characters only (no merges): every prompt still encodes, one token per character.
Weights are random but deterministic for a seed.

Run ``python tests/tiny_clip.py OUT_DIR`` to write one to a folder.
"""

from __future__ import annotations

import json
import string
import sys
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

IMAGE_SIZE = 32
MAX_TEXT_TOKENS = 77  # CLIP's context length
START, END = "<|startoftext|>", "<|endoftext|>"


def _vocab() -> dict[str, int]:
    characters = string.ascii_lowercase + string.digits + string.punctuation
    tokens = [START, END, *characters, *(f"{ch}</w>" for ch in characters)]
    return {token: index for index, token in enumerate(tokens)}


def write_tiny_clip(folder: Path, *, seed: int = 0, logit_scale: float | None = None) -> Path:
    """Write a tiny random CLIP to ``folder``; ``logit_scale`` (log of 1 / temperature) overrides CLIP's initial."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        str(folder / "vocab.json"),
        str(folder / "merges.txt"),
        unk_token=END,
        bos_token=START,
        eos_token=END,
        pad_token=END,
        model_max_length=MAX_TEXT_TOKENS,
    )
    tokenizer.save_pretrained(str(folder))
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=MAX_TEXT_TOKENS,
            bos_token_id=vocab[START],
            eos_token_id=vocab[END],
            pad_token_id=vocab[END],
        ),
        vision_config=dict(
            image_size=IMAGE_SIZE,
            patch_size=8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
        ),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    if logit_scale is not None:
        model.logit_scale.data.fill_(logit_scale)
    model.save_pretrained(str(folder), safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size=IMAGE_SIZE).save_pretrained(str(folder))
    return folder


if __name__ == "__main__":
    print(write_tiny_clip(Path(sys.argv[1])))
