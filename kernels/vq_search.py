"""Triton nearest-code search and fused vector quantisation (forward).

One launch searches up to four "segments" (a segment = one input z_s (N_s, d) searching
codebook rows [start_s, start_s + num_s)): the single-scale op is the one-segment case and
the multi-scale form runs every scale's search together. Per program: BLOCK_N query rows
of one segment, a loop over BLOCK_K code tiles, each a `tl.dot` over BLOCK_D slices of d
(fp32 accumulation), |e|^2 precomputed, and a running top-2 (value, index) in registers.
The N x K distance matrix is never stored.

Candidates come from the approximate distance |e|^2 - 2 z.e (tensor cores: TF32 for fp32
inputs by default, exact products for fp16/bf16). The epilogue re-ranks the two best
candidates by the exact pairwise difference d(z,e1) - d(z,e2) = sum (e1-e2)(e1+e2-2z)
in fp32 (no |z|^2 cancellation), reports the direct fp32 distance sum (z - e)^2 of the
winner, and (quantize) writes the straight-through z_q, the per-program loss partial sum
and the code histogram (int32 atomics: exact, so deterministic).

Guarantee (see mcc_fast.ops.nearest_code): the result is the exact fp32 argmin whenever
the exact nearest code is one of the two best approximate candidates, i.e. whenever at
most one other code's approximate distance is within 2*tau of it, tau being the error
bound of the approximate distance. Exact ties (equal codebook rows) go to the lowest index.

Rows of z containing NaN or +-Inf get index -1 and distance NaN; codebook rows containing
NaN/Inf are never chosen (if no searched row is usable the index is -1).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import triton
import triton.language as tl

from ._device import on_tensor_device

MAX_SEGMENTS = 4
PRECISIONS = ("tf32", "tf32x3", "ieee")


@triton.jit
def _pick(s, a0, a1, a2, a3):
    """a_s for segment s in 0..3 (scalar or vector s)."""
    return tl.where(s == 0, a0, tl.where(s == 1, a1, tl.where(s == 2, a2, a3)))


@triton.jit
def _round_tf32(x):
    # test-only emulation of TF32 operand rounding (truncate the low 13 mantissa bits)
    bits = x.to(tl.int32, bitcast=True) & -8192
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _rtne_bf16(x):
    # fp32 -> the nearest bf16 value (ties to even), kept in fp32
    bits = x.to(tl.int32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _sq_norms_kernel(cb_ptr, out_ptr, lo, hi, D, stride_k, stride_d,
                     BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """out[k] = sum_d cb[k, d]^2 (fp32) for k in [lo, hi)."""
    rows = lo + tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    ok = rows < hi
    acc = tl.zeros((BLOCK_R,), tl.float32)
    for d0 in range(0, D, BLOCK_D):
        dims = d0 + tl.arange(0, BLOCK_D)
        e = tl.load(cb_ptr + rows.to(tl.int64)[:, None] * stride_k + dims[None, :] * stride_d,
                    mask=ok[:, None] & (dims < D)[None, :], other=0.0).to(tl.float32)
        acc += tl.sum(e * e, axis=1)
    tl.store(out_ptr + rows, acc, mask=ok)


@triton.jit
def _vq_search_kernel(
    z_ptr, cb_ptr, esq_ptr, idx_ptr, dist_ptr, zq_ptr, cnt_ptr, part_ptr,
    D, stride_ck, stride_cd,
    pb1, pb2, pb3,
    n0, n1, n2, n3,
    zo0, zo1, zo2, zo3,
    zsn0, zsn1, zsn2, zsn3,
    zsd0, zsd1, zsd2, zsd3,
    st0, st1, st2, st3,
    nc0, nc1, nc2, nc3,
    rb0, rb1, rb2, rb3,
    cb0, cb1, cb2, cb3,
    FUSED: tl.constexpr, PRECISION: tl.constexpr, EMULATE_TF32: tl.constexpr, UPCAST: tl.constexpr,
    HALF: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DE: tl.constexpr,
):
    pid = tl.program_id(0)
    seg = (pid >= pb1).to(tl.int32) + (pid >= pb2).to(tl.int32) + (pid >= pb3).to(tl.int32)
    p0 = _pick(seg, 0, pb1, pb2, pb3)
    n = _pick(seg, n0, n1, n2, n3)
    zo = _pick(seg, zo0, zo1, zo2, zo3).to(tl.int64)
    zsn = _pick(seg, zsn0, zsn1, zsn2, zsn3).to(tl.int64)
    zsd = _pick(seg, zsd0, zsd1, zsd2, zsd3).to(tl.int64)
    start = _pick(seg, st0, st1, st2, st3)
    num = _pick(seg, nc0, nc1, nc2, nc3)
    rbase = _pick(seg, rb0, rb1, rb2, rb3).to(tl.int64)
    cbase = _pick(seg, cb0, cb1, cb2, cb3)

    rows = (pid - p0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n
    zrow = z_ptr + zo + rows.to(tl.int64) * zsn  # (BLOCK_N,) pointers

    inf = float("inf")
    b1 = tl.full((BLOCK_N,), inf, tl.float32)
    b2 = tl.full((BLOCK_N,), inf, tl.float32)
    j1 = tl.full((BLOCK_N,), -1, tl.int32)
    j2 = tl.full((BLOCK_N,), -1, tl.int32)
    big = 2147483647
    for k0 in range(0, num, BLOCK_K):
        codes = k0 + tl.arange(0, BLOCK_K)
        code_ok = codes < num
        crow = cb_ptr + (start + codes).to(tl.int64) * stride_ck
        acc = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
        for d0 in range(0, D, BLOCK_D):
            dims = d0 + tl.arange(0, BLOCK_D)
            dim_ok = dims < D
            zt = tl.load(zrow[:, None] + dims[None, :] * zsd,
                         mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
            et = tl.load(crow[None, :] + dims[:, None] * stride_cd,
                         mask=code_ok[None, :] & dim_ok[:, None], other=0.0)
            if EMULATE_TF32:
                zt = _round_tf32(zt.to(tl.float32))
                et = _round_tf32(et.to(tl.float32))
            elif UPCAST:
                zt = zt.to(tl.float32)
                et = et.to(tl.float32)
            acc = tl.dot(zt, et, acc, input_precision=PRECISION)
        esq = tl.load(esq_ptr + start + codes, mask=code_ok, other=inf)
        dist = esq[None, :] - 2.0 * acc
        # NaN (a non-finite codebook row, or a non-finite z row) is never a candidate
        dist = tl.where((dist == dist) & code_ok[None, :], dist, inf)
        m1 = tl.min(dist, axis=1)
        i1 = tl.min(tl.where(dist == m1[:, None], codes[None, :], big), axis=1)
        dist2 = tl.where(codes[None, :] == i1[:, None], inf, dist)
        m2 = tl.min(dist2, axis=1)
        i2 = tl.min(tl.where(dist2 == m2[:, None], codes[None, :], big), axis=1)
        # merge the tile's top-2 into the running top-2; tiles come in increasing code
        # order, so on equal values the running entry (lower index) wins
        take = m1 < b1
        s_val = tl.where(take, tl.where(m2 < b1, m2, b1), tl.where(m1 < b2, m1, b2))
        s_idx = tl.where(take, tl.where(m2 < b1, i2, j1), tl.where(m1 < b2, i1, j2))
        b1 = tl.where(take, m1, b1)
        j1 = tl.where(take, i1, j1)
        b2 = s_val
        j2 = s_idx

    # re-rank the two candidates exactly (fp32, difference form) and flag non-finite rows
    has1 = row_ok & (j1 >= 0)
    has2 = row_ok & (j2 >= 0)
    e1row = cb_ptr + (start + tl.maximum(j1, 0)).to(tl.int64) * stride_ck
    e2row = cb_ptr + (start + tl.maximum(j2, 0)).to(tl.int64) * stride_ck
    d1 = tl.zeros((BLOCK_N,), tl.float32)
    d2 = tl.zeros((BLOCK_N,), tl.float32)
    dx = tl.zeros((BLOCK_N,), tl.float32)
    bad = tl.zeros((BLOCK_N,), tl.int32)
    for d0 in range(0, D, BLOCK_DE):
        dims = d0 + tl.arange(0, BLOCK_DE)
        dim_ok = dims < D
        zt = tl.load(zrow[:, None] + dims[None, :] * zsd,
                     mask=row_ok[:, None] & dim_ok[None, :], other=0.0).to(tl.float32)
        e1 = tl.load(e1row[:, None] + dims[None, :] * stride_cd,
                     mask=has1[:, None] & dim_ok[None, :], other=0.0).to(tl.float32)
        e2 = tl.load(e2row[:, None] + dims[None, :] * stride_cd,
                     mask=has2[:, None] & dim_ok[None, :], other=0.0).to(tl.float32)
        a = e1 - zt
        b = e2 - zt
        d1 += tl.sum(a * a, axis=1)
        d2 += tl.sum(b * b, axis=1)
        dx += tl.sum((e1 - e2) * (a + b), axis=1)
        nonfinite = (zt != zt) | (tl.abs(zt) == inf)
        bad = tl.maximum(bad, tl.max(nonfinite.to(tl.int32), axis=1))
    take2 = has2 & ((dx > 0.0) | ((dx == 0.0) & (j2 < j1)))
    jbest = tl.where(take2, j2, j1)
    dbest = tl.where(take2, d2, d1)
    valid = has1 & (bad == 0)
    out_idx = tl.where(valid, (start + jbest).to(tl.int64), -1)
    out_dist = tl.where(valid, dbest, float("nan"))
    orow = rbase + rows.to(tl.int64)
    tl.store(idx_ptr + orow, out_idx, mask=row_ok)
    tl.store(dist_ptr + orow, out_dist, mask=row_ok)

    if FUSED:
        erow = cb_ptr + (start + tl.maximum(jbest, 0)).to(tl.int64) * stride_ck
        zq_ty = zq_ptr.dtype.element_ty
        for d0 in range(0, D, BLOCK_DE):
            dims = d0 + tl.arange(0, BLOCK_DE)
            dim_ok = dims < D
            m2d = row_ok[:, None] & dim_ok[None, :]
            zt = tl.load(zrow[:, None] + dims[None, :] * zsd, mask=m2d, other=0.0).to(tl.float32)
            e = tl.load(erow[:, None] + dims[None, :] * stride_cd,
                        mask=valid[:, None] & dim_ok[None, :], other=float("nan")).to(tl.float32)
            # z + sg(e - z), rounded like the reference: (e - z) then the sum, each in z's dtype
            if UPCAST:  # interpreter: its fp32 -> bf16 cast truncates, round to nearest even here
                diff = _rtne_bf16(e - zt)
                zq = _rtne_bf16(zt + diff).to(zq_ty)
            elif HALF:
                diff = (e - zt).to(zq_ty).to(tl.float32)
                zq = (zt + diff).to(zq_ty)
            else:
                zq = zt + (e - zt)
            tl.store(zq_ptr + orow[:, None] * D + dims[None, :], zq, mask=m2d)
        tl.store(part_ptr + pid, tl.sum(tl.where(row_ok, out_dist, 0.0), axis=0))
        tl.atomic_add(cnt_ptr + cbase + jbest, tl.full((BLOCK_N,), 1, tl.int32), mask=valid)


@triton.jit
def _vq_finalize_kernel(
    part_ptr, cnt_ptr, cnt64_ptr, loss_ptr, ppl_ptr, usage_ptr, beta,
    pp0, pp1, pp2, pp3, pp4,
    oi0, oi1, oi2, oi3,
    nc0, nc1, nc2, nc3,
    cb0, cb1, cb2, cb3,
    n0, n1, n2, n3,
    invm0, invm1, invm2, invm3,
    BLOCK: tl.constexpr,
):
    """Per segment: loss = beta * mean + mean of the row distances, perplexity, usage."""
    s = tl.program_id(0)
    out = _pick(s, oi0, oi1, oi2, oi3)
    p_lo = _pick(s, pp0, pp1, pp2, pp3)
    p_hi = _pick(s, pp1, pp2, pp3, pp4)
    num = _pick(s, nc0, nc1, nc2, nc3)
    cbase = _pick(s, cb0, cb1, cb2, cb3)
    n = _pick(s, n0, n1, n2, n3)
    inv_m = _pick(s, invm0, invm1, invm2, invm3)
    acc = tl.zeros((BLOCK,), tl.float32)
    for p in range(p_lo, p_hi, BLOCK):
        offs = p + tl.arange(0, BLOCK)
        acc += tl.load(part_ptr + offs, mask=offs < p_hi, other=0.0)
    mean = tl.sum(acc, axis=0) * inv_m
    tl.store(loss_ptr + out, beta * mean + mean)
    ent = tl.zeros((BLOCK,), tl.float32)
    used = tl.zeros((BLOCK,), tl.float32)
    inv_n = 1.0 / n
    for c in range(0, num, BLOCK):
        offs = c + tl.arange(0, BLOCK)
        ok = offs < num
        cnt = tl.load(cnt_ptr + cbase + offs, mask=ok, other=0)
        tl.store(cnt64_ptr + cbase + offs, cnt.to(tl.int64), mask=ok)
        pr = cnt.to(tl.float32) * inv_n
        ent += pr * tl.log(pr + 1e-10)
        used += (cnt > 0).to(tl.float32)
    tl.store(ppl_ptr + out, tl.exp(-tl.sum(ent, axis=0)))
    tl.store(usage_ptr + out, tl.sum(used, axis=0) / num)


class Segment(NamedTuple):
    """One search: z (N, d) over codebook rows [start, start + num)."""

    z: torch.Tensor
    start: int
    num: int


class ForwardResult(NamedTuple):
    """Outputs of a (multi-segment) search, in the segments' order.

    z_q: (sum N_s, d) straight-through values, the segments' rows concatenated (None unless fused).
    indices/distances: (sum N_s,) concatenated int64 / float32.
    loss, perplexity, usage: (S,) float32 (None unless fused).
    counts: (sum num_s,) int64 histograms, concatenated (None unless fused).
    """

    z_q: torch.Tensor | None
    indices: torch.Tensor
    distances: torch.Tensor
    loss: torch.Tensor | None
    perplexity: torch.Tensor | None
    usage: torch.Tensor | None
    counts: torch.Tensor | None


def search_config(d: int, dtype: torch.dtype, rows: int, precision: str = "tf32") -> dict:
    """Block sizes and launch options of the search kernel (heuristic, per shape/dtype)."""
    block_d = 16 if dtype == torch.float32 else max(16, min(32, triton.next_power_of_2(d)))
    big = rows >= 65536 and d >= 128
    ieee = dtype == torch.float32 and precision == "ieee"  # FMA dot: more registers per tile
    return dict(BLOCK_N=128 if big else 64, BLOCK_K=64, BLOCK_D=block_d, BLOCK_DE=16,
                num_warps=8 if (big or ieee) else 4, num_stages=3 if d >= 64 else 2)


def _esq(codebook: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    k, d = codebook.shape
    out = torch.empty(k, dtype=torch.float32, device=codebook.device)
    block_d = max(16, min(64, triton.next_power_of_2(d)))
    _sq_norms_kernel[(triton.cdiv(hi - lo, 32),)](
        codebook, out, lo, hi, d, codebook.stride(0), codebook.stride(1), BLOCK_R=32, BLOCK_D=block_d)
    return out


def _interpreting() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _pad4(values, fill):
    values = list(values)
    return values + [fill] * (MAX_SEGMENTS - len(values))


@on_tensor_device
def search(segments: Sequence[Segment], codebook: torch.Tensor, *, fused: bool, beta: float = 0.25,
           precision: str = "tf32", _emulate_tf32: bool = False) -> ForwardResult:
    """Run up to MAX_SEGMENTS searches in one launch (plus the |e|^2 and finalize launches).

    All z and the codebook share one dtype (float32/float16/bfloat16) and device; z may be
    strided. precision (float32 only): "tf32" (tensor cores, re-ranked), "tf32x3", "ieee".
    """
    if not 1 <= len(segments) <= MAX_SEGMENTS:
        raise ValueError(f"between 1 and {MAX_SEGMENTS} segments per launch, got {len(segments)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device, dtype = codebook.device, codebook.dtype
    d = codebook.shape[1]
    rows = [s.z.shape[0] for s in segments]
    total = sum(rows)
    # 16-bit operands: products are exact in fp32 whatever the precision setting. The
    # interpreter's dot has no bfloat16: there the tiles are widened to fp32 first.
    upcast = dtype == torch.bfloat16 and _interpreting()
    if dtype != torch.float32 or _emulate_tf32:
        precision = "ieee" if (_emulate_tf32 or upcast) else "tf32"
    cfg = search_config(d, dtype, total, precision)
    bn = cfg["BLOCK_N"]

    row_base = [sum(rows[:i]) for i in range(len(rows))]
    cnt_base = [sum(s.num for s in segments[:i]) for i in range(len(segments))]
    idx = torch.empty(total, dtype=torch.int64, device=device)
    dist = torch.empty(total, dtype=torch.float32, device=device)
    lo = min(s.start for s in segments)
    hi = max(s.start + s.num for s in segments)
    esq = _esq(codebook, lo, hi)

    # heavier segments (more codes) first: their programs start earliest
    order = sorted(range(len(segments)), key=lambda i: -segments[i].num)
    blocks = [triton.cdiv(rows[i], bn) for i in order]
    grid_n = sum(blocks)
    pstart = [sum(blocks[:i]) for i in range(len(blocks))]
    pb = _pad4(pstart[1:], grid_n + 1)[:3]
    base = next((s.z for s in segments if s.z.shape[0] > 0), segments[0].z)
    ebytes = base.element_size()

    def per_seg(fn, fill=0):
        return _pad4([fn(i) for i in order], fill)

    z_off = per_seg(lambda i: (segments[i].z.data_ptr() - base.data_ptr()) // ebytes)
    if fused:
        zq_flat = torch.empty(total, d, dtype=dtype, device=device)
        counts32 = torch.zeros(sum(s.num for s in segments), dtype=torch.int32, device=device)
        parts = torch.empty(max(grid_n, 1), dtype=torch.float32, device=device)
    else:
        zq_flat, counts32, parts = idx, idx, dist  # unused placeholders
    if grid_n > 0:
        _vq_search_kernel[(grid_n,)](
            base, codebook, esq, idx, dist, zq_flat, counts32, parts,
            d, codebook.stride(0), codebook.stride(1),
            *pb,
            *per_seg(lambda i: rows[i]),
            *z_off,
            *per_seg(lambda i: segments[i].z.stride(0)),
            *per_seg(lambda i: segments[i].z.stride(1)),
            *per_seg(lambda i: segments[i].start),
            *per_seg(lambda i: segments[i].num, 1),
            *per_seg(lambda i: row_base[i]),
            *per_seg(lambda i: cnt_base[i]),
            FUSED=fused, PRECISION=precision, EMULATE_TF32=_emulate_tf32, UPCAST=upcast,
            HALF=dtype != torch.float32,
            BLOCK_N=bn, BLOCK_K=cfg["BLOCK_K"], BLOCK_D=cfg["BLOCK_D"], BLOCK_DE=cfg["BLOCK_DE"],
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )
    if not fused:
        return ForwardResult(None, idx, dist, None, None, None, None)

    nseg = len(segments)
    loss = torch.empty(nseg, dtype=torch.float32, device=device)
    ppl = torch.empty(nseg, dtype=torch.float32, device=device)
    usage = torch.empty(nseg, dtype=torch.float32, device=device)
    counts = torch.empty_like(counts32, dtype=torch.int64)
    # finalize program q handles segment order[q]: its partials are [pstart[q], pstart[q] + blocks[q])
    _vq_finalize_kernel[(nseg,)](
        parts, counts32, counts, loss, ppl, usage, float(beta),
        *_pad4(pstart, grid_n), grid_n,
        *per_seg(lambda i: i),
        *per_seg(lambda i: segments[i].num, 1),
        *per_seg(lambda i: cnt_base[i]),
        *per_seg(lambda i: rows[i], 1),
        *per_seg(lambda i: 1.0 / (rows[i] * d) if rows[i] > 0 else float("nan"), 0.0),
        BLOCK=256,
    )
    return ForwardResult(zq_flat, idx, dist, loss, ppl, usage, counts)


def _sig(pointers: dict, scalars: dict) -> dict:
    return {**pointers, **scalars}


def _seg_scalars(*groups) -> dict:
    """{"n0": ty, ..., "n3": ty} for each (prefix, type) group."""
    return {f"{p}{i}": ty for p, ty in groups for i in range(MAX_SEGMENTS)}


def _search_spec(t: str, fused: bool, rows: int, d: int, precision: str = "tf32") -> dict:
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[t]
    cfg = search_config(d, dtype, rows, precision)
    sig = _sig(
        {"z_ptr": f"*{t}", "cb_ptr": f"*{t}", "esq_ptr": "*fp32", "idx_ptr": "*i64", "dist_ptr": "*fp32",
         "zq_ptr": f"*{t}", "cnt_ptr": "*i32", "part_ptr": "*fp32"},
        {"D": "i32", "stride_ck": "i32", "stride_cd": "i32", "pb1": "i32", "pb2": "i32", "pb3": "i32",
         **_seg_scalars(("n", "i32"), ("zo", "i64"), ("zsn", "i32"), ("zsd", "i32"), ("st", "i32"), ("nc", "i32"),
                        ("rb", "i32"), ("cb", "i32"))},
    )
    return dict(
        fn=_vq_search_kernel, signature=sig,
        constexprs={"FUSED": fused, "PRECISION": precision, "EMULATE_TF32": False, "UPCAST": False,
                    "HALF": t != "fp32", "BLOCK_N": cfg["BLOCK_N"], "BLOCK_K": cfg["BLOCK_K"],
                    "BLOCK_D": cfg["BLOCK_D"], "BLOCK_DE": cfg["BLOCK_DE"]},
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        name=f"vq_search[{t},{'fused' if fused else 'search'},N{rows},D{d},{precision}]",
    )


# Representative compilations checked in CI for sm_86/sm_90 (tests/test_triton_compile.py):
# the training shapes' configs (small: N = 4..16 x 1024; big: N = 2^20, d = 256).
COMPILE_SPECS = [
    _search_spec(t, fused, rows, d)
    for t in ("fp32", "bf16", "fp16")
    for fused in (False, True)
    for rows, d in ((4096, 32), (16384, 256), (1 << 20, 256))
] + [_search_spec("fp32", True, 16384, 256, p) for p in ("tf32x3", "ieee")] + [
    dict(fn=_sq_norms_kernel,
         signature={"cb_ptr": f"*{t}", "out_ptr": "*fp32", "lo": "i32", "hi": "i32", "D": "i32",
                    "stride_k": "i32", "stride_d": "i32"},
         constexprs={"BLOCK_R": 32, "BLOCK_D": 64}, name=f"vq_sq_norms[{t}]")
    for t in ("fp32", "bf16")
] + [
    dict(fn=_vq_finalize_kernel,
         signature={"part_ptr": "*fp32", "cnt_ptr": "*i32", "cnt64_ptr": "*i64", "loss_ptr": "*fp32",
                    "ppl_ptr": "*fp32", "usage_ptr": "*fp32", "beta": "fp32",
                    **{f"pp{i}": "i32" for i in range(5)},
                    **_seg_scalars(("oi", "i32"), ("nc", "i32"), ("cb", "i32"), ("n", "i32"), ("invm", "fp32"))},
         constexprs={"BLOCK": 256}, name="vq_finalize"),
]
