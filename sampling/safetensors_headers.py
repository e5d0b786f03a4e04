"""Reading safetensors headers without loading weights: validating files and counting parameters.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON (an object mapping tensor names
to dtype/shape/offsets, plus an optional ``__metadata__``), then the tensor data. A damaged or hostile file can
claim any N; the length is checked against the file size and the cap safetensors itself enforces before
anything is read, so a bad file gives a clear :class:`ModelLoadError` instead of a MemoryError.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from .model_errors import ModelLoadError
from .model_folders import variant_of, weight_files

LENGTH_BYTES = 8
#: safetensors refuses headers above 100 MB (``MAX_HEADER_SIZE`` in its Rust code); so do we.
MAX_HEADER_BYTES = 100_000_000
_FIX = "download it again from the model's repository"


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file, or a ModelLoadError naming the file, the problem and the fix."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(LENGTH_BYTES)
            if len(prefix) < LENGTH_BYTES:
                raise _invalid(path, f"it is {size} bytes long, shorter than the {LENGTH_BYTES}-byte header length")
            (length,) = struct.unpack("<Q", prefix)
            room = size - LENGTH_BYTES
            if length > room:
                raise _invalid(path, f"its header length {length} is larger than the file ({size} bytes)")
            if length > MAX_HEADER_BYTES:
                raise _invalid(path, f"its header length {length} is over the {MAX_HEADER_BYTES}-byte limit")
            raw = handle.read(length)
    except OSError as error:
        raise ModelLoadError(
            f"{path} cannot be read ({error.strerror or type(error).__name__}): check its permissions, or {_FIX}"
        ) from error
    try:
        header = json.loads(raw.decode("utf-8"))
    except ValueError as error:  # UnicodeDecodeError is a ValueError too
        raise _invalid(path, f"its header is not valid JSON ({error})") from error
    if not isinstance(header, dict):
        raise _invalid(path, f"its header is a JSON {type(header).__name__}, not an object")
    for name, entry in header.items():
        if name != "__metadata__" and not _is_tensor_entry(entry):
            raise _invalid(path, f"its header entry {name!r} is not a tensor description (dtype, shape, offsets)")
    return header


def check_safetensors_files(folder: Path) -> None:
    """Validate the header of every safetensors weight file directly in ``folder`` (ModelLoadError if one is bad)."""
    for path in weight_files(folder)[0]:
        if path.name.endswith(".safetensors"):
            read_safetensors_header(path)


def safetensors_parameter_count(folder: Path) -> int | None:
    """Parameters in a component folder, from safetensors headers (one weight set only).

    None when unknown: no safetensors files, or one of them is damaged (the loader reports that one).
    """
    safe, _ = weight_files(folder)
    by_variant: dict[str | None, list[Path]] = {}
    for path in safe:
        if path.name.endswith(".safetensors"):
            by_variant.setdefault(variant_of(path.name), []).append(path)
    if not by_variant:
        return None
    files = by_variant.get(None) or next(iter(by_variant.values()))
    total = 0
    for path in files:
        try:
            header = read_safetensors_header(path)
        except ModelLoadError:
            return None
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in entry["shape"]:
                count *= dim
            total += count
    return total


def _is_tensor_entry(entry: object) -> bool:
    if not isinstance(entry, dict):
        return False
    shape = entry.get("shape")
    return (
        isinstance(entry.get("dtype"), str)
        and isinstance(shape, list)
        and all(isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape)
    )


def _invalid(path: Path, problem: str) -> ModelLoadError:
    return ModelLoadError(
        f"{path} is not a valid safetensors file: {problem}. The file is damaged or incomplete: {_FIX}"
    )
