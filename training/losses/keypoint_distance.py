"""Keypoint distance loss (from MRFA, official ``KPDistanceLoss``).

For each keypoint set (source and driving), with D_ij = sqrt(|kp_i - kp_j|**2 + 1e-8):

    term = mean over (B, K, K) of (1 - sign(D_ij + 0.2 * [i == j] - 0.2))

so an off-diagonal pair closer than 0.2 counts 2, a pair exactly 0.2 apart counts 1, farther
pairs and the diagonal (D_ii = 1e-4 after the +0.2 -0.2 shift) count 0. The loss is the sum of
the two terms times the weight.

Note: ``sign`` has zero gradient everywhere, so this loss only *reports* how many keypoints
collapse together; it contributes no gradient (this is the official behaviour, kept as is).
"""
from __future__ import annotations

from typing import Any

import torch

from .equivariance import keypoint_parts

__all__ = ["keypoint_distance_term", "keypoint_distance_loss"]


def keypoint_distance_term(kp: torch.Tensor, threshold: float = 0.2) -> torch.Tensor:
    """One keypoint set's term: kp (B, K, 2) float -> () in kp's dtype (see module docstring)."""
    kp, _ = keypoint_parts(kp, "kp")
    k = kp.shape[1]
    diff = kp.unsqueeze(2) - kp.unsqueeze(1)
    distance = torch.sqrt((diff * diff).sum(-1) + 1e-8)
    eye = torch.eye(k, dtype=kp.dtype, device=kp.device)
    return (1 - torch.sign(distance + eye * threshold - threshold)).mean()


def keypoint_distance_loss(kp_source: Any, kp_driving: Any, threshold: float = 0.2) -> torch.Tensor:
    """term(kp_source) + term(kp_driving), each a (B, K, 2) tensor, mapping or Keypoints -> ()."""
    source, _ = keypoint_parts(kp_source, "kp_source")
    driving, _ = keypoint_parts(kp_driving, "kp_driving")
    if source.shape != driving.shape:
        raise ValueError(f"kp_source {tuple(source.shape)} and kp_driving {tuple(driving.shape)} must match")
    return keypoint_distance_term(source, threshold) + keypoint_distance_term(driving, threshold)
