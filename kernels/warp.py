"""Triton fused warp: resize the flow (and occlusion) on the fly, sample, multiply.

Equivalent to `grid_sample(x, interpolate(flow), align_corners=a) * interpolate(occlusion)`
(bilinear, zeros padding, every step with the same align_corners) with one read of x and one
write of the output: a program owns BLOCK_P output pixels, computes their flow and occlusion
from the low-resolution maps exactly as F.interpolate would (same fp32 scale and source index
formula), then gathers all channels in chunks of BLOCK_C.

Backward: per-pixel gradients of the resized flow (B, H, W, 2) and occlusion (B, H, W) come
from one kernel (input gradient by atomics, or deterministic entries), then
`_resize_bwd_kernel` maps them back to the low resolution, one axis at a time, as a gather
over a window of high-resolution pixels (atomic-free, deterministic).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import triton
import triton.language as tl

from .grid_sample import (
    _idx, bilinear_backward_tile, bilinear_entries, bilinear_sample_store, block_sizes, channel_split,
    channels_last_tile, flat_pixel_stride, gather_input_grad, grad_buffer, needs_int64, output_memory_format,
    program_tile, source_index, source_index_grad, sum_splits,
)
from ._device import on_tensor_device


@triton.jit
def resize_coeffs(dst, in_size, scale, ALIGN: tl.constexpr):
    """F.interpolate(bilinear) source indices and weights of output index dst (ATen's formula)."""
    d = dst.to(tl.float32)
    if ALIGN:
        src = scale * d
    else:
        src = scale * (d + 0.5) - 0.5
        src = tl.where(src < 0.0, 0.0, src)
    i0 = src.to(tl.int32)
    i1 = tl.where(i0 < in_size - 1, i0 + 1, i0)
    l1 = src - i0.to(tl.float32)
    return i0, i1, 1.0 - l1, l1


@triton.jit
def resample(base, Y, X, pm, h, w, scale_y, scale_x, sh, sw,
             ALIGN: tl.constexpr, RESIZE: tl.constexpr, INT64: tl.constexpr):
    """Value of the (h, w) map at base (strides sh, sw) resized to the output grid, at (Y, X)."""
    if RESIZE:
        y0, y1, ly0, ly1 = resize_coeffs(Y, h, scale_y, ALIGN)
        x0, x1, lx0, lx1 = resize_coeffs(X, w, scale_x, ALIGN)
        r0 = _idx(y0, INT64) * sh
        r1 = _idx(y1, INT64) * sh
        c0 = _idx(x0, INT64) * sw
        c1 = _idx(x1, INT64) * sw
        v00 = tl.load(base + r0 + c0, mask=pm, other=0.0).to(tl.float32)
        v01 = tl.load(base + r0 + c1, mask=pm, other=0.0).to(tl.float32)
        v10 = tl.load(base + r1 + c0, mask=pm, other=0.0).to(tl.float32)
        v11 = tl.load(base + r1 + c1, mask=pm, other=0.0).to(tl.float32)
        v = ly0 * (lx0 * v00 + lx1 * v01) + ly1 * (lx0 * v10 + lx1 * v11)
    else:
        v = tl.load(base + _idx(Y, INT64) * sh + _idx(X, INT64) * sw, mask=pm, other=0.0).to(tl.float32)
    return v


@triton.jit
def _warp_fwd_kernel(
    x_ptr, flow_ptr, occ_ptr, out_ptr,
    C, H, W, P, NB, NS, CPP, fh, fw, oh, ow, fsy, fsx, osy, osx,
    sxn, sxc, sxh, sxw, sfn, sfh, sfw, sfk, smn, smh, smw, son, soc, sop,
    ALIGN: tl.constexpr, RESIZE_FLOW: tl.constexpr, HAS_OCC: tl.constexpr, RESIZE_OCC: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, INT64: tl.constexpr, CL: tl.constexpr,
):
    n, pb, cs, c_lo, c_hi = program_tile(NB, NS, CPP, C)
    n = _idx(n, INT64)
    p = pb * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < P
    Y = p // W
    X = p % W
    fbase = flow_ptr + n * sfn
    fx = resample(fbase, Y, X, pm, fh, fw, fsy, fsx, sfh, sfw, ALIGN, RESIZE_FLOW, INT64)
    fy = resample(fbase + sfk, Y, X, pm, fh, fw, fsy, fsx, sfh, sfw, ALIGN, RESIZE_FLOW, INT64)
    ix = source_index(fx, W, 0, ALIGN)
    iy = source_index(fy, H, 0, ALIGN)
    occ = ix
    if HAS_OCC:
        occ = resample(occ_ptr + n * smn, Y, X, pm, oh, ow, osy, osx, smh, smw, ALIGN, RESIZE_OCC, INT64)
    bilinear_sample_store(x_ptr + n * sxn, out_ptr + n * son + _idx(p, INT64) * sop, ix, iy, pm, occ,
                          c_lo, c_hi, H, W, sxc, sxh, sxw, soc, HAS_OCC, BLOCK_C, INT64, CL)


@triton.jit
def _warp_bwd_kernel(
    go_ptr, x_ptr, flow_ptr, occ_ptr, gx_ptr, gflow_ptr, gocc_ptr, key_ptr, wt_ptr,
    C, H, W, P, NB, NS, CPP, Q, fh, fw, oh, ow, fsy, fsx, osy, osx, sentinel,
    sgon, sgoc, sgoh, sgow, sxn, sxc, sxh, sxw, sfn, sfh, sfw, sfk, smn, smh, smw, sdn, sdc, sdh, sdw,
    ALIGN: tl.constexpr, RESIZE_FLOW: tl.constexpr, HAS_OCC: tl.constexpr, RESIZE_OCC: tl.constexpr,
    ATOMIC_X: tl.constexpr, ENTRIES_X: tl.constexpr, NEED_FLOW: tl.constexpr, NEED_OCC: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, INT64: tl.constexpr, CL: tl.constexpr,
):
    # per-pixel gradients of channel split cs go to rows cs * Q + q (summed on the host)
    n, pb, cs, c_lo, c_hi = program_tile(NB, NS, CPP, C)
    n = _idx(n, INT64)
    p = pb * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < P
    Y = p // W
    X = p % W
    fbase = flow_ptr + n * sfn
    fx = resample(fbase, Y, X, pm, fh, fw, fsy, fsx, sfh, sfw, ALIGN, RESIZE_FLOW, INT64)
    fy = resample(fbase + sfk, Y, X, pm, fh, fw, fsy, fsx, sfh, sfw, ALIGN, RESIZE_FLOW, INT64)
    ix, mx = source_index_grad(fx, W, 0, ALIGN)
    iy, my = source_index_grad(fy, H, 0, ALIGN)
    occ = ix
    if HAS_OCC:
        occ = resample(occ_ptr + n * smn, Y, X, pm, oh, ow, osy, osx, smh, smw, ALIGN, RESIZE_OCC, INT64)
    go_base = go_ptr + n * sgon + _idx(Y, INT64) * sgoh + _idx(X, INT64) * sgow
    gix, giy, gval = bilinear_backward_tile(
        go_base, x_ptr + n * sxn, gx_ptr + n * sdn, ix, iy, pm, occ, c_lo, c_hi, H, W,
        sgoc, sxc, sxh, sxw, sdc, sdh, sdw,
        HAS_OCC, ATOMIC_X, NEED_FLOW, NEED_OCC, BLOCK_P, BLOCK_C, INT64, CL)
    q = n * P + p
    qs = cs.to(tl.int64) * Q + q
    if ENTRIES_X:
        bilinear_entries(key_ptr, wt_ptr, q, ix, iy, pm & (cs == 0), n, occ, H, W, sentinel, HAS_OCC)
    if NEED_FLOW:
        tl.store(gflow_ptr + qs * 2, gix * mx, mask=pm)
        tl.store(gflow_ptr + qs * 2 + 1, giy * my, mask=pm)
    if NEED_OCC:
        tl.store(gocc_ptr + qs, gval, mask=pm)


@triton.jit
def _resize_bwd_kernel(
    src_ptr, dst_ptr, total, A, LO, E, HI,
    ssb, ssa, ssd, sse, stb, sta, std, ste,
    scale, inv_scale, window,
    ALIGN: tl.constexpr, BLOCK: tl.constexpr,
):
    """Backward of a bilinear resize along one axis (LO -> HI samples) of a (B, A, HI, E) fp32 map:
    dst[b, a, j, e] = sum over high-res X whose source indices include j of weight * src[b, a, X, e]."""
    o = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    om = o < total
    e = o % E
    r = o // E
    j = (r % LO).to(tl.int32)
    r = r // LO
    a = r % A
    b = r // A
    jf = j.to(tl.float32)
    if ALIGN:
        est = (jf - 1.0) * inv_scale
    else:
        est = (jf - 0.5) * inv_scale - 0.5
    start = tl.maximum(tl.floor(est).to(tl.int32) - 2, 0)
    src = src_ptr + b * ssb + a * ssa + e * sse
    acc = tl.zeros((BLOCK,), tl.float32)
    for k in range(0, window):
        xh = start + k
        i0, i1, l0, l1 = resize_coeffs(xh, LO, scale, ALIGN)
        hit = om & (xh < HI) & ((i0 == j) | (i1 == j))
        wgt = tl.where(i0 == j, l0, 0.0) + tl.where(i1 == j, l1, 0.0)
        v = tl.load(src + xh.to(tl.int64) * ssd, mask=hit, other=0.0)
        acc += tl.where(hit, wgt * v, 0.0)
    tl.store(dst_ptr + b * stb + a * sta + j.to(tl.int64) * std + e * ste, acc, mask=om)


# --------------------------------------------------------------------------- host side
def resize_scale(in_size: int, out_size: int, align: bool) -> float:
    """ATen's area_pixel_compute_scale in float32 (returned as the exact Python float)."""
    if align:
        return float(np.float32(in_size - 1) / np.float32(out_size - 1)) if out_size > 1 else 0.0
    return float(np.float32(in_size) / np.float32(out_size))


def resize_backward(g: torch.Tensor, size: tuple[int, int], align: bool) -> torch.Tensor:
    """Adjoint of the bilinear resize (h, w) -> (H, W): g (B, H, W, K) fp32 -> (B, h, w, K) fp32."""
    b, hh, ww, k = g.shape
    h, w = size
    cur = g
    for axis, lo, hi in ((2, w, ww), (1, h, hh)):
        if lo == hi:
            continue
        if axis == 2:  # along W: (B, A=H, D=W, E=K)
            out = torch.empty((b, hh, lo, k), dtype=torch.float32, device=g.device)
            a, e = hh, k
            ss = (cur.stride(0), cur.stride(1), cur.stride(2), cur.stride(3))
            st = (out.stride(0), out.stride(1), out.stride(2), out.stride(3))
        else:  # along H: (B, A=1, D=H, E=w*K); cur is contiguous here or g itself
            cur = cur.contiguous()
            out = torch.empty((b, lo, cur.shape[2], k), dtype=torch.float32, device=g.device)
            a, e = 1, cur.shape[2] * k
            ss = (cur.stride(0), 0, cur.stride(1), 1)
            st = (out.stride(0), 0, out.stride(1), 1)
        scale = resize_scale(lo, hi, align)
        window = min(hi, math.ceil(2.0 / scale) + 6) if scale > 0 else hi
        total = b * a * lo * e
        if total > 0:
            block = 256
            _resize_bwd_kernel[(triton.cdiv(total, block),)](
                cur, out, total, a, lo, e, hi, *ss, *st, scale, 1.0 / scale if scale > 0 else 0.0, window,
                ALIGN=align, BLOCK=block,
            )
        cur = out
    return cur


def _maps(x, flow, occ, align):
    h, w = x.shape[2], x.shape[3]
    fh, fw = flow.shape[1], flow.shape[2]
    oh, ow = (occ.shape[2], occ.shape[3]) if occ is not None else (1, 1)
    return dict(
        fh=fh, fw=fw, oh=oh, ow=ow,
        fsy=resize_scale(fh, h, align), fsx=resize_scale(fw, w, align),
        osy=resize_scale(oh, h, align), osx=resize_scale(ow, w, align),
        RESIZE_FLOW=(fh, fw) != (h, w), RESIZE_OCC=occ is not None and (oh, ow) != (h, w),
    )


def _occ_strides(occ):
    return (occ.stride(0), occ.stride(2), occ.stride(3)) if occ is not None else (0, 0, 0)


@on_tensor_device
def warp_forward(x: torch.Tensor, flow: torch.Tensor, occ: torch.Tensor | None, align: bool) -> torch.Tensor:
    """x (B, C, H, W) fp32/fp16/bf16; flow (B, h, w, 2) fp32; occ (B, 1, h', w') fp32 or None -> (B, C, H, W)."""
    b, c, h, w = x.shape
    out = torch.empty_like(x, memory_format=output_memory_format(x))
    p = h * w
    if out.numel() == 0:
        return out
    mp = _maps(x, flow, occ, align)
    cl = channels_last_tile(x)
    block_p, block_c = block_sizes(c, cl)
    nb = triton.cdiv(p, block_p)
    ns, cpp = channel_split(b * nb, c, block_c, x.device)
    _warp_fwd_kernel[(b * nb * ns,)](
        x, flow, occ if occ is not None else flow, out,
        c, h, w, p, nb, ns, cpp, mp["fh"], mp["fw"], mp["oh"], mp["ow"], mp["fsy"], mp["fsx"], mp["osy"], mp["osx"],
        *x.stride(), *flow.stride(), *_occ_strides(occ), out.stride(0), out.stride(1), flat_pixel_stride(out),
        ALIGN=align, RESIZE_FLOW=mp["RESIZE_FLOW"], HAS_OCC=occ is not None, RESIZE_OCC=mp["RESIZE_OCC"],
        BLOCK_P=block_p, BLOCK_C=block_c, INT64=needs_int64(x, flow, occ, out), CL=cl,
    )
    return out


@on_tensor_device
def warp_backward(grad_out: torch.Tensor, x: torch.Tensor, flow: torch.Tensor, occ: torch.Tensor | None, align: bool,
                  need_x: bool, need_flow: bool, need_occ: bool, deterministic: bool):
    """Returns (grad_x in x.dtype | None, grad_flow fp32 (B, h, w, 2) | None, grad_occ fp32 (B, 1, h', w') | None)."""
    b, c, h, w = x.shape
    p = h * w
    need_occ = need_occ and occ is not None
    if not (need_x or need_flow or need_occ):
        return None, None, None
    mp = _maps(x, flow, occ, align)
    det = need_x and deterministic
    grad_x = grad_buffer(x, det) if need_x else None
    cl = channels_last_tile(x)
    block_p, block_c = block_sizes(c, cl, backward=True)
    nb = triton.cdiv(p, block_p)
    ns, cpp = channel_split(b * nb, c, block_c, x.device)
    gflow = torch.empty((ns, b, h, w, 2), dtype=torch.float32, device=x.device) if need_flow else None
    gocc = torch.empty((ns, b, h, w, 1), dtype=torch.float32, device=x.device) if need_occ else None
    keys = torch.empty(b * p * 4 if det else 1, dtype=torch.int64, device=x.device)
    wts = torch.empty(b * p * 4 if det else 1, dtype=torch.float32, device=x.device)
    if b * p > 0:
        _warp_bwd_kernel[(b * nb * ns,)](
            grad_out, x, flow, occ if occ is not None else flow,
            grad_x if grad_x is not None else wts, gflow if gflow is not None else wts,
            gocc if gocc is not None else wts, keys, wts,
            c, h, w, p, nb, ns, cpp, b * p, mp["fh"], mp["fw"], mp["oh"], mp["ow"], mp["fsy"], mp["fsx"], mp["osy"],
            mp["osx"], b * h * w, *grad_out.stride(), *x.stride(), *flow.stride(), *_occ_strides(occ),
            *(grad_x.stride() if grad_x is not None else (0, 0, 0, 0)),
            ALIGN=align, RESIZE_FLOW=mp["RESIZE_FLOW"], HAS_OCC=occ is not None, RESIZE_OCC=mp["RESIZE_OCC"],
            ATOMIC_X=need_x and not det, ENTRIES_X=det, NEED_FLOW=need_flow, NEED_OCC=need_occ,
            BLOCK_P=block_p, BLOCK_C=block_c, INT64=needs_int64(grad_out, x, flow, occ, grad_x), CL=cl,
        )
        if det:
            so = grad_out.stride()
            gather_input_grad(keys, wts, grad_out, grad_x, 4, (so[0], 0, so[1], so[2], so[3]), 1, w, p)
    elif det:
        grad_x.zero_()
    if grad_x is not None and grad_x.dtype != x.dtype:
        grad_x = grad_x.to(x.dtype)
    if gflow is not None:
        gflow = resize_backward(sum_splits(gflow), (mp["fh"], mp["fw"]), align)
    if gocc is not None:
        gocc = resize_backward(sum_splits(gocc), (mp["oh"], mp["ow"]), align).view(b, 1, mp["oh"], mp["ow"])
    return grad_x, gflow, gocc


def _sig(names, ptrs):
    sig = dict(ptrs)
    sig.update({k: ("fp32" if k in ("fsy", "fsx", "osy", "osx", "scale", "inv_scale") else "i32") for k in names})
    return sig


_COMMON = ["C", "H", "W", "P", "NB", "NS", "CPP", "fh", "fw", "oh", "ow", "fsy", "fsx", "osy", "osx"]
_COMMON_BWD = ["C", "H", "W", "P", "NB", "NS", "CPP", "Q", "fh", "fw", "oh", "ow", "fsy", "fsx", "osy", "osx"]
_XS = ["sxn", "sxc", "sxh", "sxw", "sfn", "sfh", "sfw", "sfk", "smn", "smh", "smw"]

# Representative compilations checked in CI for sm_86/sm_90 (tests/test_triton_compile.py).
COMPILE_SPECS = [
    dict(fn=_warp_fwd_kernel, name=f"warp_fwd[{t},C{bc},resize{int(rs)},occ{int(oc)}]",
         signature=_sig(_COMMON + _XS + ["son", "soc", "sop"],
                        {"x_ptr": f"*{t}", "flow_ptr": "*fp32", "occ_ptr": "*fp32", "out_ptr": f"*{t}"}),
         constexprs={"ALIGN": al, "RESIZE_FLOW": rs, "HAS_OCC": oc, "RESIZE_OCC": rs, "BLOCK_P": 512 // bc,
                     "BLOCK_C": bc, "INT64": i64, "CL": bc > 4})
    for t, bc, rs, oc, al, i64 in [("fp32", 4, True, True, True, False), ("bf16", 64, False, True, True, False),
                                   ("bf16", 64, True, True, True, False), ("fp16", 4, True, False, False, True)]
] + [
    dict(fn=_warp_bwd_kernel, name=f"warp_bwd[{t},det{int(det)},resize{int(rs)}]",
         signature=_sig(_COMMON_BWD + ["sentinel", "sgon", "sgoc", "sgoh", "sgow"] + _XS + ["sdn", "sdc", "sdh", "sdw"],
                        {"go_ptr": f"*{t}", "x_ptr": f"*{t}", "flow_ptr": "*fp32", "occ_ptr": "*fp32",
                         "gx_ptr": "*fp32", "gflow_ptr": "*fp32", "gocc_ptr": "*fp32", "key_ptr": "*i64",
                         "wt_ptr": "*fp32"}),
         constexprs={"ALIGN": True, "RESIZE_FLOW": rs, "HAS_OCC": True, "RESIZE_OCC": rs, "ATOMIC_X": not det,
                     "ENTRIES_X": det, "NEED_FLOW": True, "NEED_OCC": True, "BLOCK_P": 256 // bc, "BLOCK_C": bc,
                     "INT64": False, "CL": bc > 4})
    for t, det, rs, bc in [("fp32", False, True, 4), ("bf16", True, False, 64), ("bf16", False, True, 64),
                           ("fp16", False, False, 4)]
] + [
    dict(fn=_resize_bwd_kernel, name=f"resize_bwd[align{int(al)}]",
         signature=_sig(["total", "A", "LO", "E", "HI", "ssb", "ssa", "ssd", "sse", "stb", "sta", "std", "ste",
                         "scale", "inv_scale", "window"], {"src_ptr": "*fp32", "dst_ptr": "*fp32"}),
         constexprs={"ALIGN": al, "BLOCK": 256})
    for al in (False, True)
]
