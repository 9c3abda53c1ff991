"""Plain-PyTorch reference for the nearest-code search (the oracle for the kernels).

Follows the official formulation: distance = |z|^2 + |e|^2 - 2 z.e over the searched rows,
argmin (ties to the lowest index).
"""
from __future__ import annotations

import torch


def nearest_code(z: torch.Tensor, codebook: torch.Tensor, start: int, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest rows of codebook[start:start+num] for each row of z.

    z: (N, d) float; codebook: (K, d) float. Returns int64 indices (N,) into the whole
    codebook and float32 squared distances (N,), clamped at 0. Distances accumulate in
    float32 (float64 inputs stay float64 internally, then cast).
    """
    acc = torch.float64 if (z.dtype == torch.float64 or codebook.dtype == torch.float64) else torch.float32
    zf = z.to(acc)
    ef = codebook[start:start + num].to(acc)
    dist = (zf * zf).sum(1, keepdim=True) + (ef * ef).sum(1)[None, :] - 2.0 * (zf @ ef.t())
    best, idx = torch.min(dist, dim=1)
    return idx + start, best.clamp_min(0).to(torch.float32)
