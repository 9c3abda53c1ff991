"""Triton deformable flow composition: flow(z) = sum_g softmax_g(mask logits) T_g(z).

Forward: one program per (pixel block, sample). Two passes over the K+1 logits (max, then
exponentials) with each sparse motion T_g computed per pixel from its keypoint's 12
numbers (the (B, K+1, H, W, 2) motions are never stored); softmax, exponentials and the
2x2 inverse in fp32. Writes the flow in fp32 and the per-pixel softmax statistics (m, s):
the max logit and sum_g exp(l_g - m), saved for the backward (not their log-sum-exp
m + log s: rounding it to fp32 at |m| = 1e4 is a 5e-4 relative error in every p_g).

Backward: one program per (pixel block, group, sample): p_g = exp(l_g - m) / s,
dl_g = p_g (gf . T_g - gf . flow), dT_g = p_g gf reduced per block into the 12 keypoint
gradients (deterministic partial sums, no atomics).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._dense_motion_geometry import (
    apply_motion,
    keypoint_affine,
    load_keypoint,
    pixel_grid,
    store_keypoint_grads,
)
from ._device import on_tensor_device

BLOCK = 256
NUM_WARPS = 4


@triton.jit
def _compose_flow_fwd_kernel(
    logit_ptr, kps_ptr, kpd_ptr, js_ptr, jd_ptr, flow_ptr, stats_ptr,
    H, W, K,
    stride_lb, stride_lc, stride_lh, stride_lw,
    HAS_JAC: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    b = tl.program_id(1)
    HW = H * W
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    valid = offs < HW
    row = offs // W
    col = offs - row * W
    zx, zy = pixel_grid(offs, H, W)
    lbase = logit_ptr + b.to(tl.int64) * stride_lb + row * stride_lh + col * stride_lw

    l0 = tl.load(lbase, mask=valid, other=0.0).to(tl.float32)
    m = l0
    for k in range(K):
        lk = tl.load(lbase + (k + 1) * stride_lc, mask=valid, other=0.0).to(tl.float32)
        m = tl.maximum(m, lk)
    e = tl.exp(l0 - m)
    s = e
    fx = e * zx
    fy = e * zy
    for k in range(K):
        bk = b * K + k
        ksx, ksy = load_keypoint(kps_ptr, bk)
        kdx, kdy = load_keypoint(kpd_ptr, bk)
        a00, a01, a10, a11 = keypoint_affine(js_ptr, jd_ptr, bk, HAS_JAC)
        tx, ty = apply_motion(zx, zy, ksx, ksy, kdx, kdy, a00, a01, a10, a11, HAS_JAC)
        lk = tl.load(lbase + (k + 1) * stride_lc, mask=valid, other=0.0).to(tl.float32)
        e = tl.exp(lk - m)
        s += e
        fx += e * tx
        fy += e * ty
    pix = b.to(tl.int64) * HW + offs
    tl.store(flow_ptr + pix * 2, fx / s, mask=valid)
    tl.store(flow_ptr + pix * 2 + 1, fy / s, mask=valid)
    tl.store(stats_ptr + pix * 2, m, mask=valid)
    tl.store(stats_ptr + pix * 2 + 1, s, mask=valid)


@triton.jit
def _compose_flow_bwd_kernel(
    grad_ptr, logit_ptr, flow_ptr, stats_ptr, kps_ptr, kpd_ptr, js_ptr, jd_ptr, dlogit_ptr, part_ptr,
    H, W, K, NB,
    stride_lb, stride_lc, stride_lh, stride_lw,
    stride_db, stride_dc, stride_dh, stride_dw,
    HAS_JAC: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    g = tl.program_id(1)
    b = tl.program_id(2)
    HW = H * W
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    valid = offs < HW
    row = offs // W
    col = offs - row * W
    zx, zy = pixel_grid(offs, H, W)
    bk = b * K + tl.maximum(g - 1, 0)
    ksx, ksy = load_keypoint(kps_ptr, bk)
    kdx, kdy = load_keypoint(kpd_ptr, bk)
    a00, a01, a10, a11 = keypoint_affine(js_ptr, jd_ptr, bk, HAS_JAC)
    mx, my = apply_motion(zx, zy, ksx, ksy, kdx, kdy, a00, a01, a10, a11, HAS_JAC)
    is_bg = g == 0
    tx = tl.where(is_bg, zx, mx)
    ty = tl.where(is_bg, zy, my)

    pix = b.to(tl.int64) * HW + offs
    lg = tl.load(logit_ptr + b.to(tl.int64) * stride_lb + g * stride_lc + row * stride_lh + col * stride_lw,
                 mask=valid, other=0.0).to(tl.float32)
    m = tl.load(stats_ptr + pix * 2, mask=valid, other=0.0)
    s = tl.load(stats_ptr + pix * 2 + 1, mask=valid, other=1.0)
    p = tl.exp(lg - m) / s
    gfx = tl.load(grad_ptr + pix * 2, mask=valid, other=0.0)
    gfy = tl.load(grad_ptr + pix * 2 + 1, mask=valid, other=0.0)
    fx = tl.load(flow_ptr + pix * 2, mask=valid, other=0.0)
    fy = tl.load(flow_ptr + pix * 2 + 1, mask=valid, other=0.0)
    dl = p * ((gfx * tx + gfy * ty) - (gfx * fx + gfy * fy))
    tl.store(dlogit_ptr + b.to(tl.int64) * stride_db + g * stride_dc + row * stride_dh + col * stride_dw,
             dl.to(dlogit_ptr.dtype.element_ty), mask=valid)

    if g > 0:
        gx = tl.where(valid, p * gfx, 0.0)
        gy = tl.where(valid, p * gfy, 0.0)
        ox = tl.where(valid, zx - kdx, 0.0)
        oy = tl.where(valid, zy - kdy, 0.0)
        sgx = tl.sum(gx, axis=0)
        sgy = tl.sum(gy, axis=0)
        ga00 = tl.sum(gx * ox, axis=0)
        ga01 = tl.sum(gx * oy, axis=0)
        ga10 = tl.sum(gy * ox, axis=0)
        ga11 = tl.sum(gy * oy, axis=0)
        if HAS_JAC:
            dkd_x = -(a00 * sgx + a10 * sgy)
            dkd_y = -(a01 * sgx + a11 * sgy)
        else:
            dkd_x = -sgx
            dkd_y = -sgy
        part = part_ptr + ((b.to(tl.int64) * K + (g - 1)) * NB + pid) * 12
        store_keypoint_grads(part, sgx, sgy, dkd_x, dkd_y, ga00, ga01, ga10, ga11, js_ptr, jd_ptr, bk, HAS_JAC)


def _jac_ptrs(kp_s, jac_s, jac_d):
    return (kp_s, kp_s) if jac_s is None else (jac_s, jac_d)


@on_tensor_device
def compose_flow_forward(logits: torch.Tensor, kp_s: torch.Tensor, kp_d: torch.Tensor,
                         jac_s: torch.Tensor | None, jac_d: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward. logits (B, K+1, H, W) any strides, float32/16/bf16; kp_* (B, K, 2),
    jac_* (B, K, 2, 2) or None: contiguous float32. Returns (flow float32 (B, H, W, 2),
    softmax statistics float32 (B, H, W, 2): max logit, sum of exp(logit - max)), contiguous."""
    bs, groups, h, w = logits.shape
    flow = torch.empty(bs, h, w, 2, dtype=torch.float32, device=logits.device)
    stats = torch.empty(bs, h, w, 2, dtype=torch.float32, device=logits.device)
    if flow.numel() == 0:
        return flow, stats
    js, jd = _jac_ptrs(kp_s, jac_s, jac_d)
    grid = (triton.cdiv(h * w, BLOCK), bs)
    _compose_flow_fwd_kernel[grid](
        logits, kp_s, kp_d, js, jd, flow, stats, h, w, groups - 1, *logits.stride(),
        HAS_JAC=jac_s is not None, BLOCK=BLOCK, num_warps=NUM_WARPS,
    )
    return flow, stats


@on_tensor_device
def compose_flow_backward(grad: torch.Tensor, logits: torch.Tensor, flow: torch.Tensor, stats: torch.Tensor,
                          kp_s: torch.Tensor, kp_d: torch.Tensor, jac_s: torch.Tensor | None,
                          jac_d: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the backward. grad, flow: contiguous float32 (B, H, W, 2); stats float32 (B, H, W, 2)
    from the forward.

    Returns (logit gradient like `logits` (same dtype and layout); keypoint gradients
    float32 (B, K, 12) = [kp_s, kp_d, J_s, J_d] per keypoint).
    """
    bs, groups, h, w = logits.shape
    num_kp = groups - 1
    nb = triton.cdiv(h * w, BLOCK)
    dlogits = torch.empty_like(logits)
    part = torch.empty(bs, num_kp, nb, 12, dtype=torch.float32, device=logits.device)
    if bs == 0:
        return dlogits, part.sum(dim=2)
    js, jd = _jac_ptrs(kp_s, jac_s, jac_d)
    grid = (nb, groups, bs)
    _compose_flow_bwd_kernel[grid](
        grad, logits, flow, stats, kp_s, kp_d, js, jd, dlogits, part, h, w, num_kp, nb,
        *logits.stride(), *dlogits.stride(), HAS_JAC=jac_s is not None, BLOCK=BLOCK, num_warps=NUM_WARPS,
    )
    return dlogits, part.sum(dim=2)


def _specs():
    specs = []
    for t in ("fp32", "fp16", "bf16"):
        types = {"logit_ptr": f"*{t}", "dlogit_ptr": f"*{t}", "grad_ptr": "*fp32", "flow_ptr": "*fp32",
                 "stats_ptr": "*fp32", "kps_ptr": "*fp32", "kpd_ptr": "*fp32", "js_ptr": "*fp32", "jd_ptr": "*fp32",
                 "part_ptr": "*fp32", "H": "i32", "W": "i32", "K": "i32", "NB": "i32"}
        types.update({f"stride_{a}{d}": "i32" for a in "ld" for d in "bchw"})
        for has_jac in (True, False):
            for fn in (_compose_flow_fwd_kernel, _compose_flow_bwd_kernel):
                constexprs = {"HAS_JAC": has_jac, "BLOCK": BLOCK}
                specs.append(dict(
                    fn=fn, signature={n: types[n] for n in fn.arg_names if n not in constexprs},
                    constexprs=constexprs, num_warps=NUM_WARPS,
                    name=f"{fn.__name__.strip('_')}[{t},jac={has_jac}]",
                ))
    return specs


# Representative compilations checked in CI for sm_86/sm_90 (tests/test_triton_compile.py).
COMPILE_SPECS = _specs()
