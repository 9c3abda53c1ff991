"""Triton nearest-code search: blocked over queries and codes, running min in registers.

distance(z, e) = |e|^2 - 2 z.e (+ |z|^2 added at the end), accumulated in fp32 with tl.dot
tiles over d. Ties go to the lowest index. The N x K distance matrix is never stored.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _nearest_code_kernel(
    z_ptr, cb_ptr, idx_ptr, dist_ptr,
    N, D, start, num,
    stride_zn, stride_zd, stride_ck, stride_cd,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    rows64 = rows.to(tl.int64)
    best = tl.full((BLOCK_N,), float("inf"), tl.float32)
    best_idx = tl.zeros((BLOCK_N,), tl.int64)
    z_sq = tl.zeros((BLOCK_N,), tl.float32)
    for k0 in range(0, num, BLOCK_K):
        codes = k0 + tl.arange(0, BLOCK_K)
        code_ok = codes < num
        codes64 = (codes + start).to(tl.int64)
        dot = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
        e_sq = tl.zeros((BLOCK_K,), tl.float32)
        for d0 in range(0, D, BLOCK_D):
            dims = d0 + tl.arange(0, BLOCK_D)
            dim_ok = dims < D
            zt = tl.load(z_ptr + rows64[:, None] * stride_zn + dims[None, :] * stride_zd,
                         mask=row_ok[:, None] & dim_ok[None, :], other=0.0).to(tl.float32)
            et = tl.load(cb_ptr + codes64[None, :] * stride_ck + dims[:, None] * stride_cd,
                         mask=code_ok[None, :] & dim_ok[:, None], other=0.0).to(tl.float32)
            dot += tl.dot(zt, et, input_precision="ieee")
            e_sq += tl.sum(et * et, axis=0)
            if k0 == 0:
                z_sq += tl.sum(zt * zt, axis=1)
        dist = e_sq[None, :] - 2.0 * dot
        dist = tl.where(code_ok[None, :], dist, float("inf"))
        tile_best = tl.min(dist, axis=1)
        # lowest index among the tile's minima
        cand = tl.where(dist == tile_best[:, None], codes[None, :], num)
        tile_idx = tl.min(cand, axis=1).to(tl.int64) + start
        better = tile_best < best
        best_idx = tl.where(better, tile_idx, best_idx)
        best = tl.where(better, tile_best, best)
    out = tl.maximum(best + z_sq, 0.0)
    tl.store(idx_ptr + rows64, best_idx, mask=row_ok)
    tl.store(dist_ptr + rows64, out, mask=row_ok)


def nearest_code(z: torch.Tensor, codebook: torch.Tensor, start: int, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton launch. z (N, d), codebook (K, d) float32/16/bf16 on one device.

    Returns int64 indices (N,) into the whole codebook and float32 squared distances (N,).
    """
    n, d = z.shape
    idx = torch.empty(n, dtype=torch.int64, device=z.device)
    dist = torch.empty(n, dtype=torch.float32, device=z.device)
    if n == 0:
        return idx, dist
    block_n, block_k = 32, 32
    block_d = max(16, min(64, triton.next_power_of_2(d)))
    grid = (triton.cdiv(n, block_n),)
    _nearest_code_kernel[grid](
        z, codebook, idx, dist, n, d, start, num,
        z.stride(0), z.stride(1), codebook.stride(0), codebook.stride(1),
        BLOCK_N=block_n, BLOCK_K=block_k, BLOCK_D=block_d,
    )
    return idx, dist


# Representative compilations checked in CI for sm_86/sm_90 (tests/test_triton_compile.py).
COMPILE_SPECS = [
    dict(
        fn=_nearest_code_kernel,
        signature={
            "z_ptr": f"*{t}", "cb_ptr": f"*{t}", "idx_ptr": "*i64", "dist_ptr": "*fp32",
            "N": "i32", "D": "i32", "start": "i32", "num": "i32",
            "stride_zn": "i32", "stride_zd": "i32", "stride_ck": "i32", "stride_cd": "i32",
        },
        constexprs={"BLOCK_N": 32, "BLOCK_K": 32, "BLOCK_D": bd},
        name=f"nearest_code[{t},D{bd}]",
    )
    for t in ("fp32", "fp16", "bf16")
    for bd in (32, 64)
]
