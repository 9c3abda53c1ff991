"""Triton keypoint heatmaps: G_k(z) = exp(-0.5 |z - kp_k|^2 / variance) on the (H, W) grid.

One program per (pixel block, keypoint, sample); fp32 arithmetic, output in the requested
dtype. (The backward is a closed form over the saved maps, in mcc_fast.ops.dense_motion.)
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._dense_motion_geometry import gaussian, load_keypoint, pixel_grid
from ._device import on_tensor_device

BLOCK = 256
NUM_WARPS = 4


@triton.jit
def _keypoint_heatmaps_kernel(kp_ptr, out_ptr, H, W, K, variance, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    k = tl.program_id(1)
    b = tl.program_id(2)
    HW = H * W
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    valid = offs < HW
    zx, zy = pixel_grid(offs, H, W)
    bk = b * K + k
    kx, ky = load_keypoint(kp_ptr, bk)
    heat = gaussian(zx, zy, kx, ky, variance)
    tl.store(out_ptr + bk.to(tl.int64) * HW + offs, heat.to(out_ptr.dtype.element_ty), mask=valid)


@on_tensor_device
def keypoint_heatmaps(kp: torch.Tensor, h: int, w: int, variance: float, dtype: torch.dtype) -> torch.Tensor:
    """kp: contiguous float32 (B, K, 2). Returns contiguous (B, K, h, w) in `dtype`."""
    bs, num_kp = kp.shape[:2]
    out = torch.empty(bs, num_kp, h, w, dtype=dtype, device=kp.device)
    if out.numel() == 0:
        return out
    grid = (triton.cdiv(h * w, BLOCK), num_kp, bs)
    _keypoint_heatmaps_kernel[grid](kp, out, h, w, num_kp, float(variance), BLOCK=BLOCK, num_warps=NUM_WARPS)
    return out


# Representative compilations checked in CI for sm_86/sm_90 (tests/test_triton_compile.py).
COMPILE_SPECS = [
    dict(
        fn=_keypoint_heatmaps_kernel,
        signature={"kp_ptr": "*fp32", "out_ptr": f"*{t}", "H": "i32", "W": "i32", "K": "i32", "variance": "fp32"},
        constexprs={"BLOCK": BLOCK}, num_warps=NUM_WARPS, name=f"keypoint_heatmaps[{t}]",
    )
    for t in ("fp32", "fp16", "bf16")
]
