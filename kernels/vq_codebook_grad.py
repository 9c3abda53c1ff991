"""Triton backward of the fused vector quantisation (kernels/vq_search.py).

Per segment s (rows n, chosen code k(n), M_s = N_s * d, g_s = dloss_s, G = dz_q):
    dz_n      = G_n + g_s * 2 * beta / M_s * (z_n - e_k(n))
    dcodebook_k = sum over rows with k(n) = k of g_s * 2 / M_s * (e_k - z_n)
(autograd through beta * mean((sg(e) - z)^2) + mean((e - sg(z))^2) and z + sg(e - z)).
Rows whose index is -1 (non-finite z) get NaN in dz (as autograd through NaN gives) and
add nothing to dcodebook. A segment whose loss gradient is exactly 0 adds nothing.

The codebook gradient is an index-add of the per-row terms, either
 - atomics: fp32 atomic adds into a (K, d) buffer (fast; the summation order varies), or
 - deterministic: rows sorted by code (stable torch.sort), cut into chunks of R sorted
   rows; a segmented scan in each chunk gives every run's sum, runs wholly inside a chunk
   are written straight out, the first and last run of each chunk go to head/tail
   buffers; a second kernel adds, per code, its chunk pieces in a fixed order. Bitwise
   reproducible for a given input and launch configuration, balanced even when every row
   picks the same code.
"""
from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

from .vq_search import MAX_SEGMENTS, Segment, _pad4, _pick
from ._device import on_tensor_device


@triton.jit
def _seg_add(v1, f1, v2, f2):
    # segmented sum: a set flag starts a new run
    return tl.where(f2, v2, v1 + v2), f1 | f2


@triton.jit
def _vq_bwd_rows_kernel(
    z_ptr, g_ptr, cb_ptr, idx_ptr, gl_ptr, gz_ptr, gcb_ptr,
    D, stride_ck, stride_cd, beta,
    pb1, pb2, pb3,
    n0, n1, n2, n3,
    zo0, zo1, zo2, zo3,
    zsn0, zsn1, zsn2, zsn3,
    zsd0, zsd1, zsd2, zsd3,
    go0, go1, go2, go3,
    gsn0, gsn1, gsn2, gsn3,
    gsd0, gsd1, gsd2, gsd3,
    rb0, rb1, rb2, rb3,
    im0, im1, im2, im3,
    HAS_GZQ: tl.constexpr, HAS_GLOSS: tl.constexpr, ATOMIC: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    seg = (pid >= pb1).to(tl.int32) + (pid >= pb2).to(tl.int32) + (pid >= pb3).to(tl.int32)
    p0 = _pick(seg, 0, pb1, pb2, pb3)
    n = _pick(seg, n0, n1, n2, n3)
    zo = _pick(seg, zo0, zo1, zo2, zo3).to(tl.int64)
    zsn = _pick(seg, zsn0, zsn1, zsn2, zsn3).to(tl.int64)
    zsd = _pick(seg, zsd0, zsd1, zsd2, zsd3).to(tl.int64)
    go = _pick(seg, go0, go1, go2, go3).to(tl.int64)
    gsn = _pick(seg, gsn0, gsn1, gsn2, gsn3).to(tl.int64)
    gsd = _pick(seg, gsd0, gsd1, gsd2, gsd3).to(tl.int64)
    rbase = _pick(seg, rb0, rb1, rb2, rb3).to(tl.int64)
    inv_m = _pick(seg, im0, im1, im2, im3)

    rows = (pid - p0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n
    rows64 = rows.to(tl.int64)
    orow = rbase + rows64
    idx = tl.load(idx_ptr + orow, mask=row_ok, other=-1)
    valid = row_ok & (idx >= 0)
    if HAS_GLOSS:
        g = tl.load(gl_ptr + seg)
        use_loss = g != 0.0
        coef_z = 2.0 * beta * g * inv_m
        coef_e = 2.0 * g * inv_m
    erow = cb_ptr + tl.maximum(idx, 0) * stride_ck
    gz_ty = gz_ptr.dtype.element_ty
    for d0 in range(0, D, BLOCK_D):
        dims = d0 + tl.arange(0, BLOCK_D)
        dim_ok = dims < D
        m2d = row_ok[:, None] & dim_ok[None, :]
        out = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
        if HAS_GZQ:
            out += tl.load(g_ptr + go + rows64[:, None] * gsn + dims[None, :] * gsd, mask=m2d,
                           other=0.0).to(tl.float32)
        if HAS_GLOSS:
            if use_loss:
                zt = tl.load(z_ptr + zo + rows64[:, None] * zsn + dims[None, :] * zsd, mask=m2d,
                             other=0.0).to(tl.float32)
                e = tl.load(erow[:, None] + dims[None, :] * stride_cd, mask=valid[:, None] & dim_ok[None, :],
                            other=float("nan")).to(tl.float32)
                out += coef_z * (zt - e)
                if ATOMIC:
                    tl.atomic_add(gcb_ptr + tl.maximum(idx, 0)[:, None] * D + dims[None, :], coef_e * (e - zt),
                                  mask=valid[:, None] & dim_ok[None, :])
        tl.store(gz_ptr + orow[:, None] * D + dims[None, :], out.to(gz_ty), mask=m2d)


@triton.jit
def _vq_segsum_chunks_kernel(
    z_ptr, cb_ptr, sidx_ptr, order_ptr, gl_ptr, head_ptr, tail_ptr, inner_ptr,
    total, D, stride_ck, stride_cd,
    rb1, rb2, rb3,
    zo0, zo1, zo2, zo3,
    zsn0, zsn1, zsn2, zsn3,
    zsd0, zsd1, zsd2, zsd3,
    im0, im1, im2, im3,
    R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    c = tl.program_id(0)
    dims = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dim_ok = dims < D
    lane = tl.arange(0, R)
    first = c.to(tl.int64) * R
    p = first + lane
    last = tl.minimum(total - first, R) - 1  # last valid lane of this chunk
    p_ok = lane <= last
    code = tl.load(sidx_ptr + p, mask=p_ok, other=-1)
    prev = tl.load(sidx_ptr + p - 1, mask=p_ok & (lane > 0), other=-2)
    nxt = tl.load(sidx_ptr + p + 1, mask=lane < last, other=-3)
    code_first = tl.load(sidx_ptr + first)
    code_last = tl.load(sidx_ptr + first + last)
    flag = (code != prev) | (lane == 0)
    run_end = p_ok & ((lane == last) | (nxt != code))

    row = tl.load(order_ptr + p, mask=p_ok, other=0)
    seg = (row >= rb1).to(tl.int32) + (row >= rb2).to(tl.int32) + (row >= rb3).to(tl.int32)
    local = row - _pick(seg, 0, rb1, rb2, rb3)
    zo = _pick(seg, zo0, zo1, zo2, zo3).to(tl.int64)
    zsn = _pick(seg, zsn0, zsn1, zsn2, zsn3).to(tl.int64)
    zsd = _pick(seg, zsd0, zsd1, zsd2, zsd3).to(tl.int64)
    g = tl.load(gl_ptr + seg, mask=p_ok, other=0.0)
    coef = 2.0 * g * _pick(seg, im0, im1, im2, im3)
    valid = p_ok & (code >= 0) & (g != 0.0)
    m2d = valid[:, None] & dim_ok[None, :]
    zt = tl.load(z_ptr + (zo + local * zsn)[:, None] + dims[None, :].to(tl.int64) * zsd[:, None],
                 mask=m2d, other=0.0).to(tl.float32)
    e = tl.load(cb_ptr + tl.maximum(code, 0)[:, None] * stride_ck + dims[None, :] * stride_cd,
                mask=m2d, other=0.0).to(tl.float32)
    t = tl.where(m2d, coef[:, None] * (e - zt), 0.0)
    flags = tl.broadcast_to(flag[:, None], (R, BLOCK_D))
    run_sum, _ = tl.associative_scan((t, flags), 0, _seg_add)

    is_head = code == code_first
    is_tail = code == code_last
    inner = run_end & (code >= 0) & (~is_head) & (~is_tail)
    tl.store(inner_ptr + tl.maximum(code, 0)[:, None] * D + dims[None, :], run_sum,
             mask=inner[:, None] & dim_ok[None, :])
    hrow = c.to(tl.int64) * D + dims
    tl.store(head_ptr + hrow[None, :] + lane[:, None] * 0, run_sum,
             mask=(run_end & is_head)[:, None] & dim_ok[None, :])
    tl.store(tail_ptr + hrow[None, :] + lane[:, None] * 0, run_sum,
             mask=(run_end & is_tail)[:, None] & dim_ok[None, :])


@triton.jit
def _vq_segsum_finish_kernel(
    bounds_ptr, head_ptr, tail_ptr, inner_ptr, gcb_ptr, total, D,
    R: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
):
    k = tl.program_id(0).to(tl.int64)
    dims = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dim_ok = dims < D
    off = tl.load(bounds_ptr + k)
    end = tl.load(bounds_ptr + k + 1)
    has = end > off
    c0 = off // R
    c1 = tl.maximum(end - 1, 0) // R
    single = has & (c0 == c1)
    multi = has & (c0 < c1)
    from_head = single & (off == c0 * R)
    from_tail = single & (~from_head) & (end == tl.minimum((c0 + 1) * R, total))
    from_inner = single & (~from_head) & (~from_tail)
    res = tl.load(head_ptr + c0 * D + dims, mask=dim_ok & from_head, other=0.0)
    res += tl.load(tail_ptr + c0 * D + dims, mask=dim_ok & from_tail, other=0.0)
    res += tl.load(inner_ptr + k * D + dims, mask=dim_ok & from_inner, other=0.0)
    # a run over several chunks: tail of the first + whole middle chunks + head of the last
    acc = tl.load(tail_ptr + c0 * D + dims, mask=dim_ok & multi, other=0.0)
    mid = tl.zeros((BLOCK_C, BLOCK_D), tl.float32)
    for cc in range(c0 + 1, c1, BLOCK_C):
        cs = cc + tl.arange(0, BLOCK_C)
        mid += tl.load(head_ptr + cs[:, None] * D + dims[None, :], mask=(cs < c1)[:, None] & dim_ok[None, :],
                       other=0.0)
    acc += tl.sum(mid, axis=0)
    acc += tl.load(head_ptr + c1 * D + dims, mask=dim_ok & multi, other=0.0)
    res += acc
    tl.store(gcb_ptr + k * D + dims, res.to(gcb_ptr.dtype.element_ty), mask=dim_ok)


CHUNK_ROWS = 128


@on_tensor_device
def backward(segments: Sequence[Segment], codebook: torch.Tensor, indices: torch.Tensor,
             grad_zq: Sequence[torch.Tensor | None], grad_loss: torch.Tensor | None, beta: float,
             *, deterministic: bool, need_codebook_grad: bool = True):
    """Gradients of the fused quantisation: (dz (sum N_s, d), the segments' rows concatenated,
    dcodebook or None).

    indices: (sum N_s,) the forward's concatenated int64 indices. grad_zq: per segment
    gradient of z_q (None when z_q was unused). grad_loss: (S,) gradient of the losses, or
    None. The codebook gradient has the codebook's dtype (accumulated in fp32) and is contiguous.
    """
    nseg = len(segments)
    if not 1 <= nseg <= MAX_SEGMENTS:
        raise ValueError(f"between 1 and {MAX_SEGMENTS} segments per launch, got {nseg}")
    device, dtype = codebook.device, segments[0].z.dtype
    k_rows, d = codebook.shape
    rows = [s.z.shape[0] for s in segments]
    total = sum(rows)
    row_base = [sum(rows[:i]) for i in range(nseg)]
    inv_m = [1.0 / (r * d) if r > 0 else 0.0 for r in rows]
    has_gzq = any(g is not None for g in grad_zq)
    has_gloss = grad_loss is not None
    if has_gzq:
        grad_zq = [torch.zeros_like(s.z) if g is None else g.to(dtype) for g, s in zip(grad_zq, segments)]
    gl = grad_loss.to(torch.float32).contiguous() if has_gloss else torch.zeros(nseg, device=device)

    zbase = next((s.z for s in segments if s.z.shape[0] > 0), segments[0].z)
    ebytes = zbase.element_size()
    zo = _pad4([(s.z.data_ptr() - zbase.data_ptr()) // ebytes for s in segments], 0)
    zsn = _pad4([s.z.stride(0) for s in segments], 0)
    zsd = _pad4([s.z.stride(1) for s in segments], 0)
    if has_gzq:
        gbase = next((g for g in grad_zq if g.shape[0] > 0), grad_zq[0])
        go = _pad4([(g.data_ptr() - gbase.data_ptr()) // ebytes for g in grad_zq], 0)
        gsn = _pad4([g.stride(0) for g in grad_zq], 0)
        gsd = _pad4([g.stride(1) for g in grad_zq], 0)
    else:
        gbase, go, gsn, gsd = zbase, [0] * 4, [0] * 4, [0] * 4

    atomic = has_gloss and need_codebook_grad and not deterministic
    gz_flat = torch.empty(total, d, dtype=dtype, device=device)
    gcb32 = torch.zeros(k_rows, d, dtype=torch.float32, device=device) if atomic else None
    block_n = 32
    block_d = max(16, min(32, triton.next_power_of_2(d)))
    blocks = [triton.cdiv(r, block_n) for r in rows]
    grid_n = sum(blocks)
    pstart = [sum(blocks[:i]) for i in range(nseg)]
    if grid_n > 0:
        _vq_bwd_rows_kernel[(grid_n,)](
            zbase, gbase, codebook, indices, gl, gz_flat, gcb32 if atomic else gz_flat,
            d, codebook.stride(0), codebook.stride(1), float(beta),
            *_pad4(pstart[1:], grid_n + 1)[:3],
            *_pad4(rows, 0), *zo, *zsn, *zsd, *go, *gsn, *gsd, *_pad4(row_base, 0), *_pad4(inv_m, 0.0),
            HAS_GZQ=has_gzq, HAS_GLOSS=has_gloss, ATOMIC=atomic, BLOCK_N=block_n, BLOCK_D=block_d,
        )
    grad_z = gz_flat
    if not need_codebook_grad:
        return grad_z, None
    if not has_gloss:
        return grad_z, torch.zeros(codebook.shape, dtype=codebook.dtype, device=device)
    if atomic:
        return grad_z, gcb32 if codebook.dtype == torch.float32 else gcb32.to(codebook.dtype)

    gcb = torch.empty(k_rows, d, dtype=codebook.dtype, device=device)
    sidx, order = torch.sort(indices, stable=True)
    bounds = torch.searchsorted(sidx, torch.arange(k_rows + 1, device=device, dtype=sidx.dtype))
    n_chunks = triton.cdiv(total, CHUNK_ROWS)
    head = torch.empty(max(n_chunks, 1), d, dtype=torch.float32, device=device)
    tail = torch.empty_like(head)
    inner = torch.empty(k_rows, d, dtype=torch.float32, device=device)
    n_dblk = triton.cdiv(d, block_d)
    if n_chunks > 0:
        _vq_segsum_chunks_kernel[(n_chunks, n_dblk)](
            zbase, codebook, sidx, order, gl, head, tail, inner,
            total, d, codebook.stride(0), codebook.stride(1),
            *_pad4(row_base[1:], total + 1)[:3], *zo, *zsn, *zsd, *_pad4(inv_m, 0.0),
            R=CHUNK_ROWS, BLOCK_D=block_d,
        )
    _vq_segsum_finish_kernel[(k_rows, n_dblk)](
        bounds, head, tail, inner, gcb, total, d, R=CHUNK_ROWS, BLOCK_C=16, BLOCK_D=block_d,
    )
    return grad_z, gcb


def _seg_scalars(*groups) -> dict:
    return {f"{p}{i}": ty for p, ty in groups for i in range(MAX_SEGMENTS)}


def _rows_spec(t: str, atomic: bool, d: int) -> dict:
    sig = {"z_ptr": f"*{t}", "g_ptr": f"*{t}", "cb_ptr": f"*{t}", "idx_ptr": "*i64", "gl_ptr": "*fp32",
           "gz_ptr": f"*{t}", "gcb_ptr": "*fp32", "D": "i32", "stride_ck": "i32", "stride_cd": "i32",
           "beta": "fp32", "pb1": "i32", "pb2": "i32", "pb3": "i32",
           **_seg_scalars(("n", "i32"), ("zo", "i64"), ("zsn", "i32"), ("zsd", "i32"), ("go", "i64"),
                          ("gsn", "i32"), ("gsd", "i32"), ("rb", "i32"), ("im", "fp32"))}
    return dict(fn=_vq_bwd_rows_kernel, signature=sig,
                constexprs={"HAS_GZQ": True, "HAS_GLOSS": True, "ATOMIC": atomic, "BLOCK_N": 32,
                            "BLOCK_D": max(16, min(32, triton.next_power_of_2(d)))},
                name=f"vq_bwd_rows[{t},{'atomic' if atomic else 'plain'},D{d}]")


def _chunks_spec(t: str, d: int) -> dict:
    sig = {"z_ptr": f"*{t}", "cb_ptr": f"*{t}", "sidx_ptr": "*i64", "order_ptr": "*i64", "gl_ptr": "*fp32",
           "head_ptr": "*fp32", "tail_ptr": "*fp32", "inner_ptr": "*fp32", "total": "i32", "D": "i32",
           "stride_ck": "i32", "stride_cd": "i32", "rb1": "i32", "rb2": "i32", "rb3": "i32",
           **_seg_scalars(("zo", "i64"), ("zsn", "i32"), ("zsd", "i32"), ("im", "fp32"))}
    return dict(fn=_vq_segsum_chunks_kernel, signature=sig,
                constexprs={"R": CHUNK_ROWS, "BLOCK_D": max(16, min(32, triton.next_power_of_2(d)))},
                name=f"vq_segsum_chunks[{t},D{d}]")


# Representative compilations checked in CI for sm_86/sm_90 (tests/test_triton_compile.py).
COMPILE_SPECS = (
    [_rows_spec(t, atomic, d) for t in ("fp32", "bf16") for atomic in (False, True) for d in (32, 256)]
    + [_chunks_spec(t, d) for t in ("fp32", "bf16") for d in (32, 256)]
    + [dict(fn=_vq_segsum_finish_kernel,
            signature={"bounds_ptr": "*i64", "head_ptr": "*fp32", "tail_ptr": "*fp32", "inner_ptr": "*fp32",
                       "gcb_ptr": f"*{t}", "total": "i32", "D": "i32"},
            constexprs={"R": CHUNK_ROWS, "BLOCK_C": 16, "BLOCK_D": 32}, name=f"vq_segsum_finish[{t}]")
       for t in ("fp32", "bf16")]
)
