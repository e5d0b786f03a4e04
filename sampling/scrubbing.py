"""Keeping Hugging Face tokens out of messages and logs.

Library errors sometimes quote request headers or URLs; every message built from one goes through
:func:`scrub_secrets` before it is raised or logged.
"""

from __future__ import annotations

import os
import re

#: Environment variables that may hold a Hugging Face token (their values are scrubbed wherever they appear).
TOKEN_ENVIRONMENT_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN")
_SHORTEST_SCRUBBED_VALUE = 4  # shorter values would blank ordinary words


def scrub_secrets(text: str) -> str:
    """Remove anything token-like (and the token environment values) from a message."""
    for name in TOKEN_ENVIRONMENT_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) >= _SHORTEST_SCRUBBED_VALUE:
            text = text.replace(value, "***")
    text = re.sub(r"hf_[A-Za-z0-9_-]{4,}", "hf_***", text)
    return re.sub(r"(?i)(bearer\s+)\S+", r"\1***", text)
