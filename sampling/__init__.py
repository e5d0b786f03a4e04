"""The multi-view sampling core: pure torch + diffusers, no ComfyUI import.

``sample_stage_1`` and ``sample_stage_2`` run Visual Anagrams over any DeepFloyd
IF UNet and scheduler; ``PromptEmbeddings`` carries one prompt per view.
``load_if_stage`` / ``load_t5`` / ``encode_prompts`` load the models and encode
prompts the way IF's own pipeline does. ``load_clip`` / ``load_glide_clip`` load a
CLIP that ``score_illusions`` / ``rank_candidates`` judge candidates with and
``ViewBalancing`` balances the views with.
"""

from .anti_segregation import AntiSegregation
from .balancing import ViewBalancing
from .clip_models import ClipModel, load_clip
from .errors import SamplingCancelled, SamplingInputError
from .glide_clip import GlideClip, load_glide_clip
from .illusion_scores import IllusionScores, rank_candidates, score_illusions
from .loading import DTYPES, HUB_IDS, OFFLOADS, LoadedStage, estimated_bytes, load_if_stage, release
from .model_errors import LoadCancelled, ModelLoadError
from .multiview import REDUCTIONS, MultiViewDenoiser, PromptEmbeddings
from .schedules import IF_SCHEDULE_NAMES, if_timestep_schedule
from .stages import (
    SampleResult,
    StepInfo,
    candidate_generators,
    sample_stage_1,
    sample_stage_2,
    stage_1_generators_after,
)
from .text import PRECISIONS, T5Encoder, encode_prompts, load_t5, release_t5

__all__ = [
    "AntiSegregation",
    "ClipModel",
    "GlideClip",
    "IllusionScores",
    "ViewBalancing",
    "load_clip",
    "load_glide_clip",
    "rank_candidates",
    "score_illusions",
    "DTYPES",
    "HUB_IDS",
    "OFFLOADS",
    "PRECISIONS",
    "LoadCancelled",
    "LoadedStage",
    "ModelLoadError",
    "T5Encoder",
    "encode_prompts",
    "estimated_bytes",
    "load_if_stage",
    "load_t5",
    "release",
    "release_t5",
    "IF_SCHEDULE_NAMES",
    "REDUCTIONS",
    "MultiViewDenoiser",
    "PromptEmbeddings",
    "SampleResult",
    "SamplingCancelled",
    "SamplingInputError",
    "StepInfo",
    "candidate_generators",
    "if_timestep_schedule",
    "sample_stage_1",
    "sample_stage_2",
    "stage_1_generators_after",
]
