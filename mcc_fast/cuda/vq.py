"""CUDA wrappers for the nearest-code search (csrc/vq_search.cu)."""
from __future__ import annotations

import torch

from . import extension
from ._common import current_stream, dtype_code


def nearest_code(z: torch.Tensor, codebook: torch.Tensor, start: int, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """z (N, d), codebook (K, d), CUDA, same dtype. Returns int64 (N,), float32 (N,)."""
    ext = extension()
    n, d = z.shape
    idx = torch.empty(n, dtype=torch.int64, device=z.device)
    dist = torch.empty(n, dtype=torch.float32, device=z.device)
    with torch.cuda.device(z.device):
        ext.nearest_code_forward(
            z.data_ptr(), z.stride(0), z.stride(1), codebook.data_ptr(), codebook.stride(0), codebook.stride(1),
            n, d, start, num, dtype_code(z, "z"), idx.data_ptr(), dist.data_ptr(), current_stream(z),
        )
    return idx, dist
