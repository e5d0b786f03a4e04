"""Shared fixtures and the test tiers.

pyproject.toml puts tests/, scripts/lib/ and demo/ on the import path (``pythonpath``) and registers the
markers. Tiers are applied here from the fixtures a test uses, so a new test module gets them without
marking anything by hand:

- ``comfyui``: the test uses the ComfyUI test server (``comfy_server``) or a ComfyUI checkout
  (``comfyui_checkout``); browser tests use the server too.
- ``browser``: the test drives the frontend in chromium (the ``browser`` fixture, tests/browser.py).

``slow`` (seconds to minutes on a 2-core CPU) is marked by hand on the test.
``bash scripts/test.sh -m "not comfyui and not browser and not slow"`` is the quick run.
"""

import os

import pytest

# Every test module can use the server's and the browser's fixtures without importing them.
from browser import (  # noqa: F401
    browser_fixture,
    comfy_page_fixture,
    fresh_page_fixture,
    frontend_url_fixture,
    page_fixture,
)
from comfy_test_server import comfy_server_fixture, comfyui_checkout_fixture  # noqa: F401

# Tests never reach a model hub: the tiny models are built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

#: A test using any of these fixtures (directly or through another fixture) gets the marker.
TIER_FIXTURES = {
    "comfyui": {"comfy_server", "comfyui_checkout"},
    "browser": {"browser"},
}


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in TIER_FIXTURES.items():
            if used & fixtures:
                item.add_marker(marker)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    from tiny_models import write_tiny_models

    return write_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def stage_1_pipe(tiny_models):
    from diffusers import IFPipeline

    return IFPipeline.from_pretrained(tiny_models.stage_1)


@pytest.fixture(scope="session")
def stage_2_pipe(tiny_models):
    from diffusers import IFSuperResolutionPipeline

    return IFSuperResolutionPipeline.from_pretrained(tiny_models.stage_2, text_encoder=None)


@pytest.fixture(scope="session")
def encode(stage_1_pipe):
    """prompts -> (positive (N, 77, D), negative (N, 77, D)), as the paper's generate.py encodes them."""
    import torch

    def encode_prompts(prompts):
        pairs = [stage_1_pipe.encode_prompt(prompt) for prompt in prompts]
        positive, negative = zip(*pairs, strict=True)
        return torch.cat(positive), torch.cat(negative)

    return encode_prompts
