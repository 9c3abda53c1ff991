"""Triton sparse motions: (B, K+1, H, W, 2), identity first, then T_k(z) = A_k (z - kp_d) + kp_s.

A_k = J_s inverse_2x2(J_d) in closed form (fp32); without jacobians a pure translation.
One program per (pixel block, group, sample). For tests and users: the fused dense-motion
kernels never store these. (The backward is a closed form in mcc_fast.ops.dense_motion.)
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._dense_motion_geometry import apply_motion, keypoint_affine, load_keypoint, pixel_grid
from ._device import on_tensor_device

BLOCK = 256
NUM_WARPS = 4


@triton.jit
def _sparse_motions_kernel(kps_ptr, kpd_ptr, js_ptr, jd_ptr, out_ptr, H, W, K,
                           HAS_JAC: tl.constexpr, BLOCK: tl.constexpr):
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
    tx = tl.where(is_bg, zx, mx)
    ty = tl.where(is_bg, zy, my)
    pix = (b.to(tl.int64) * (K + 1) + g) * HW + offs
    tl.store(out_ptr + pix * 2, tx.to(out_ptr.dtype.element_ty), mask=valid)
    tl.store(out_ptr + pix * 2 + 1, ty.to(out_ptr.dtype.element_ty), mask=valid)


@on_tensor_device
def sparse_motions(kp_s: torch.Tensor, kp_d: torch.Tensor, jac_s: torch.Tensor | None, jac_d: torch.Tensor | None,
                   h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
    """kp_* contiguous float32 (B, K, 2); jac_* contiguous float32 (B, K, 2, 2) or None.

    Returns contiguous (B, K+1, h, w, 2) in `dtype`.
    """
    bs, num_kp = kp_s.shape[:2]
    out = torch.empty(bs, num_kp + 1, h, w, 2, dtype=dtype, device=kp_s.device)
    if out.numel() == 0:
        return out
    js, jd = (kp_s, kp_s) if jac_s is None else (jac_s, jac_d)
    grid = (triton.cdiv(h * w, BLOCK), num_kp + 1, bs)
    _sparse_motions_kernel[grid](kp_s, kp_d, js, jd, out, h, w, num_kp, HAS_JAC=jac_s is not None, BLOCK=BLOCK,
                                 num_warps=NUM_WARPS)
    return out


# Representative compilations checked in CI for sm_86/sm_90 (tests/test_triton_compile.py).
COMPILE_SPECS = [
    dict(
        fn=_sparse_motions_kernel,
        signature={"kps_ptr": "*fp32", "kpd_ptr": "*fp32", "js_ptr": "*fp32", "jd_ptr": "*fp32", "out_ptr": f"*{t}",
                   "H": "i32", "W": "i32", "K": "i32"},
        constexprs={"HAS_JAC": has_jac, "BLOCK": BLOCK}, num_warps=NUM_WARPS,
        name=f"sparse_motions[{t},jac={has_jac}]",
    )
    for t in ("fp32", "fp16", "bf16")
    for has_jac in (True, False)
]
