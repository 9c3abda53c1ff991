"""Triton fused GroupNorm (+ optional swish) forward, for NCHW or channels-last inputs.

x is read as (N, C, P) with strides (sn, sc, sp) (P = H*W: contiguous NCHW has sp = 1,
channels-last has sc = 1), so both layouts are coalesced along their contiguous axis.

Two launches:
1. `_gn_stats_kernel`, grid (N, S, group blocks): the P pixels of a sample are split into S
   chunks; a program reduces its chunk for BLOCK_G groups to per-chunk (mean, M2) in fp32,
   tile by tile, combining tiles with Chan's parallel update (no sum/sum-of-squares
   cancellation). The statistics are of x - K, K the group's first element (the shifted-data
   algorithm): a constant group has mean and M2 exactly 0, and |mean| >> std costs no accuracy.
2. `_gn_apply_kernel`, grid (N, pixel blocks, group blocks): each program first combines the
   S chunk statistics of its groups (Chan again; the biased variance GroupNorm uses), then
   writes y = (x - K) * (gamma * rstd) + (beta - mean * gamma * rstd), times sigmoid(y) with
   SWISH, in the output's dtype and layout (the same as x's).

Forward only: the op (mcc_fast.ops.group_norm_swish) runs the torch reference when a
gradient is needed.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._device import on_tensor_device

TILE = 2048  # elements per (pixel x channel) tile
NUM_WARPS = 4
MAX_CHUNKS = 64  # S, the per-sample pixel chunks of the statistics pass
TARGET_PROGRAMS = 1024  # statistics programs to aim for (fills a large GPU)


@triton.jit
def _gn_stats_kernel(x_ptr, mean_ptr, m2_ptr, P, G, CG, S, CHUNK, sxn, sxc, sxp,
                     BLOCK_P: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_CG: tl.constexpr):
    n = tl.program_id(0)
    s = tl.program_id(1)
    gb = tl.program_id(2)
    g = gb * BLOCK_G + tl.arange(0, BLOCK_G)
    j = tl.arange(0, BLOCK_CG)
    channel = g[:, None] * CG + j[None, :]  # (BLOCK_G, BLOCK_CG)
    cmask = (g[:, None] < G) & (j[None, :] < CG)
    base = x_ptr + n.to(tl.int64) * sxn
    gmask = g < G
    pivot = tl.load(base + g * CG * sxc, mask=gmask, other=0.0).to(tl.float32)  # K: pixel 0, channel 0
    p_start = s * CHUNK
    p_end = tl.minimum(p_start + CHUNK, P)
    offs = tl.arange(0, BLOCK_P)
    run_count = 0.0
    run_mean = tl.zeros([BLOCK_G], dtype=tl.float32)
    run_m2 = tl.zeros([BLOCK_G], dtype=tl.float32)
    for p0 in range(p_start, p_end, BLOCK_P):
        p = p0 + offs
        pmask = p < p_end
        mask = pmask[:, None, None] & cmask[None, :, :]
        ptrs = base + p[:, None, None] * sxp + channel[None, :, :] * sxc
        v = tl.where(mask, tl.load(ptrs, mask=mask, other=0.0).to(tl.float32) - pivot[None, :, None], 0.0)
        count = tl.sum(pmask.to(tl.float32), axis=0) * CG
        tile_mean = tl.sum(tl.sum(v, axis=2), axis=0) / count
        d = tl.where(mask, v - tile_mean[None, :, None], 0.0)
        tile_m2 = tl.sum(tl.sum(d * d, axis=2), axis=0)
        total = run_count + count
        delta = tile_mean - run_mean
        run_mean = run_mean + delta * (count / total)
        # delta * (delta * w): w is 0 for the first tile, and a huge delta^2 times 0 would be NaN
        run_m2 = run_m2 + tile_m2 + delta * (delta * (run_count * count / total))
        run_count = total
    out = (n * G + g) * S + s
    tl.store(mean_ptr + out, run_mean, mask=gmask)
    tl.store(m2_ptr + out, run_m2, mask=gmask)


@triton.jit
def _gn_apply_kernel(x_ptr, y_ptr, w_ptr, b_ptr, mean_ptr, m2_ptr, P, G, CG, S, CHUNK, eps,
                     sxn, sxc, sxp, syn, syc, syp,
                     SWISH: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_G: tl.constexpr,
                     BLOCK_CG: tl.constexpr, BLOCK_S: tl.constexpr):
    n = tl.program_id(0)
    pb = tl.program_id(1)
    gb = tl.program_id(2)
    g = gb * BLOCK_G + tl.arange(0, BLOCK_G)
    gmask = g < G
    # combine the S chunk statistics of these groups
    s = tl.arange(0, BLOCK_S)
    smask = s < S
    chunk_count = tl.where(smask, tl.minimum(P - s * CHUNK, CHUNK), 0).to(tl.float32) * CG
    smask2 = gmask[:, None] & smask[None, :]
    part = (n * G + g)[:, None] * S + s[None, :]
    part_mean = tl.load(mean_ptr + part, mask=smask2, other=0.0)
    part_m2 = tl.load(m2_ptr + part, mask=smask2, other=0.0)
    total = tl.sum(chunk_count, axis=0)
    share = chunk_count / total
    mean = tl.sum(part_mean * share[None, :], axis=1)  # of x - K
    d = part_mean - mean[:, None]
    m2 = tl.sum(part_m2 + tl.where(smask2, d * (d * chunk_count[None, :]), 0.0), axis=1)
    rstd = 1.0 / tl.sqrt(m2 / total + eps)
    pivot = tl.load(x_ptr + n.to(tl.int64) * sxn + g * CG * sxc, mask=gmask, other=0.0).to(tl.float32)
    # normalise the tile
    j = tl.arange(0, BLOCK_CG)
    channel = g[:, None] * CG + j[None, :]
    cmask = gmask[:, None] & (j[None, :] < CG)
    gamma = tl.load(w_ptr + channel, mask=cmask, other=0.0).to(tl.float32)
    beta = tl.load(b_ptr + channel, mask=cmask, other=0.0).to(tl.float32)
    scale = gamma * rstd[:, None]
    shift = beta - mean[:, None] * scale  # mean is of x - K: no cancellation against x
    p = pb * BLOCK_P + tl.arange(0, BLOCK_P)
    mask = (p < P)[:, None, None] & cmask[None, :, :]
    x_ptrs = x_ptr + n.to(tl.int64) * sxn + p[:, None, None] * sxp + channel[None, :, :] * sxc
    v = tl.load(x_ptrs, mask=mask, other=0.0).to(tl.float32)
    y = tl.where(mask, (v - pivot[None, :, None]) * scale[None, :, :] + shift[None, :, :], 0.0)
    if SWISH:
        y = y * tl.sigmoid(y)
    y_ptrs = y_ptr + n.to(tl.int64) * syn + p[:, None, None] * syp + channel[None, :, :] * syc
    tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=mask)


def _as_ncp(t: torch.Tensor) -> tuple[int, int, int]:
    """(sn, sc, sp) strides of t viewed as (N, C, P); t is 3-D (N, C, L) or 4-D with mergeable H, W."""
    if t.dim() == 3:
        return t.stride(0), t.stride(1), t.stride(2)
    return t.stride(0), t.stride(1), t.stride(3)


def _mergeable(t: torch.Tensor) -> bool:
    return t.dim() == 3 or t.shape[2] == 1 or t.stride(2) == t.shape[3] * t.stride(3)


def launch_config(channels: int, groups: int, pixels: int, batch: int, *, chunks: int | None = None,
                  block_p: int | None = None) -> dict:
    """Block sizes and the statistics chunking for a (batch, channels, pixels) input."""
    cg = channels // groups
    block_cg = triton.next_power_of_2(cg)
    block_g = max(1, min(triton.next_power_of_2(groups), max(1, 64 // block_cg)))
    if block_p is None:
        block_p = max(16, TILE // (block_g * block_cg))
    group_blocks = triton.cdiv(groups, block_g)
    if chunks is None:
        chunks = max(1, min(MAX_CHUNKS, triton.cdiv(pixels, block_p),
                            TARGET_PROGRAMS // max(1, batch * group_blocks)))
    chunk = triton.cdiv(triton.cdiv(pixels, chunks), block_p) * block_p
    chunks = triton.cdiv(pixels, chunk)
    return dict(block_p=block_p, block_g=block_g, block_cg=block_cg, group_blocks=group_blocks,
                chunks=chunks, chunk=chunk, block_s=max(2, triton.next_power_of_2(chunks)))


@on_tensor_device
def group_norm_swish(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, num_groups: int, eps: float,
                     swish: bool, *, chunks: int | None = None, block_p: int | None = None) -> torch.Tensor:
    """GroupNorm(num_groups, eps, affine weight/bias) of x, then swish when `swish`.

    x: (N, C, L) or (N, C, H, W) float32/float16/bfloat16 on a CUDA device (or CPU under
    TRITON_INTERPRET=1), any layout (H and W must merge into one stride, e.g. contiguous or
    channels-last; others are made contiguous). weight, bias: (C,) any float dtype.
    Returns a tensor like x (same dtype and layout). Statistics in float32.
    `chunks` / `block_p` override the launch configuration (tests).
    """
    if not _mergeable(x):
        x = x.contiguous()
    n, c = x.shape[:2]
    pixels = x[0, 0].numel() if n and c else 0
    y = torch.empty_like(x)
    if y.numel() == 0:
        return y
    if c * pixels >= 2**31:
        raise ValueError(f"x: one sample has {c * pixels} elements; the kernel indexes a sample with int32 (< 2**31)")
    cfg = launch_config(c, num_groups, pixels, n, chunks=chunks, block_p=block_p)
    means = torch.empty(n * num_groups * cfg["chunks"], dtype=torch.float32, device=x.device)
    m2s = torch.empty_like(means)
    sx = _as_ncp(x)
    sy = _as_ncp(y)
    cg = c // num_groups
    _gn_stats_kernel[(n, cfg["chunks"], cfg["group_blocks"])](
        x, means, m2s, pixels, num_groups, cg, cfg["chunks"], cfg["chunk"], *sx,
        BLOCK_P=cfg["block_p"], BLOCK_G=cfg["block_g"], BLOCK_CG=cfg["block_cg"], num_warps=NUM_WARPS)
    _gn_apply_kernel[(n, triton.cdiv(pixels, cfg["block_p"]), cfg["group_blocks"])](
        x, y, weight, bias, means, m2s, pixels, num_groups, cg, cfg["chunks"], cfg["chunk"], float(eps), *sx, *sy,
        SWISH=bool(swish), BLOCK_P=cfg["block_p"], BLOCK_G=cfg["block_g"], BLOCK_CG=cfg["block_cg"],
        BLOCK_S=cfg["block_s"], num_warps=NUM_WARPS)
    return y


def _specs() -> list[dict]:
    specs = []
    ints = ("P", "G", "CG", "S", "CHUNK")
    for t in ("fp32", "bf16", "fp16"):
        for channels, groups in ((64, 32), (256, 32), (96, 32)):
            cfg = launch_config(channels, groups, 256 * 256, 1)
            stats_sig = {"x_ptr": f"*{t}", "mean_ptr": "*fp32", "m2_ptr": "*fp32"}
            stats_sig.update({k: "i32" for k in ints})
            stats_sig.update({k: "i32" for k in ("sxn", "sxc", "sxp")})
            specs.append(dict(
                fn=_gn_stats_kernel, signature=stats_sig, num_warps=NUM_WARPS,
                constexprs={"BLOCK_P": cfg["block_p"], "BLOCK_G": cfg["block_g"], "BLOCK_CG": cfg["block_cg"]},
                name=f"gn_stats[{t},C{channels},G{groups}]"))
            apply_sig = {"x_ptr": f"*{t}", "y_ptr": f"*{t}", "w_ptr": "*fp32", "b_ptr": "*fp32",
                         "mean_ptr": "*fp32", "m2_ptr": "*fp32"}
            apply_sig.update({k: "i32" for k in ints})
            apply_sig["eps"] = "fp32"
            apply_sig.update({k: "i32" for k in ("sxn", "sxc", "sxp", "syn", "syc", "syp")})
            specs.append(dict(
                fn=_gn_apply_kernel, signature=apply_sig, num_warps=NUM_WARPS,
                constexprs={"SWISH": channels != 96, "BLOCK_P": cfg["block_p"], "BLOCK_G": cfg["block_g"],
                            "BLOCK_CG": cfg["block_cg"], "BLOCK_S": cfg["block_s"]},
                name=f"gn_apply[{t},C{channels},G{groups}]"))
    return specs


# Representative compilations checked in CI for sm_86/sm_90 (tests/test_triton_compile.py).
COMPILE_SPECS = _specs()
