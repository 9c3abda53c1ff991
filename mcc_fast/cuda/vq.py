"""CUDA wrappers for the nearest-code search and vector quantisation (csrc/vq_search.cu).

Same interface as kernels/vq_search.py (`search`) and kernels/vq_codebook_grad.py
(`backward`), so mcc_fast.ops dispatches to either. The search's dot products run on tensor
cores for fp16/bf16 inputs and for fp32 with precision="tf32" (TF32 operands); fp32 with
"tf32x3" or "ieee" uses fp32 FMA (and so does every search on GPUs older than sm_80). The
deterministic codebook gradient sorts the indices with torch.sort (stable) before the
segment-sum kernels.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from . import extension
from ._common import current_stream, dtype_code

MAX_SEGMENTS = 4


class Segment(NamedTuple):
    """One search: z (N, d) over codebook rows [start, start + num)."""

    z: torch.Tensor
    start: int
    num: int


class ForwardResult(NamedTuple):
    """Same fields as kernels.vq_search.ForwardResult."""

    z_q: torch.Tensor | None
    indices: torch.Tensor
    distances: torch.Tensor
    loss: torch.Tensor | None
    perplexity: torch.Tensor | None
    usage: torch.Tensor | None
    counts: torch.Tensor | None


def _seg_lists(segments: Sequence[Segment]):
    return ([s.z.data_ptr() for s in segments], [s.z.stride(0) for s in segments],
            [s.z.stride(1) for s in segments], [s.z.shape[0] for s in segments])


def search(segments: Sequence[Segment], codebook: torch.Tensor, *, fused: bool, beta: float = 0.25,
           precision: str = "tf32") -> ForwardResult:
    """Up to 4 searches in one launch (plus |e|^2 and finalize). All tensors CUDA, one dtype."""
    ext = extension(device=codebook.device)
    if not 1 <= len(segments) <= MAX_SEGMENTS:
        raise ValueError(f"between 1 and {MAX_SEGMENTS} segments per launch, got {len(segments)}")
    device, dtype = codebook.device, codebook.dtype
    code = dtype_code(codebook, "codebook")
    k, d = codebook.shape
    tensor_cores = dtype != torch.float32 or precision == "tf32"
    zp, zsn, zsd, rows = _seg_lists(segments)
    total = sum(rows)
    idx = torch.empty(total, dtype=torch.int64, device=device)
    dist = torch.empty(total, dtype=torch.float32, device=device)
    esq = torch.empty(k, dtype=torch.float32, device=device)
    nseg = len(segments)
    if fused:
        zq = torch.empty(total, d, dtype=dtype, device=device)
        ncodes = sum(s.num for s in segments)
        counts32 = torch.zeros(ncodes, dtype=torch.int32, device=device)
        counts = torch.empty(ncodes, dtype=torch.int64, device=device)
        parts = torch.empty(max(sum(ext.vq_search_blocks(r) for r in rows), 1), dtype=torch.float32, device=device)
        loss = torch.empty(nseg, dtype=torch.float32, device=device)
        ppl = torch.empty_like(loss)
        usage = torch.empty_like(loss)
        ptrs = [t.data_ptr() for t in (zq, counts32, counts, parts, loss, ppl, usage)]
    else:
        ptrs = [0] * 7
    with torch.cuda.device(device):
        ext.vq_search_forward(
            zp, zsn, zsd, rows, [s.start for s in segments], [s.num for s in segments],
            codebook.data_ptr(), codebook.stride(0), codebook.stride(1), k, d, code, esq.data_ptr(),
            idx.data_ptr(), dist.data_ptr(), int(fused), int(tensor_cores), float(beta), *ptrs,
            current_stream(codebook),
        )
    if not fused:
        return ForwardResult(None, idx, dist, None, None, None, None)
    return ForwardResult(zq, idx, dist, loss, ppl, usage, counts)


def nearest_code(z: torch.Tensor, codebook: torch.Tensor, start: int, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """z (N, d), codebook (K, d), CUDA, same dtype. Returns int64 (N,), float32 (N,)."""
    res = search([Segment(z, start, num)], codebook, fused=False)
    return res.indices, res.distances


def backward(segments: Sequence[Segment], codebook: torch.Tensor, indices: torch.Tensor,
             grad_zq: Sequence[torch.Tensor | None], grad_loss: torch.Tensor | None, beta: float,
             *, deterministic: bool, need_codebook_grad: bool = True):
    """Same contract as kernels.vq_codebook_grad.backward."""
    ext = extension(device=codebook.device)
    device, dtype = codebook.device, segments[0].z.dtype
    code = dtype_code(codebook, "codebook")
    k, d = codebook.shape
    zp, zsn, zsd, rows = _seg_lists(segments)
    total = sum(rows)
    grad_zq = [None if g is None else g.to(dtype) for g in grad_zq]
    gp = [0 if g is None else g.data_ptr() for g in grad_zq]
    gsn = [0 if g is None else g.stride(0) for g in grad_zq]
    gsd = [0 if g is None else g.stride(1) for g in grad_zq]
    has_gloss = grad_loss is not None
    gl = grad_loss.to(torch.float32).contiguous() if has_gloss else None
    atomic = has_gloss and need_codebook_grad and not deterministic
    gz = torch.empty(total, d, dtype=dtype, device=device)
    gcb32 = torch.zeros(k, d, dtype=torch.float32, device=device) if atomic else None
    stream = current_stream(codebook)
    with torch.cuda.device(device):
        ext.vq_backward_rows(zp, zsn, zsd, gp, gsn, gsd, rows, codebook.data_ptr(), codebook.stride(0),
                             codebook.stride(1), d, code, indices.data_ptr(), gl.data_ptr() if has_gloss else 0,
                             float(beta), gz.data_ptr(), int(atomic), gcb32.data_ptr() if atomic else 0, stream)
        grad_z = gz
        if not need_codebook_grad:
            return grad_z, None
        if not has_gloss:
            return grad_z, torch.zeros(codebook.shape, dtype=codebook.dtype, device=device)
        if atomic:
            return grad_z, gcb32 if codebook.dtype == torch.float32 else gcb32.to(codebook.dtype)
        sidx, order = torch.sort(indices, stable=True)
        bounds = torch.searchsorted(sidx, torch.arange(k + 1, device=device, dtype=sidx.dtype))
        chunk = ext.vq_segsum_chunk_rows()
        n_chunks = max((total + chunk - 1) // chunk, 1)
        head = torch.empty(n_chunks, d, dtype=torch.float32, device=device)
        tail = torch.empty_like(head)
        inner = torch.empty(k, d, dtype=torch.float32, device=device)
        gcb = torch.empty(k, d, dtype=codebook.dtype, device=device)
        ext.vq_codebook_grad_sorted(zp, zsn, zsd, rows, codebook.data_ptr(), codebook.stride(0), codebook.stride(1),
                                    k, d, code, sidx.data_ptr(), order.data_ptr(), bounds.data_ptr(), gl.data_ptr(),
                                    head.data_ptr(), tail.data_ptr(), inner.data_ptr(), gcb.data_ptr(), stream)
    return grad_z, gcb
