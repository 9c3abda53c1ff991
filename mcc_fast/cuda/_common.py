"""Helpers shared by the CUDA wrappers: dtype codes, current stream, argument checks."""
from __future__ import annotations

import torch

# Must match csrc/common.h (enum DType).
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def dtype_code(t: torch.Tensor, name: str) -> int:
    try:
        return DTYPE_CODES[t.dtype]
    except KeyError:
        raise TypeError(f"{name}: the cuda backend supports float32/float16/bfloat16, got {t.dtype}") from None


def current_stream(t: torch.Tensor) -> int:
    """The raw cudaStream_t of torch's current stream on t's device."""
    return torch.cuda.current_stream(t.device).cuda_stream
