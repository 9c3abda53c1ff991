"""The MCC generator (official `AppMotionCompFormer`): config, reference model, key converter."""
from __future__ import annotations

from .config import CODEBOOK_ALLOCATIONS, GeneratorConfig
from .generator import Generator
from .keys import convert_generator_state_dict, official_key_map
from .outputs import DenseMotion, GeneratorOutput, SourceFeatures, TrainingOutputs

__all__ = [
    "CODEBOOK_ALLOCATIONS",
    "DenseMotion",
    "Generator",
    "GeneratorConfig",
    "GeneratorOutput",
    "SourceFeatures",
    "TrainingOutputs",
    "convert_generator_state_dict",
    "official_key_map",
]
