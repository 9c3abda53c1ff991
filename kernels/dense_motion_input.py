"""Triton fused dense-motion input: heatmap differences + the source deformed by K+1 motions.

One program per (pixel block, group g, sample b). Group 0 is the background (identity
motion, zero heatmap); group g >= 1 uses keypoint g - 1, whose sparse motion
T(z) = A (z - kp_d) + kp_s (A = J_s inverse_2x2(J_d), fp32) is evaluated per pixel and
sampled bilinearly from the source (grid_sample semantics, zeros padding). The sparse
motions are never stored. A sample position that is not finite (singular jacobian) gives
NaN deformed channels, as torch's grid_sample does on CPU.

The backward recomputes the motions, writes per-block partial gradients of the 12 numbers
per keypoint (deterministic: summed afterwards, no atomics) and, when asked, scatters the
source gradient with fp32 atomics (like grid_sample's CUDA backward).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._dense_motion_geometry import (
    apply_motion,
    gaussian,
    keypoint_affine,
    load_keypoint,
    pixel_grid,
    store_keypoint_grads,
)
from ._device import on_tensor_device

BLOCK = 256
NUM_WARPS = 4


@triton.jit
def _bilinear_setup(sx, sy, H, W, valid, ALIGN_CORNERS: tl.constexpr):
    """Corner indices, weights and in-bounds masks of grid_sample at normalised (sx, sy)."""
    if ALIGN_CORNERS:
        ix = (sx + 1.0) * 0.5 * (W - 1)
        iy = (sy + 1.0) * 0.5 * (H - 1)
    else:
        ix = ((sx + 1.0) * W - 1.0) * 0.5
        iy = ((sy + 1.0) * H - 1.0) * 0.5
    finite = (tl.abs(sx) < float("inf")) & (tl.abs(sy) < float("inf"))  # False for nan
    # far outside (or nan): park at -2, where both corners are out of bounds (value 0, grad 0)
    ix = tl.where((ix > -2.0) & (ix < W + 1.0), ix, -2.0)
    iy = tl.where((iy > -2.0) & (iy < H + 1.0), iy, -2.0)
    x0f = tl.floor(ix)
    y0f = tl.floor(iy)
    wx1 = ix - x0f
    wx0 = (x0f + 1.0) - ix
    wy1 = iy - y0f
    wy0 = (y0f + 1.0) - iy
    x0 = x0f.to(tl.int32)
    y0 = y0f.to(tl.int32)
    x1 = x0 + 1
    y1 = y0 + 1
    mx0 = (x0 >= 0) & (x0 < W)
    mx1 = (x1 >= 0) & (x1 < W)
    my0 = (y0 >= 0) & (y0 < H) & valid
    my1 = (y1 >= 0) & (y1 < H) & valid
    return x0, y0, x1, y1, wx0, wx1, wy0, wy1, mx0, mx1, my0, my1, finite


@triton.jit
def _dense_motion_input_fwd_kernel(
    src_ptr, kps_ptr, kpd_ptr, js_ptr, jd_ptr, out_ptr,
    C, H, W, K, variance,
    stride_sb, stride_sc, stride_sh, stride_sw,
    HAS_JAC: tl.constexpr, ALIGN_CORNERS: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    g = tl.program_id(1)
    b = tl.program_id(2)
    HW = H * W
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    valid = offs < HW
    zx, zy = pixel_grid(offs, H, W)
    bk = b * K + tl.maximum(g - 1, 0)
    ksx, ksy = load_keypoint(kps_ptr, bk)
    kdx, kdy = load_keypoint(kpd_ptr, bk)
    a00, a01, a10, a11 = keypoint_affine(js_ptr, jd_ptr, bk, HAS_JAC)
    mx, my = apply_motion(zx, zy, ksx, ksy, kdx, kdy, a00, a01, a10, a11, HAS_JAC)
    is_bg = g == 0
    sx = tl.where(is_bg, zx, mx)
    sy = tl.where(is_bg, zy, my)
    heat = gaussian(zx, zy, kdx, kdy, variance) - gaussian(zx, zy, ksx, ksy, variance)
    heat = tl.where(is_bg, 0.0, heat)

    out_base = out_ptr + (b.to(tl.int64) * (K + 1) + g) * (C + 1) * HW
    tl.store(out_base + offs, heat.to(out_ptr.dtype.element_ty), mask=valid)

    x0, y0, x1, y1, wx0, wx1, wy0, wy1, mx0, mx1, my0, my1, finite = _bilinear_setup(
        sx, sy, H, W, valid, ALIGN_CORNERS)
    o00 = y0 * stride_sh + x0 * stride_sw
    o01 = y0 * stride_sh + x1 * stride_sw
    o10 = y1 * stride_sh + x0 * stride_sw
    o11 = y1 * stride_sh + x1 * stride_sw
    w00 = wx0 * wy0
    w01 = wx1 * wy0
    w10 = wx0 * wy1
    w11 = wx1 * wy1
    src_base = src_ptr + b.to(tl.int64) * stride_sb
    for c in range(C):
        p = src_base + c * stride_sc
        v00 = tl.load(p + o00, mask=my0 & mx0, other=0.0).to(tl.float32)
        v01 = tl.load(p + o01, mask=my0 & mx1, other=0.0).to(tl.float32)
        v10 = tl.load(p + o10, mask=my1 & mx0, other=0.0).to(tl.float32)
        v11 = tl.load(p + o11, mask=my1 & mx1, other=0.0).to(tl.float32)
        val = v00 * w00 + v01 * w01 + v10 * w10 + v11 * w11
        val = tl.where(finite, val, float("nan"))
        tl.store(out_base + (c + 1) * HW + offs, val.to(out_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _dense_motion_input_bwd_kernel(
    grad_ptr, src_ptr, kps_ptr, kpd_ptr, js_ptr, jd_ptr, dsrc_ptr, part_ptr,
    C, H, W, K, NB, variance,
    stride_sb, stride_sc, stride_sh, stride_sw,
    HAS_JAC: tl.constexpr, ALIGN_CORNERS: tl.constexpr, NEED_SRC_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    g = tl.program_id(1)
    b = tl.program_id(2)
    HW = H * W
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    valid = offs < HW
    zx, zy = pixel_grid(offs, H, W)
    bk = b * K + tl.maximum(g - 1, 0)
    ksx, ksy = load_keypoint(kps_ptr, bk)
    kdx, kdy = load_keypoint(kpd_ptr, bk)
    a00, a01, a10, a11 = keypoint_affine(js_ptr, jd_ptr, bk, HAS_JAC)
    mx, my = apply_motion(zx, zy, ksx, ksy, kdx, kdy, a00, a01, a10, a11, HAS_JAC)
    is_bg = g == 0
    sx = tl.where(is_bg, zx, mx)
    sy = tl.where(is_bg, zy, my)

    x0, y0, x1, y1, wx0, wx1, wy0, wy1, mx0, mx1, my0, my1, finite = _bilinear_setup(
        sx, sy, H, W, valid, ALIGN_CORNERS)
    o00 = y0 * stride_sh + x0 * stride_sw
    o01 = y0 * stride_sh + x1 * stride_sw
    o10 = y1 * stride_sh + x0 * stride_sw
    o11 = y1 * stride_sh + x1 * stride_sw
    m00 = my0 & mx0
    m01 = my0 & mx1
    m10 = my1 & mx0
    m11 = my1 & mx1
    grad_base = grad_ptr + (b.to(tl.int64) * (K + 1) + g) * (C + 1) * HW
    src_base = src_ptr + b.to(tl.int64) * stride_sb
    gix = tl.zeros((BLOCK,), tl.float32)
    giy = tl.zeros((BLOCK,), tl.float32)
    for c in range(C):
        go = tl.load(grad_base + (c + 1) * HW + offs, mask=valid, other=0.0).to(tl.float32)
        go = tl.where(finite, go, 0.0)
        p = src_base + c * stride_sc
        v00 = tl.load(p + o00, mask=m00, other=0.0).to(tl.float32)
        v01 = tl.load(p + o01, mask=m01, other=0.0).to(tl.float32)
        v10 = tl.load(p + o10, mask=m10, other=0.0).to(tl.float32)
        v11 = tl.load(p + o11, mask=m11, other=0.0).to(tl.float32)
        gix += go * ((v01 - v00) * wy0 + (v11 - v10) * wy1)
        giy += go * ((v10 - v00) * wx0 + (v11 - v01) * wx1)
        if NEED_SRC_GRAD:
            d = dsrc_ptr + (b.to(tl.int64) * C + c) * HW
            tl.atomic_add(d + y0 * W + x0, go * (wx0 * wy0), mask=m00)
            tl.atomic_add(d + y0 * W + x1, go * (wx1 * wy0), mask=m01)
            tl.atomic_add(d + y1 * W + x0, go * (wx0 * wy1), mask=m10)
            tl.atomic_add(d + y1 * W + x1, go * (wx1 * wy1), mask=m11)

    if g > 0:
        if ALIGN_CORNERS:
            gx = gix * (0.5 * (W - 1))
            gy = giy * (0.5 * (H - 1))
        else:
            gx = gix * (0.5 * W)
            gy = giy * (0.5 * H)
        gh = tl.load(grad_base + offs, mask=valid, other=0.0).to(tl.float32)
        ox = tl.where(valid, zx - kdx, 0.0)
        oy = tl.where(valid, zy - kdy, 0.0)
        # motion T = A (z - kp_d) + kp_s: dkp_s = sum g, dA = sum g (z - kp_d)^T, dkp_d = -A^T sum g
        sgx = tl.sum(gx, axis=0)
        sgy = tl.sum(gy, axis=0)
        ga00 = tl.sum(gx * ox, axis=0)
        ga01 = tl.sum(gx * oy, axis=0)
        ga10 = tl.sum(gy * ox, axis=0)
        ga11 = tl.sum(gy * oy, axis=0)
        # heatmap difference G(kp_d) - G(kp_s): dG/dkp = G (z - kp) / variance
        whd = gh * gaussian(zx, zy, kdx, kdy, variance) / variance
        whs = gh * gaussian(zx, zy, ksx, ksy, variance) / variance
        hd_x = tl.sum(whd * ox, axis=0)
        hd_y = tl.sum(whd * oy, axis=0)
        hs_x = tl.sum(tl.where(valid, whs * (zx - ksx), 0.0), axis=0)
        hs_y = tl.sum(tl.where(valid, whs * (zy - ksy), 0.0), axis=0)
        if HAS_JAC:
            dkd_x = -(a00 * sgx + a10 * sgy)
            dkd_y = -(a01 * sgx + a11 * sgy)
        else:
            dkd_x = -sgx
            dkd_y = -sgy
        part = part_ptr + ((b.to(tl.int64) * K + (g - 1)) * NB + pid) * 12
        store_keypoint_grads(part, sgx - hs_x, sgy - hs_y, dkd_x + hd_x, dkd_y + hd_y,
                             ga00, ga01, ga10, ga11, js_ptr, jd_ptr, bk, HAS_JAC)


def _jac_ptrs(kp_s, jac_s, jac_d):
    return (kp_s, kp_s) if jac_s is None else (jac_s, jac_d)


@on_tensor_device
def dense_motion_input_forward(source: torch.Tensor, kp_s: torch.Tensor, kp_d: torch.Tensor,
                               jac_s: torch.Tensor | None, jac_d: torch.Tensor | None,
                               align_corners: bool, variance: float) -> torch.Tensor:
    """Launch the forward. source (B, C, H, W) any strides, float32/16/bf16; kp_* (B, K, 2),
    jac_* (B, K, 2, 2) or None: contiguous float32. Returns (B, (K+1)*(C+1), H, W) in
    source's dtype, contiguous."""
    bs, channels, h, w = source.shape
    num_kp = kp_s.shape[1]
    out = torch.empty(bs, (num_kp + 1) * (channels + 1), h, w, dtype=source.dtype, device=source.device)
    if out.numel() == 0:
        return out
    js, jd = _jac_ptrs(kp_s, jac_s, jac_d)
    grid = (triton.cdiv(h * w, BLOCK), num_kp + 1, bs)
    _dense_motion_input_fwd_kernel[grid](
        source, kp_s, kp_d, js, jd, out, channels, h, w, num_kp, float(variance),
        *source.stride(), HAS_JAC=jac_s is not None, ALIGN_CORNERS=bool(align_corners), BLOCK=BLOCK,
        num_warps=NUM_WARPS,
    )
    return out


@on_tensor_device
def dense_motion_input_backward(grad: torch.Tensor, source: torch.Tensor, kp_s: torch.Tensor, kp_d: torch.Tensor,
                                jac_s: torch.Tensor | None, jac_d: torch.Tensor | None, align_corners: bool,
                                variance: float, need_source_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the backward. grad: contiguous (B, (K+1)*(C+1), H, W) in source's dtype.

    Returns (source gradient float32 (B, C, H, W) contiguous, or an empty tensor when not
    asked; keypoint gradients float32 (B, K, 12) = [kp_s, kp_d, J_s, J_d] per keypoint).
    """
    bs, channels, h, w = source.shape
    num_kp = kp_s.shape[1]
    nb = triton.cdiv(h * w, BLOCK)
    part = torch.empty(bs, num_kp, nb, 12, dtype=torch.float32, device=source.device)
    dsrc = (torch.zeros(bs, channels, h, w, dtype=torch.float32, device=source.device) if need_source_grad
            else torch.empty(0, dtype=torch.float32, device=source.device))
    if bs == 0:
        return dsrc, part.sum(dim=2)
    js, jd = _jac_ptrs(kp_s, jac_s, jac_d)
    grid = (nb, num_kp + 1, bs)
    _dense_motion_input_bwd_kernel[grid](
        grad, source, kp_s, kp_d, js, jd, dsrc if need_source_grad else part, part,
        channels, h, w, num_kp, nb, float(variance), *source.stride(),
        HAS_JAC=jac_s is not None, ALIGN_CORNERS=bool(align_corners), NEED_SRC_GRAD=bool(need_source_grad),
        BLOCK=BLOCK, num_warps=NUM_WARPS,
    )
    return dsrc, part.sum(dim=2)


def _specs():
    specs = []
    for t in ("fp32", "fp16", "bf16"):
        types = {"src_ptr": f"*{t}", "grad_ptr": f"*{t}", "out_ptr": f"*{t}", "kps_ptr": "*fp32",
                 "kpd_ptr": "*fp32", "js_ptr": "*fp32", "jd_ptr": "*fp32", "dsrc_ptr": "*fp32",
                 "part_ptr": "*fp32", "C": "i32", "H": "i32", "W": "i32", "K": "i32", "NB": "i32",
                 "variance": "fp32", "stride_sb": "i32", "stride_sc": "i32", "stride_sh": "i32",
                 "stride_sw": "i32"}
        for has_jac in (True, False):
            for fn, extra in ((_dense_motion_input_fwd_kernel, {}),
                              (_dense_motion_input_bwd_kernel, {"NEED_SRC_GRAD": True})):
                constexprs = {"HAS_JAC": has_jac, "ALIGN_CORNERS": not has_jac, **extra, "BLOCK": BLOCK}
                specs.append(dict(
                    fn=fn, signature={n: types[n] for n in fn.arg_names if n not in constexprs},
                    constexprs=constexprs, num_warps=NUM_WARPS,
                    name=f"{fn.__name__.strip('_')}[{t},jac={has_jac}]",
                ))
    return specs


# Representative compilations checked in CI for sm_86/sm_90 (tests/test_triton_compile.py).
COMPILE_SPECS = _specs()
