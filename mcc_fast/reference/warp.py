"""Plain-PyTorch reference for the warping family (the oracle for the kernels).

`grid_sample` is `torch.nn.functional.grid_sample` computed in float32 (float64 when an
input is float64) and cast back to the input's dtype, so half-precision features with
float32 grids work and the oracle keeps full precision. `warp` is the resize + sample +
multiply chain the MCC generator runs; `warp_many` is dense motion's K+1 deformed sources.
All three are differentiable through autograd.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 when any tensor is float64, else float32."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def grid_sample(x: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros",
                align_corners: bool = False) -> torch.Tensor:
    """F.grid_sample in float32/float64. x (N, C, H, W); grid (N, Ho, Wo, 2) -> (N, C, Ho, Wo), x.dtype."""
    ct = compute_dtype(x, grid)
    out = F.grid_sample(x.to(ct), grid.to(ct), mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    return out.to(x.dtype)


def resize(t: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    """Bilinear resize of (B, C, h, w) to size; the identity (no op at all) when already that size."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return F.interpolate(t, size=size, mode="bilinear", align_corners=align_corners)


def resize_flow(flow: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    """(B, h, w, 2) flow resized bilinearly to (B, H, W, 2)."""
    return resize(flow.permute(0, 3, 1, 2), size, align_corners).permute(0, 2, 3, 1)


def warp(x: torch.Tensor, flow: torch.Tensor, occlusion: torch.Tensor | None = None,
         align_corners: bool = True) -> torch.Tensor:
    """The MCC generator's warp chain.

    x (B, C, H, W); flow (B, h, w, 2) resized to (H, W); occlusion (B, 1, h', w') resized to
    (H, W) and multiplied in. Bilinear sampling with zeros padding; every resize and the
    sampling use `align_corners`. Returns (B, C, H, W) in x.dtype (computed in float32).
    """
    ct = compute_dtype(x, flow, occlusion)
    size = (x.shape[-2], x.shape[-1])
    grid = resize_flow(flow.to(ct), size, align_corners)
    out = F.grid_sample(x.to(ct), grid, mode="bilinear", padding_mode="zeros", align_corners=align_corners)
    if occlusion is not None:
        out = out * resize(occlusion.to(ct), size, align_corners)
    return out.to(x.dtype)


def warp_many(x: torch.Tensor, flows: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """One source sampled by M flows (dense motion's deformed sources).

    x (B, C, H, W); flows (B, M, h, w, 2) -> (B, M, C, h, w) in x.dtype; bilinear, zeros padding.
    """
    b, m, h, w, _ = flows.shape
    c = x.shape[1]
    ct = compute_dtype(x, flows)
    xs = x.to(ct).unsqueeze(1).expand(b, m, c, x.shape[2], x.shape[3]).reshape(b * m, c, x.shape[2], x.shape[3])
    out = F.grid_sample(xs, flows.to(ct).reshape(b * m, h, w, 2), mode="bilinear", padding_mode="zeros",
                        align_corners=align_corners)
    return out.reshape(b, m, c, h, w).to(x.dtype)
