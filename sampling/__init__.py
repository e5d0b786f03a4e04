"""The multi-view sampling core: pure torch + diffusers, no ComfyUI import.

``sample_stage_1`` and ``sample_stage_2`` run Visual Anagrams over any DeepFloyd
IF UNet and scheduler; ``PromptEmbeddings`` carries one prompt per view.
"""

from .errors import SamplingCancelled, SamplingInputError
from .multiview import REDUCTIONS, MultiViewDenoiser, PromptEmbeddings
from .schedules import IF_SCHEDULE_NAMES, if_timestep_schedule
from .stages import SampleResult, StepInfo, candidate_generators, sample_stage_1, sample_stage_2

__all__ = [
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
]
