"""The MCC model: keypoints -> dense motion -> per-scale compensation -> frame."""
from __future__ import annotations

from .checkpoint import CheckpointError, convert_official_checkpoint
from .config import ModelConfig
from .model import Model, ModelOutput

__all__ = ["CheckpointError", "Model", "ModelConfig", "ModelOutput", "convert_official_checkpoint"]
