"""Triton grid sampling (the contract of F.grid_sample, 4-D): forward, backward, and the
sampling helpers shared with kernels/warp.py and kernels/warp_many.py.

A program owns BLOCK_P output pixels of one image: it loads their grid coordinates once,
computes the four corners and weights once, then loops over the channels in chunks of
BLOCK_C, gathering from x and storing the output (features in any float dtype, all maths
in float32). Coordinates follow ATen's CUDA grid sampler exactly, including its handling
of NaN/inf/huge coordinates (mapped to -100, i.e. outside: zero for zeros padding).

Backward: the grid gradient is a per-pixel reduction over channels (no atomics); the input
gradient is scattered with fp32 atomics, or, deterministically, written as (target pixel,
weight) entries per output pixel that the host sorts (stable) and `_gather_input_grad_kernel`
sums per target pixel in a fixed order.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from ._device import on_tensor_device

MODES = {"bilinear": 0, "nearest": 1}
PADDINGS = {"zeros": 0, "border": 1, "reflection": 2}
INT32_LIMIT = 2**31
# exact fmod for reflection padding: libdevice when compiling; the interpreter's % is already exact
_EXACT_FMOD = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") in ("", "0"))


# --------------------------------------------------------------------------- helpers
@triton.jit
def _idx(v, INT64: tl.constexpr):
    if INT64:
        return v.to(tl.int64)
    else:
        return v


@triton.jit
def unnormalize(coord, sizef, ALIGN: tl.constexpr):
    """[-1, 1] -> pixel coordinate (ATen grid_sampler_unnormalize)."""
    if ALIGN:
        out = (coord + 1.0) * 0.5 * (sizef - 1.0)
    else:
        out = ((coord + 1.0) * sizef - 1.0) * 0.5
    return out


@triton.jit
def _safe(c):
    # NaN, inf and huge coordinates -> -100 (outside), like ATen's safe_downgrade_to_int_range
    ok = (c > -1073741824.0) & (c < 1073741824.0)
    return tl.where(ok, c, -100.0)


@triton.jit
def _clip(c, sizef):
    # forward clip: min(size-1, fmaxf(c, 0)); NaN -> 0 as on CUDA
    c = tl.where(c > 0.0, c, 0.0)
    lim = sizef - 1.0
    return tl.where(c < lim, c, lim)


@triton.jit
def _clip_grad(c, sizef):
    # ATen clip_coordinates_set_grad: NaN passes through (then -100), derivative 0 at/after the edges
    lim = sizef - 1.0
    low = c <= 0.0
    high = c >= lim
    out = tl.where(low, 0.0, tl.where(high, lim, c))
    return out, tl.where(low | high, 0.0, 1.0)


@triton.jit
def _reflect(c, twice_low, twice_high):
    # ATen reflect_coordinates(_set_grad): returns (coordinate, d coordinate / d c)
    lo = twice_low * 0.5
    span = tl.zeros_like(c) + (twice_high - twice_low) * 0.5
    flat = span == 0.0
    span = tl.where(flat, 1.0, span)  # size 1 with align_corners: the answer is 0 (below)
    d = c - lo
    neg = d < 0.0
    d = tl.where(neg, -d, d)
    if _EXACT_FMOD:
        extra = libdevice.fmod(d, span)
    else:
        extra = d % span  # the interpreter's float % is C fmod (exact)
    q = tl.floor(tl.math.div_rn(d, span))
    # ATen's int(floor(d / span)): saturates to INT_MAX (odd) beyond the int range
    odd = (q >= 2147483648.0) | ((q - 2.0 * tl.floor(q * 0.5)) == 1.0)
    out = tl.where(odd, span - extra + lo, extra + lo)
    sign = tl.where(neg, -1.0, 1.0)
    mult = tl.where(odd, -sign, sign)
    return tl.where(flat, 0.0, out), tl.where(flat, 0.0, mult)


@triton.jit
def source_index(coord, size, PADDING: tl.constexpr, ALIGN: tl.constexpr):
    """Grid coordinate -> padded pixel coordinate (forward)."""
    sizef = size * 1.0
    c = unnormalize(coord, sizef, ALIGN)
    if PADDING == 1:
        c = _clip(c, sizef)
    if PADDING == 2:
        if ALIGN:
            c, _m = _reflect(c, 0.0, 2.0 * (sizef - 1.0))
        else:
            c, _m = _reflect(c, -1.0, 2.0 * sizef - 1.0)
        c = _clip(c, sizef)
    return _safe(c)


@triton.jit
def source_index_grad(coord, size, PADDING: tl.constexpr, ALIGN: tl.constexpr):
    """Grid coordinate -> (padded pixel coordinate, d coordinate / d grid) (backward)."""
    sizef = size * 1.0
    c = unnormalize(coord, sizef, ALIGN)
    if ALIGN:
        mult = tl.zeros_like(c) + (sizef - 1.0) * 0.5
    else:
        mult = tl.zeros_like(c) + sizef * 0.5
    if PADDING == 1:
        c, g = _clip_grad(c, sizef)
        mult = mult * g
    if PADDING == 2:
        if ALIGN:
            c, g1 = _reflect(c, 0.0, 2.0 * (sizef - 1.0))
        else:
            c, g1 = _reflect(c, -1.0, 2.0 * sizef - 1.0)
        c, g2 = _clip_grad(c, sizef)
        mult = mult * g1 * g2
    return _safe(c), mult


@triton.jit
def round_half_even(v):
    """nearbyint under the default rounding mode (ties to even)."""
    f = tl.floor(v)
    d = v - f
    odd = (f - 2.0 * tl.floor(f * 0.5)) != 0.0
    up = (d > 0.5) | ((d == 0.5) & odd)
    return tl.where(up, f + 1.0, f)


@triton.jit
def bilinear_setup(ix, iy, pm, H, W):
    """Corners and weights: returns x0, y0 (int32), ax, bx, ay, by and the 4 in-bounds masks."""
    x0f = tl.floor(ix)
    y0f = tl.floor(iy)
    ax = ix - x0f
    bx = (x0f + 1.0) - ix
    ay = iy - y0f
    by = (y0f + 1.0) - iy
    x0 = x0f.to(tl.int32)
    y0 = y0f.to(tl.int32)
    mx0 = (x0 >= 0) & (x0 < W)
    mx1 = (x0 >= -1) & (x0 < W - 1)
    my0 = pm & (y0 >= 0) & (y0 < H)
    my1 = pm & (y0 >= -1) & (y0 < H - 1)
    return x0, y0, ax, bx, ay, by, my0 & mx0, my0 & mx1, my1 & mx0, my1 & mx1


@triton.jit
def corner_offsets(x0, y0, H, W, sh, sw, INT64: tl.constexpr):
    """Offsets of the 4 corners (nw, ne, sw, se) for strides sh, sw. Coordinates are clamped to
    [-1, size] first: lanes outside are masked, and their offsets must not overflow."""
    xc = _idx(tl.minimum(tl.maximum(x0, -1), W), INT64)
    yc = _idx(tl.minimum(tl.maximum(y0, -1), H), INT64)
    o00 = yc * sh + xc * sw
    return o00, o00 + sw, o00 + sh, o00 + sh + sw


@triton.jit
def _px(v, CL: tl.constexpr):
    """A per-pixel vector as a tile column. Tiles are (pixels, channels) when CL (channels-last
    features: threads along channels) and (channels, pixels) otherwise (threads along pixels),
    so that the gathers of neighbouring threads touch neighbouring addresses in either layout."""
    if CL:
        r = v[:, None]
    else:
        r = v[None, :]
    return r


@triton.jit
def _ch(v, CL: tl.constexpr):
    """A per-channel vector as a tile row (see _px)."""
    if CL:
        r = v[None, :]
    else:
        r = v[:, None]
    return r


@triton.jit
def _csum(t, CL: tl.constexpr):
    """Sum of a tile over its channels -> per-pixel vector."""
    if CL:
        r = tl.sum(t, axis=1)
    else:
        r = tl.sum(t, axis=0)
    return r


@triton.jit
def _gather(base, off, m, coff, cm, CL: tl.constexpr):
    return tl.load(base + _px(off, CL) + coff, mask=_px(m, CL) & cm, other=0.0).to(tl.float32)


@triton.jit
def bilinear_sample_store(x_base, o_base, ix, iy, pm, scale, c_lo, c_hi, H, W, sxc, sxh, sxw, soc,
                          HAS_SCALE: tl.constexpr, BLOCK_C: tl.constexpr, INT64: tl.constexpr,
                          CL: tl.constexpr):
    """out[p, c] = sum of the 4 corners of x at (ix, iy) (times scale[p]) for channels [c_lo, c_hi)."""
    x0, y0, ax, bx, ay, by, m00, m01, m10, m11 = bilinear_setup(ix, iy, pm, H, W)
    o00, o01, o10, o11 = corner_offsets(x0, y0, H, W, sxh, sxw, INT64)
    w00 = _px(bx * by, CL)
    w01 = _px(ax * by, CL)
    w10 = _px(bx * ay, CL)
    w11 = _px(ax * ay, CL)
    for c0 in range(c_lo, c_hi, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cm = _ch(c < c_hi, CL)
        cc = _idx(c, INT64)
        coff = _ch(cc * sxc, CL)
        acc = _gather(x_base, o00, m00, coff, cm, CL) * w00
        acc += _gather(x_base, o01, m01, coff, cm, CL) * w01
        acc += _gather(x_base, o10, m10, coff, cm, CL) * w10
        acc += _gather(x_base, o11, m11, coff, cm, CL) * w11
        if HAS_SCALE:
            acc = acc * _px(scale, CL)
        tl.store(_px(o_base, CL) + _ch(cc * soc, CL), acc.to(o_base.dtype.element_ty), mask=_px(pm, CL) & cm)


@triton.jit
def bilinear_backward_tile(go_base, x_base, gx_base, ix, iy, pm, scale, c_lo, c_hi, H, W,
                           sgoc, sxc, sxh, sxw, sdc, sdh, sdw,
                           HAS_SCALE: tl.constexpr, ATOMIC_X: tl.constexpr, NEED_GRID: tl.constexpr,
                           NEED_VALUE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
                           INT64: tl.constexpr, CL: tl.constexpr):
    """Backward of bilinear_sample_store for BLOCK_P pixels and channels [c_lo, c_hi).

    Scatters d x (atomics, when ATOMIC_X) and returns (gix, giy, gval): the gradient with
    respect to the pixel coordinates ix, iy, and sum_c grad_out * unscaled sample (the
    gradient of the scale). grad w.r.t. the sample is grad_out * scale.
    """
    x0, y0, ax, bx, ay, by, m00, m01, m10, m11 = bilinear_setup(ix, iy, pm, H, W)
    gix = tl.zeros((BLOCK_P,), tl.float32)
    giy = tl.zeros((BLOCK_P,), tl.float32)
    gval = tl.zeros((BLOCK_P,), tl.float32)
    w00 = _px(bx * by, CL)
    w01 = _px(ax * by, CL)
    w10 = _px(bx * ay, CL)
    w11 = _px(ax * ay, CL)
    if NEED_GRID or NEED_VALUE:
        o00, o01, o10, o11 = corner_offsets(x0, y0, H, W, sxh, sxw, INT64)
    if ATOMIC_X:
        d00, d01, d10, d11 = corner_offsets(x0, y0, H, W, sdh, sdw, INT64)
    for c0 in range(c_lo, c_hi, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cm = _ch(c < c_hi, CL)
        cc = _idx(c, INT64)
        g = tl.load(_px(go_base, CL) + _ch(cc * sgoc, CL), mask=_px(pm, CL) & cm, other=0.0).to(tl.float32)
        gs = g
        if HAS_SCALE:
            gs = g * _px(scale, CL)
        if ATOMIC_X:
            dc = _ch(cc * sdc, CL)
            tl.atomic_add(gx_base + _px(d00, CL) + dc, gs * w00, mask=_px(m00, CL) & cm, sem="relaxed")
            tl.atomic_add(gx_base + _px(d01, CL) + dc, gs * w01, mask=_px(m01, CL) & cm, sem="relaxed")
            tl.atomic_add(gx_base + _px(d10, CL) + dc, gs * w10, mask=_px(m10, CL) & cm, sem="relaxed")
            tl.atomic_add(gx_base + _px(d11, CL) + dc, gs * w11, mask=_px(m11, CL) & cm, sem="relaxed")
        if NEED_GRID or NEED_VALUE:
            coff = _ch(cc * sxc, CL)
            v00 = _gather(x_base, o00, m00, coff, cm, CL)
            v01 = _gather(x_base, o01, m01, coff, cm, CL)
            v10 = _gather(x_base, o10, m10, coff, cm, CL)
            v11 = _gather(x_base, o11, m11, coff, cm, CL)
            if NEED_GRID:
                gix += _csum(gs * (_px(by, CL) * (v01 - v00) + _px(ay, CL) * (v11 - v10)), CL)
                giy += _csum(gs * (_px(bx, CL) * (v10 - v00) + _px(ax, CL) * (v11 - v01)), CL)
            if NEED_VALUE:
                val = v00 * w00 + v01 * w01 + v10 * w10 + v11 * w11
                gval += _csum(g * val, CL)
    return gix, giy, gval


@triton.jit
def bilinear_entries(key_ptr, wt_ptr, q, ix, iy, pm, n, scale, H, W, sentinel, HAS_SCALE: tl.constexpr):
    """Deterministic input gradient: entry 4*q+k = (target pixel n*H*W + y*W + x or sentinel, weight)."""
    x0, y0, ax, bx, ay, by, m00, m01, m10, m11 = bilinear_setup(ix, iy, pm, H, W)
    base = n.to(tl.int64) * H * W + y0.to(tl.int64) * W + x0.to(tl.int64)
    e = q.to(tl.int64) * 4
    s = 1.0
    if HAS_SCALE:
        s = scale
    tl.store(key_ptr + e, tl.where(m00, base, sentinel), mask=pm)
    tl.store(key_ptr + e + 1, tl.where(m01, base + 1, sentinel), mask=pm)
    tl.store(key_ptr + e + 2, tl.where(m10, base + W, sentinel), mask=pm)
    tl.store(key_ptr + e + 3, tl.where(m11, base + W + 1, sentinel), mask=pm)
    tl.store(wt_ptr + e, bx * by * s, mask=pm)
    tl.store(wt_ptr + e + 1, ax * by * s, mask=pm)
    tl.store(wt_ptr + e + 2, bx * ay * s, mask=pm)
    tl.store(wt_ptr + e + 3, ax * ay * s, mask=pm)


@triton.jit
def program_tile(NB, NS, CPP, C):
    """Program id -> (image index, pixel-block index, channel-split index, channels [c_lo, c_hi)).
    NS programs share a pixel block, each over CPP channels (more programs for small images)."""
    pid = tl.program_id(0)
    cs = pid % NS
    r = pid // NS
    c_lo = cs * CPP
    return r // NB, r % NB, cs, c_lo, tl.minimum(c_lo + CPP, C)


# --------------------------------------------------------------------------- kernels
@triton.jit
def _grid_sample_fwd_kernel(
    x_ptr, grid_ptr, out_ptr,
    C, H, W, Wo, P, NB, NS, CPP,
    sxn, sxc, sxh, sxw, sgn, sgh, sgw, sgk, son, soc, sop,
    MODE: tl.constexpr, PADDING: tl.constexpr, ALIGN: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, INT64: tl.constexpr, CL: tl.constexpr,
):
    n, pb, cs, c_lo, c_hi = program_tile(NB, NS, CPP, C)
    n = _idx(n, INT64)
    p = pb * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < P
    oy = _idx(p // Wo, INT64)
    ox = _idx(p % Wo, INT64)
    g = grid_ptr + n * sgn + oy * sgh + ox * sgw
    gx = tl.load(g, mask=pm, other=0.0).to(tl.float32)
    gy = tl.load(g + sgk, mask=pm, other=0.0).to(tl.float32)
    ix = source_index(gx, W, PADDING, ALIGN)
    iy = source_index(gy, H, PADDING, ALIGN)
    x_base = x_ptr + n * sxn
    o_base = out_ptr + n * son + _idx(p, INT64) * sop
    if MODE == 0:
        bilinear_sample_store(x_base, o_base, ix, iy, pm, ix, c_lo, c_hi, H, W, sxc, sxh, sxw, soc,
                              False, BLOCK_C, INT64, CL)
    else:
        xn = round_half_even(ix).to(tl.int32)
        yn = round_half_even(iy).to(tl.int32)
        m = pm & (xn >= 0) & (xn < W) & (yn >= 0) & (yn < H)
        off = _idx(tl.where(m, yn, 0), INT64) * sxh + _idx(tl.where(m, xn, 0), INT64) * sxw
        for c0 in range(c_lo, c_hi, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            cm = _ch(c < c_hi, CL)
            cc = _idx(c, INT64)
            v = tl.load(x_base + _px(off, CL) + _ch(cc * sxc, CL), mask=_px(m, CL) & cm, other=0.0)
            tl.store(_px(o_base, CL) + _ch(cc * soc, CL), v.to(out_ptr.dtype.element_ty), mask=_px(pm, CL) & cm)


@triton.jit
def _grid_sample_bwd_kernel(
    go_ptr, x_ptr, grid_ptr, gx_ptr, ggrid_ptr, key_ptr, wt_ptr,
    C, H, W, Wo, P, NB, NS, CPP, Q, sentinel,
    sgon, sgoc, sgoh, sgow, sxn, sxc, sxh, sxw, sgn, sgh, sgw, sgk, sdn, sdc, sdh, sdw,
    MODE: tl.constexpr, PADDING: tl.constexpr, ALIGN: tl.constexpr,
    ATOMIC_X: tl.constexpr, ENTRIES_X: tl.constexpr, NEED_GRID: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, INT64: tl.constexpr, CL: tl.constexpr,
):
    # the grid gradient of channel split cs goes to row cs * Q + q of ggrid (summed on the host)
    n, pb, cs, c_lo, c_hi = program_tile(NB, NS, CPP, C)
    n = _idx(n, INT64)
    p = pb * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < P
    oy = _idx(p // Wo, INT64)
    ox = _idx(p % Wo, INT64)
    g = grid_ptr + n * sgn + oy * sgh + ox * sgw
    gx = tl.load(g, mask=pm, other=0.0).to(tl.float32)
    gy = tl.load(g + sgk, mask=pm, other=0.0).to(tl.float32)
    ix, mx = source_index_grad(gx, W, PADDING, ALIGN)
    iy, my = source_index_grad(gy, H, PADDING, ALIGN)
    go_base = go_ptr + n * sgon + oy * sgoh + ox * sgow
    q = n * P + p  # output pixel id (grid gradient row, deterministic entry block)
    qs = cs.to(tl.int64) * Q + q  # this split's grid gradient row
    if MODE == 0:
        gix, giy, _gv = bilinear_backward_tile(
            go_base, x_ptr + n * sxn, gx_ptr + n * sdn, ix, iy, pm, ix, c_lo, c_hi, H, W,
            sgoc, sxc, sxh, sxw, sdc, sdh, sdw,
            False, ATOMIC_X, NEED_GRID, False, BLOCK_P, BLOCK_C, INT64, CL)
        if ENTRIES_X:
            bilinear_entries(key_ptr, wt_ptr, q, ix, iy, pm & (cs == 0), n, ix, H, W, sentinel, False)
        if NEED_GRID:
            tl.store(ggrid_ptr + qs * 2, gix * mx, mask=pm)
            tl.store(ggrid_ptr + qs * 2 + 1, giy * my, mask=pm)
    else:
        xn = round_half_even(ix).to(tl.int32)
        yn = round_half_even(iy).to(tl.int32)
        m = pm & (xn >= 0) & (xn < W) & (yn >= 0) & (yn < H)
        if ENTRIES_X:
            key = n.to(tl.int64) * H * W + yn.to(tl.int64) * W + xn.to(tl.int64)
            tl.store(key_ptr + q, tl.where(m, key, sentinel), mask=pm & (cs == 0))
            tl.store(wt_ptr + q, tl.zeros((BLOCK_P,), tl.float32) + 1.0, mask=pm & (cs == 0))
        if ATOMIC_X:
            off = _idx(tl.where(m, yn, 0), INT64) * sdh + _idx(tl.where(m, xn, 0), INT64) * sdw
            for c0 in range(c_lo, c_hi, BLOCK_C):
                c = c0 + tl.arange(0, BLOCK_C)
                cm = _ch(c < c_hi, CL)
                cc = _idx(c, INT64)
                gv = tl.load(_px(go_base, CL) + _ch(cc * sgoc, CL), mask=_px(pm, CL) & cm, other=0.0)
                tl.atomic_add(gx_ptr + n * sdn + _px(off, CL) + _ch(cc * sdc, CL), gv.to(tl.float32),
                              mask=_px(m, CL) & cm, sem="relaxed")
        if NEED_GRID:
            zero = tl.zeros((BLOCK_P,), tl.float32)
            tl.store(ggrid_ptr + qs * 2, zero, mask=pm)
            tl.store(ggrid_ptr + qs * 2 + 1, zero, mask=pm)


@triton.jit
def _gather_input_grad_kernel(
    bounds_ptr, perm_ptr, wt_ptr, go_ptr, gx_ptr,
    T, C, HW, W, MP, P, Wo,
    sgob, sgom, sgoc, sgoh, sgow, sdn, sdc, sdh, sdw,
    ENTRIES: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, CL: tl.constexpr,
):
    """Deterministic input gradient: grad_x[t, c] = sum over the sorted entries of target t (in
    order) of weight * grad_out[pixel of the entry, c]. Entry e belongs to output pixel
    e // ENTRIES; output pixel q = (b * M + m) * P + p of grad_out (B, M, C, Ho, Wo)."""
    pid = tl.program_id(0)
    t = pid.to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    tm = t < T
    start = tl.load(bounds_ptr + t, mask=tm, other=0)
    end = tl.load(bounds_ptr + t + 1, mask=tm, other=0)
    longest = tl.max(end - start, axis=0).to(tl.int32)
    n = t // HW
    r = t % HW
    dst = gx_ptr + n * sdn + (r // W) * sdh + (r % W) * sdw
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cm = _ch(c < C, CL)
        cc = c.to(tl.int64)
        if CL:
            acc = tl.zeros((BLOCK_T, BLOCK_C), tl.float32)
        else:
            acc = tl.zeros((BLOCK_C, BLOCK_T), tl.float32)
        for j in range(0, longest):
            e = start + j
            ok = e < end
            src = tl.load(perm_ptr + e, mask=ok, other=0)
            w = tl.load(wt_ptr + src, mask=ok, other=0.0)
            qq = src // ENTRIES
            b = qq // MP
            rem = qq % MP
            pp = rem % P
            go = go_ptr + b * sgob + (rem // P) * sgom + (pp // Wo) * sgoh + (pp % Wo) * sgow
            gv = tl.load(_px(go, CL) + _ch(cc * sgoc, CL), mask=_px(ok, CL) & cm, other=0.0).to(tl.float32)
            acc += _px(w, CL) * gv
        tl.store(_px(dst, CL) + _ch(cc * sdc, CL), acc.to(gx_ptr.dtype.element_ty), mask=_px(tm, CL) & cm)


# --------------------------------------------------------------------------- host side
def needs_int64(*tensors: torch.Tensor | None) -> bool:
    """True when some element offset of a tensor reaches 2^31 (then offsets are computed in int64)."""
    for t in tensors:
        if t is None or t.numel() == 0:
            continue
        if sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride())) + 1 >= INT32_LIMIT:
            return True
    return False


def channels_last_tile(x: torch.Tensor) -> bool:
    """Tile orientation: threads along channels when x's channels are its fastest dimension."""
    return x.shape[1] > 1 and x.stride(1) == 1


def block_sizes(c: int, cl: bool, backward: bool = False) -> tuple[int, int]:
    """(BLOCK_P, BLOCK_C) for C channels: tiles of 512 (forward) / 256 (backward) elements, wide in
    channels for channels-last features, wide in pixels otherwise."""
    tile = 256 if backward else 512
    block_c = max(2, min(64 if cl else 4, triton.next_power_of_2(max(c, 1))))
    return max(8, tile // block_c), block_c


# Programs wanted per launch on a GPU before the channels of a pixel block are split over several.
TARGET_PROGRAMS = 2048


def channel_split(programs: int, c: int, block_c: int, device: torch.device) -> tuple[int, int]:
    """(NS, CPP): the channels of each pixel block split over NS programs of CPP channels (a multiple
    of BLOCK_C) when the pixel blocks alone make fewer than TARGET_PROGRAMS programs on a GPU
    (small images: the model's 32x32 and 64x64 scales at batch 1). Never under the interpreter."""
    chunks = triton.cdiv(max(c, 1), block_c)
    ns = 1
    if device.type == "cuda" and programs < TARGET_PROGRAMS:
        ns = min(chunks, triton.cdiv(TARGET_PROGRAMS, max(programs, 1)))
    cpp = triton.cdiv(chunks, ns) * block_c
    return triton.cdiv(max(c, 1), cpp), cpp


def sum_splits(partial: torch.Tensor) -> torch.Tensor:
    """(NS, ...) per-split partial sums -> (...): a fixed-order sum (deterministic)."""
    return partial[0] if partial.shape[0] == 1 else partial.sum(0)


def output_memory_format(x: torch.Tensor) -> torch.memory_format:
    """Outputs follow the features' layout: channels_last when x is channels-last (and not also contiguous)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def flat_pixel_stride(t: torch.Tensor) -> int:
    """Stride of the flattened (H*W) pixel index of a (.., H, W) tensor allocated contiguous or channels-last."""
    return t.stride(-1)


def grad_buffer(x: torch.Tensor, deterministic: bool) -> torch.Tensor:
    """The input-gradient buffer: zeros (fp32 for atomics), or uninitialised x.dtype when gathered."""
    if deterministic:
        return torch.empty_like(x, memory_format=torch.preserve_format)
    return torch.zeros_like(x, dtype=torch.float32, memory_format=torch.preserve_format)


def gather_input_grad(keys: torch.Tensor, weights: torch.Tensor, grad_out: torch.Tensor, grad_x: torch.Tensor,
                      entries: int, go_strides: tuple[int, int, int, int, int], m: int, wo: int, p: int,
                      launch: bool = True):
    """Deterministic input gradient from per-entry (target, weight) lists.

    keys (Q*entries,) int64 targets in [0, N*H*W] (N*H*W = no target); weights fp32. Sorts the
    entries stably by target and returns (bounds, perm) after filling grad_x (N, C, H, W)
    through `_gather_input_grad_kernel` (or only the sort when launch=False, for the CUDA path).
    """
    n, c, h, w = grad_x.shape
    t = n * h * w
    sorted_keys, perm = torch.sort(keys, stable=True)
    bounds = torch.searchsorted(sorted_keys, torch.arange(t + 1, device=keys.device, dtype=keys.dtype))
    if launch and t > 0 and c > 0:
        cl = channels_last_tile(grad_x)
        block_t, block_c = block_sizes(c, cl, backward=True)
        _gather_input_grad_kernel[(triton.cdiv(t, block_t),)](
            bounds, perm, weights, grad_out, grad_x, t, c, h * w, w, m * p, p, wo,
            *go_strides, *grad_x.stride(), ENTRIES=entries, BLOCK_T=block_t, BLOCK_C=block_c, CL=cl,
        )
    return bounds, perm


@on_tensor_device
def grid_sample_forward(x: torch.Tensor, grid: torch.Tensor, mode: int, padding: int, align: bool) -> torch.Tensor:
    """x (N, C, H, W) fp32/fp16/bf16, grid (N, Ho, Wo, 2) fp32 -> (N, C, Ho, Wo) in x.dtype and layout."""
    n, c, h, w = x.shape
    ho, wo = grid.shape[1], grid.shape[2]
    out = torch.empty((n, c, ho, wo), dtype=x.dtype, device=x.device, memory_format=output_memory_format(x))
    p = ho * wo
    if out.numel() == 0:
        return out
    cl = channels_last_tile(x)
    block_p, block_c = block_sizes(c, cl)
    nb = triton.cdiv(p, block_p)
    ns, cpp = channel_split(n * nb, c, block_c, x.device)
    _grid_sample_fwd_kernel[(n * nb * ns,)](
        x, grid, out, c, h, w, wo, p, nb, ns, cpp, *x.stride(), *grid.stride(),
        out.stride(0), out.stride(1), flat_pixel_stride(out),
        MODE=mode, PADDING=padding, ALIGN=align, BLOCK_P=block_p, BLOCK_C=block_c,
        INT64=needs_int64(x, grid, out), CL=cl,
    )
    return out


@on_tensor_device
def grid_sample_backward(grad_out: torch.Tensor, x: torch.Tensor, grid: torch.Tensor, mode: int, padding: int,
                         align: bool, need_x: bool, need_grid: bool, deterministic: bool):
    """Returns (grad_x in x.dtype or None, grad_grid fp32 (N, Ho, Wo, 2) or None)."""
    n, c, h, w = x.shape
    ho, wo = grid.shape[1], grid.shape[2]
    p = ho * wo
    if not (need_x or need_grid):
        return None, None
    entries = 4 if mode == 0 else 1
    det = need_x and deterministic
    grad_x = grad_buffer(x, det) if need_x else None
    cl = channels_last_tile(x)
    block_p, block_c = block_sizes(c, cl, backward=True)
    nb = triton.cdiv(p, block_p)
    ns, cpp = channel_split(n * nb, c, block_c, x.device)
    ggrid = torch.empty((ns, n * p, 2), dtype=torch.float32, device=x.device) if need_grid else None
    keys = torch.empty(n * p * entries if det else 1, dtype=torch.int64, device=x.device)
    wts = torch.empty(n * p * entries if det else 1, dtype=torch.float32, device=x.device)
    if n * p > 0:
        _grid_sample_bwd_kernel[(n * nb * ns,)](
            grad_out, x, grid, grad_x if grad_x is not None else wts, ggrid if ggrid is not None else wts, keys, wts,
            c, h, w, wo, p, nb, ns, cpp, n * p, n * h * w,
            *grad_out.stride(), *x.stride(), *grid.stride(), *(grad_x.stride() if grad_x is not None else (0,) * 4),
            MODE=mode, PADDING=padding, ALIGN=align, ATOMIC_X=need_x and not det, ENTRIES_X=det, NEED_GRID=need_grid,
            BLOCK_P=block_p, BLOCK_C=block_c, INT64=needs_int64(grad_out, x, grid, grad_x), CL=cl,
        )
        if det:
            so = grad_out.stride()
            gather_input_grad(keys, wts, grad_out, grad_x, entries, (so[0], 0, so[1], so[2], so[3]), 1, wo, p)
    elif det:
        grad_x.zero_()
    if grad_x is not None and grad_x.dtype != x.dtype:
        grad_x = grad_x.to(x.dtype)
    grad_grid = sum_splits(ggrid).view(n, ho, wo, 2) if ggrid is not None else None
    return grad_x, grad_grid


def _spec(fn, name, sig, constexprs, num_warps=4):
    return dict(fn=fn, signature=sig, constexprs=constexprs, name=name, num_warps=num_warps)


def _fwd_sig(t):
    ints = ["C", "H", "W", "Wo", "P", "NB", "NS", "CPP", "sxn", "sxc", "sxh", "sxw", "sgn", "sgh", "sgw", "sgk", "son",
            "soc", "sop"]
    return {"x_ptr": f"*{t}", "grid_ptr": "*fp32", "out_ptr": f"*{t}", **{k: "i32" for k in ints}}


def _bwd_sig(t):
    ints = ["C", "H", "W", "Wo", "P", "NB", "NS", "CPP", "Q"]
    strides = [f"s{a}{b}" for a, bs in (("go", "nchw"), ("x", "nchw"), ("g", "nhwk"), ("d", "nchw")) for b in bs]
    sig = {"go_ptr": f"*{t}", "x_ptr": f"*{t}", "grid_ptr": "*fp32", "gx_ptr": "*fp32", "ggrid_ptr": "*fp32",
           "key_ptr": "*i64", "wt_ptr": "*fp32", **{k: "i32" for k in ints}, "sentinel": "i64"}
    sig.update({k: "i32" for k in strides})
    return sig


# Representative compilations checked in CI for sm_86/sm_90 (tests/test_triton_compile.py).
COMPILE_SPECS = [
    _spec(_grid_sample_fwd_kernel, f"grid_sample_fwd[{t},mode{mo},pad{pa},C{bc}{',i64' if i64 else ''}]",
          _fwd_sig(t), {"MODE": mo, "PADDING": pa, "ALIGN": al, "BLOCK_P": 512 // bc, "BLOCK_C": bc, "INT64": i64,
                        "CL": bc > 4})
    for t, mo, pa, al, bc, i64 in [
        ("fp32", 0, 0, False, 4, False), ("bf16", 0, 2, True, 64, False), ("fp16", 1, 1, False, 64, False),
        ("fp32", 0, 2, False, 4, True),
    ]
] + [
    _spec(_grid_sample_bwd_kernel, f"grid_sample_bwd[{t},mode{mo},pad{pa},det{int(det)}]",
          _bwd_sig(t), {"MODE": mo, "PADDING": pa, "ALIGN": al, "ATOMIC_X": not det, "ENTRIES_X": det,
                        "NEED_GRID": True, "BLOCK_P": 256 // bc, "BLOCK_C": bc, "INT64": i64,
                        "CL": bc > 4})
    for t, mo, pa, al, det, i64, bc in [
        ("fp32", 0, 0, False, False, False, 4), ("bf16", 0, 2, True, True, False, 64),
        ("fp16", 1, 1, False, False, True, 64), ("fp32", 1, 0, True, True, False, 4),
    ]
] + [
    _spec(_gather_input_grad_kernel, f"gather_input_grad[{t},E{e}]",
          {"bounds_ptr": "*i64", "perm_ptr": "*i64", "wt_ptr": "*fp32", "go_ptr": f"*{t}", "gx_ptr": f"*{t}",
           **{k: "i32" for k in ["T", "C", "HW", "W", "MP", "P", "Wo", "sgob", "sgom", "sgoc", "sgoh", "sgow",
                                  "sdn", "sdc", "sdh", "sdw"]}},
          {"ENTRIES": e, "BLOCK_T": 256 // bc, "BLOCK_C": bc, "CL": bc > 4})
    for t, e, bc in [("fp32", 4, 4), ("bf16", 1, 64)]
]
