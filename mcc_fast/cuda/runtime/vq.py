"""Run-time launchers of the vector-quantisation kernels: the host code of csrc/vq_search.cu,
line for line, over NVRTC-compiled csrc/vq_search_kernels.cuh. Same functions and arguments
as mcc_fast._cuda's vq_* (see csrc/vq_search.h)."""
from __future__ import annotations

import ctypes

from .launch import F32, I32, I64, PTR, Family, Kernel

# csrc/vq_search_kernels.cuh / vq_search_types.h (tests/test_cuda_runtime.py checks they agree)
ROWS = 64
THREADS = 256
CHUNK = 128
MAX_SEGMENTS = 4


class SegArgs(ctypes.Structure):
    """csrc/vq_search_types.h SegArgs, field for field."""

    _fields_ = [
        ("nseg", ctypes.c_int),
        ("out", ctypes.c_int * MAX_SEGMENTS),
        ("pstart", ctypes.c_int64 * (MAX_SEGMENTS + 1)),
        ("z", ctypes.c_uint64 * MAX_SEGMENTS),
        ("zsn", ctypes.c_int64 * MAX_SEGMENTS),
        ("zsd", ctypes.c_int64 * MAX_SEGMENTS),
        ("g", ctypes.c_uint64 * MAX_SEGMENTS),
        ("gsn", ctypes.c_int64 * MAX_SEGMENTS),
        ("gsd", ctypes.c_int64 * MAX_SEGMENTS),
        ("n", ctypes.c_int64 * MAX_SEGMENTS),
        ("start", ctypes.c_int64 * MAX_SEGMENTS),
        ("num", ctypes.c_int64 * MAX_SEGMENTS),
        ("row_base", ctypes.c_int64 * MAX_SEGMENTS),
        ("cnt_base", ctypes.c_int64 * MAX_SEGMENTS),
    ]


_SEARCH = (SegArgs, PTR, I64, I64, I32, PTR, PTR, PTR, PTR, PTR, PTR)
FAMILY = Family("vq_search_kernels.cuh", {
    "sq_norms": Kernel("mcc::sq_norms_kernel<{T}>", (PTR, I64, I64, I64, I64, I64, PTR)),
    "search": Kernel("mcc::vq_search_kernel<{T}, false, false>", _SEARCH),
    "search_fused": Kernel("mcc::vq_search_kernel<{T}, true, false>", _SEARCH),
    "search_tc": Kernel("mcc::vq_search_kernel<{T}, false, true>", _SEARCH),
    "search_fused_tc": Kernel("mcc::vq_search_kernel<{T}, true, true>", _SEARCH),
    "finalize": Kernel("mcc::vq_finalize_kernel", (SegArgs, I64, PTR, PTR, PTR, F32, PTR, PTR, PTR)),
    "backward_rows": Kernel("mcc::vq_backward_rows_kernel<{T}>", (SegArgs, PTR, I64, I64, I32, PTR, PTR, F32, PTR,
                                                                  PTR)),
    "segsum_chunks": Kernel("mcc::vq_segsum_chunks_kernel<{T}>", (SegArgs, PTR, I64, I64, I32, I64, PTR, PTR, PTR,
                                                                  PTR, PTR, PTR)),
    "segsum_finish": Kernel("mcc::vq_segsum_finish_kernel<{T}>", (PTR, PTR, PTR, PTR, I64, I32, PTR)),
})


def _check_segments(nseg: int, *lists) -> None:
    if nseg < 1 or nseg > MAX_SEGMENTS:
        raise ValueError(f"mcc_fast vq: between 1 and 4 segments per launch, got {nseg}")
    if any(len(v) != nseg for v in lists):
        raise ValueError("mcc_fast vq: per-segment argument lists differ in length")


def vq_search_blocks(n: int) -> int:
    """Search blocks (= loss partials) of a segment with n rows."""
    return (n + ROWS - 1) // ROWS


def vq_segsum_chunk_rows() -> int:
    return CHUNK


def vq_search_forward(z, z_stride_n, z_stride_d, n, start, num, codebook, cb_stride_k, cb_stride_d, codes, d, dtype,
                      esq, indices_out, distances_out, fused, tensor_cores, beta, zq_out, counts32, counts64, parts,
                      loss, perplexity, usage, stream):
    """See csrc/vq_search.h."""
    nseg = len(z)
    _check_segments(nseg, z_stride_n, z_stride_d, n, start, num)
    if d < 1 or d > (1 << 20):
        raise ValueError(f"mcc_fast vq: bad d {d}")
    order = sorted(range(nseg), key=lambda s: -num[s])  # stable: segments with more codes first
    a = SegArgs()
    a.nseg = nseg
    row_base, cnt_base = [], []
    rb = cbase = blocks = 0
    for s in range(nseg):
        row_base.append(rb)
        cnt_base.append(cbase)
        rb += n[s]
        cbase += num[s]
    lo, hi = start[0], start[0] + num[0]
    for q, s in enumerate(order):
        a.out[q] = s
        a.pstart[q] = blocks
        a.z[q] = z[s]
        a.zsn[q], a.zsd[q] = z_stride_n[s], z_stride_d[s]
        a.n[q], a.start[q], a.num[q] = n[s], start[s], num[s]
        a.row_base[q], a.cnt_base[q] = row_base[s], cnt_base[s]
        blocks += vq_search_blocks(n[s])
        lo, hi = min(lo, start[s]), max(hi, start[s] + num[s])
    a.pstart[nseg] = blocks
    rows = hi - lo
    FAMILY.launch("sq_norms", (rows + 7) // 8, 256, stream, codebook, cb_stride_k, cb_stride_d, lo, hi, d, esq,
                  dtype=dtype)
    if blocks > 0:
        kernel = ("search_fused" if fused else "search") + ("_tc" if tensor_cores else "")
        outputs = (zq_out, counts32, parts) if fused else (0, 0, 0)
        FAMILY.launch(kernel, blocks, THREADS, stream, a, codebook, cb_stride_k, cb_stride_d, d, esq, indices_out,
                      distances_out, *outputs, dtype=dtype)
    if fused:
        FAMILY.launch("finalize", nseg, THREADS, stream, a, d, parts, counts32, counts64, beta, loss, perplexity,
                      usage)


def vq_backward_rows(z, z_stride_n, z_stride_d, grad_zq, g_stride_n, g_stride_d, n, codebook, cb_stride_k,
                     cb_stride_d, d, dtype, indices, grad_loss, beta, grad_z_out, atomic, grad_cb32, stream):
    """See csrc/vq_search.h."""
    nseg = len(z)
    _check_segments(nseg, z_stride_n, z_stride_d, grad_zq, g_stride_n, g_stride_d, n)
    a = SegArgs()
    a.nseg = nseg
    rb = blocks = 0
    for s in range(nseg):
        a.out[s] = s
        a.pstart[s] = blocks
        a.z[s], a.zsn[s], a.zsd[s] = z[s], z_stride_n[s], z_stride_d[s]
        a.g[s], a.gsn[s], a.gsd[s] = grad_zq[s], g_stride_n[s], g_stride_d[s]
        a.n[s] = n[s]
        a.row_base[s] = rb
        rb += n[s]
        blocks += (n[s] + 7) // 8
    a.pstart[nseg] = blocks
    if blocks == 0:
        return
    FAMILY.launch("backward_rows", blocks, (32, 8), stream, a, codebook, cb_stride_k, cb_stride_d, d, indices,
                  grad_loss, beta, grad_z_out, grad_cb32 if atomic else 0, dtype=dtype)


def vq_codebook_grad_sorted(z, z_stride_n, z_stride_d, n, codebook, cb_stride_k, cb_stride_d, codes, d, dtype,
                            sorted_codes, order, bounds, grad_loss, head, tail, inner, grad_cb, stream):
    """See csrc/vq_search.h."""
    nseg = len(z)
    _check_segments(nseg, z_stride_n, z_stride_d, n)
    a = SegArgs()
    a.nseg = nseg
    total = 0
    for s in range(nseg):
        a.z[s], a.zsn[s], a.zsd[s] = z[s], z_stride_n[s], z_stride_d[s]
        a.n[s] = n[s]
        a.row_base[s] = total
        total += n[s]
    dblocks = (d + 127) // 128
    chunks = (total + CHUNK - 1) // CHUNK
    if chunks > 0:
        FAMILY.launch("segsum_chunks", (chunks, dblocks), 128, stream, a, codebook, cb_stride_k, cb_stride_d, d,
                      total, sorted_codes, order, grad_loss, head, tail, inner, dtype=dtype)
    FAMILY.launch("segsum_finish", (codes, dblocks), 128, stream, bounds, head, tail, inner, total, d, grad_cb,
                  dtype=dtype)
