"""Errors the model loaders raise. Each message names the file, folder or Hub id at fault, what is
wrong with it and what to do, so the nodes can show it as it is (prefixed with the node and input)."""

from __future__ import annotations

#: How long a quoted library error may be inside one of our messages.
MAX_QUOTED_CHARS = 300


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what to do about it."""


class LoadCancelled(ModelLoadError):
    """The caller's ``should_stop()`` turned true while a model was being fetched."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's text (its class name when empty), cut to a readable length."""
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line if len(line) <= MAX_QUOTED_CHARS else line[: MAX_QUOTED_CHARS - 3] + "..."
