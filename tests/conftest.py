import os
import sys
from pathlib import Path

import pytest

# Tests never reach a model hub: the tiny models are built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

sys.path.insert(0, str(Path(__file__).resolve().parent))


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
        positive, negative = zip(*pairs)
        return torch.cat(positive), torch.cat(negative)

    return encode_prompts
