"""GLIDE's tokenizer, our own: byte-level BPE over GLIDE's ``bpe_simple_vocab_16e6.txt.gz`` (the vocabulary
OpenAI's CLIP uses), giving the ids of glide-text2im's published ``SimpleTokenizer`` for GLIDE's noise-aware
CLIP (:mod:`.glide_clip`). Standard library + ``regex`` (a dependency of transformers)."""

from __future__ import annotations

import gzip
import html
import html.entities
import math
import os
import unicodedata
import zlib
from collections.abc import Sequence
from pathlib import Path

import regex  # for the \p{L} / \p{N} classes of CLIP's token pattern

from .model_errors import ModelLoadError, first_line

# -----------------------------------------------------------------------------
START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"
#: CLIP's pre-tokenisation: the special tokens, English contractions, runs of letters, single digits, runs
#: of other non-space characters.
_TOKEN_PATTERN = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")
_WORD_END = "</w>"


def _byte_symbols() -> list[str]:
    """The printable character standing for each byte 0..255 (GPT-2's byte-level BPE alphabet).

    Printable Latin-1 bytes stand for themselves; the others (controls, space, soft hyphen) are moved to
    256 and up, in byte order, so that no symbol is whitespace or a control character. Ordered by code point,
    these symbols are also the first 256 token ids.
    """
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = {byte: chr(byte) for byte in kept}
    moved = [byte for byte in range(256) if byte not in symbols]
    symbols.update({byte: chr(256 + index) for index, byte in enumerate(moved)})
    return [symbols[byte] for byte in range(256)]


# The published tokenizer cleans text with ftfy.fix_text before anything else. ftfy is not a dependency of
# the pack, so these are its default fixes that can change a typed prompt, in its order. Not included:
# ftfy's mojibake repair ("cafÃ©" -> "café"), which needs its character-frequency heuristics, and its
# all-caps HTML entities ("&EACUTE;").
_HTML_ENTITY = regex.compile(r"&#?[0-9A-Za-z]{1,24};")
# C1 controls read as the Windows-1252 characters they usually were ("\x93" -> a curly quote).
_C1_CONTROLS = {
    code: bytes([code]).decode("cp1252")
    for code in range(0x80, 0xA0)
    if code not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)  # undefined in Windows-1252: ftfy keeps them
}
_LATIN_LIGATURES = {
    ord("Ĳ"): "IJ",
    ord("ĳ"): "ij",
    ord("ŉ"): "ʼn",
    ord("Ǳ"): "DZ",
    ord("ǲ"): "Dz",
    ord("ǳ"): "dz",
    ord("Ǆ"): "DŽ",
    ord("ǅ"): "Dž",
    ord("ǆ"): "dž",
    ord("Ǉ"): "LJ",
    ord("ǈ"): "Lj",
    ord("ǉ"): "lj",
    ord("Ǌ"): "NJ",
    ord("ǋ"): "Nj",
    ord("ǌ"): "nj",
    ord("ﬀ"): "ff",
    ord("ﬁ"): "fi",
    ord("ﬂ"): "fl",
    ord("ﬃ"): "ffi",
    ord("ﬄ"): "ffl",
    ord("ﬅ"): "ſt",
    ord("ﬆ"): "st",
}
# Fullwidth ASCII and halfwidth katakana/hangul to their usual forms; the ideographic space to a space.
_WIDTHS = {0x3000: " "} | {
    code: unicodedata.normalize("NFKC", chr(code))
    for code in range(0xFF01, 0xFFF0)
    if unicodedata.normalize("NFKC", chr(code)) != chr(code)
}
_QUOTES = {code: "'" for code in (0x02BC, *range(0x2018, 0x201C))} | {code: '"' for code in range(0x201C, 0x2020)}
_TERMINAL_ESCAPES = regex.compile(r"\x1b\[((?:\d|;)*)([a-zA-Z])")
# Invisible controls (ASCII ones other than tab and line breaks, deprecated Arabic format characters,
# the byte order mark, interlinear annotation marks, the object replacement character).
_INVISIBLE_CONTROLS = dict.fromkeys(
    [*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F, *range(0x206A, 0x2070), 0xFEFF, *range(0xFFF9, 0xFFFD)]
)


def _fix_text(text: str) -> str:
    """ftfy.fix_text's default fixes of typed text (see above); line breaks become spaces later anyway."""
    if "<" not in text:  # ftfy leaves entities alone in what may be HTML
        text = _HTML_ENTITY.sub(_unescape_entity, text)
    text = text.translate(_C1_CONTROLS).translate(_LATIN_LIGATURES).translate(_WIDTHS).translate(_QUOTES)
    text = _TERMINAL_ESCAPES.sub("", text).translate(_INVISIBLE_CONTROLS)
    return unicodedata.normalize("NFC", text)


def _unescape_entity(match: regex.Match) -> str:
    """One complete HTML entity, decoded (ftfy decodes only entities that end with their semicolon)."""
    entity = match[0]
    if entity.startswith("&#"):
        decoded = html.unescape(entity)
        return entity if decoded.endswith(";") else decoded
    return html.entities.html5.get(entity[1:], entity)


class GlideTokenizer:
    """GLIDE CLIP's byte-level BPE (OpenAI CLIP's ``SimpleTokenizer``) over a ``bpe_simple_vocab_16e6`` file.

    Ids: the 256 byte symbols, the same followed by the end-of-word mark ``</w>``, one per merge in the
    file's order, then start- and end-of-text.
    """

    def __init__(self, merges: Sequence[tuple[str, str]]):
        self._byte_symbols = _byte_symbols()
        symbols = sorted(self._byte_symbols, key=ord)
        vocabulary = [*symbols, *(symbol + _WORD_END for symbol in symbols), *(a + b for a, b in merges)]
        vocabulary += [START_OF_TEXT, END_OF_TEXT]
        self.ids = {token: index for index, token in enumerate(vocabulary)}
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self._cache: dict[str, list[str]] = {}

    @classmethod
    def from_file(cls, path: str | os.PathLike, n_merges: int, where: str) -> GlideTokenizer:
        """Read the first ``n_merges`` merges of a gzipped BPE merges file (its first line is a header);
        ``where`` (where the file comes from) ends every error message."""
        path = Path(path)
        try:
            with gzip.open(path, "rb") as handle:
                lines = handle.read().decode("utf-8").split("\n")
        except FileNotFoundError as error:
            raise ModelLoadError(f"{path} is missing. {where}.") from error
        except (OSError, EOFError, zlib.error, UnicodeDecodeError) as error:
            raise ModelLoadError(
                f"{path} cannot be read as GLIDE's gzipped BPE vocabulary ({type(error).__name__}: "
                f"{first_line(error)}): the file is damaged or not the vocabulary. {where}."
            ) from error
        merges = [tuple(line.split()) for line in lines[1 : 1 + n_merges]]
        if len(merges) < n_merges or any(len(merge) != 2 for merge in merges):
            raise ModelLoadError(
                f"{path} is not GLIDE's BPE vocabulary: it needs a header line and {n_merges} merges (two symbols "
                f"a line), it has {sum(len(merge) == 2 for merge in merges)}. {where}."
            )
        return cls(merges)

    @property
    def start_token(self) -> int:
        return self.ids[START_OF_TEXT]

    @property
    def end_token(self) -> int:
        return self.ids[END_OF_TEXT]

    @property
    def vocabulary_size(self) -> int:
        return len(self.ids)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without start and end (lowercased, cleaned as the published tokenizer does)."""
        text = html.unescape(html.unescape(_fix_text(text))).strip()
        text = _WHITESPACE.sub(" ", text).strip().lower()
        ids = []
        for word in _TOKEN_PATTERN.findall(text):
            symbols = "".join(self._byte_symbols[byte] for byte in word.encode("utf-8"))
            ids.extend(self.ids[part] for part in self._bpe(symbols))
        return ids

    def padded_tokens_and_len(self, tokens: Sequence[int], text_ctx: int) -> tuple[list[int], int]:
        """Start + the first ``text_ctx - 2`` tokens + end, zero-padded to ``text_ctx``; and that length."""
        framed = [self.start_token, *tokens[: text_ctx - 2], self.end_token]
        return framed + [0] * (text_ctx - len(framed)), len(framed)

    def _bpe(self, word: str) -> list[str]:
        """Merge the word's symbols pair by pair, lowest merge rank first, every occurrence left to right."""
        if word in (START_OF_TEXT, END_OF_TEXT):
            return [word]
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        parts = [*word[:-1], word[-1] + _WORD_END]
        while len(parts) > 1:
            pair = min(zip(parts, parts[1:], strict=False), key=lambda p: self.ranks.get(p, math.inf))
            if pair not in self.ranks:
                break
            merged, index = [], 0
            while index < len(parts):
                if index + 1 < len(parts) and (parts[index], parts[index + 1]) == pair:
                    merged.append(parts[index] + parts[index + 1])
                    index += 2
                else:
                    merged.append(parts[index])
                    index += 1
            parts = merged
        self._cache[word] = parts
        return parts
