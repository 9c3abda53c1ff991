"""Nearest-code search over codebook prefixes (public op, dispatched to torch/triton/cuda)."""
from __future__ import annotations

import torch

from .._dispatch import resolve_backend
from ..reference import vq as reference
from ._checks import check_same_device, check_tensor


def _run_kernel(z: torch.Tensor, codebook: torch.Tensor, start: int, num: int, backend: str):
    if backend == "cuda":
        from ..cuda import vq as cuda_vq

        return cuda_vq.nearest_code(z, codebook, start, num)
    from ..kernels import vq_search

    return vq_search.nearest_code(z, codebook, start, num)


@torch.library.custom_op("mcc_fast::nearest_code", mutates_args=())
def _nearest_code_op(z: torch.Tensor, codebook: torch.Tensor, start: int, num: int, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _run_kernel(z.contiguous(), codebook.contiguous(), start, num, backend)


@_nearest_code_op.register_fake
def _(z, codebook, start, num, backend):
    n = z.shape[0]
    return z.new_empty(n, dtype=torch.int64), z.new_empty(n, dtype=torch.float32)


def _check_search_args(z, codebook, num_codes, start) -> int:
    check_tensor(z, "z", ndim=2)
    check_tensor(codebook, "codebook", ndim=2)
    check_same_device(z=z, codebook=codebook)
    if z.shape[1] != codebook.shape[1]:
        raise ValueError(f"z has d={z.shape[1]} but codebook has d={codebook.shape[1]}; they must match")
    k = codebook.shape[0]
    if not isinstance(start, int) or not 0 <= start < max(k, 1):
        raise ValueError(f"start must be an int in [0, {k}), got {start!r}")
    num = k - start if num_codes is None else num_codes
    if not isinstance(num, int) or num < 1 or start + num > k:
        raise ValueError(f"num_codes must be an int in [1, {k - start}] (codebook has {k} rows, start={start}), got {num_codes!r}")
    return num


def nearest_code(z: torch.Tensor, codebook: torch.Tensor, num_codes: int | None = None, start: int = 0, *,
                 backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest codebook row for every query row, over rows [start, start + num_codes).

    z: (N, d) float32/float16/bfloat16; codebook: (K, d), same device. num_codes: rows to
    search (all from `start` when None). Returns (indices int64 (N,) into the whole
    codebook, squared distances float32 (N,), never negative). Ties go to the lowest index.
    backend: None (auto), "torch", "triton" or "cuda".
    """
    num = _check_search_args(z, codebook, num_codes, start)
    chosen = resolve_backend(backend, z, codebook, op="nearest_code")
    if chosen == "torch":
        return reference.nearest_code(z.detach(), codebook.detach(), start, num)
    if codebook.dtype != z.dtype:
        codebook = codebook.to(z.dtype)
    if z.dtype == torch.float64:
        raise TypeError(f"z: the {chosen} backend supports float32/float16/bfloat16, got float64")
    return _nearest_code_op(z.detach(), codebook.detach(), start, num, chosen)
