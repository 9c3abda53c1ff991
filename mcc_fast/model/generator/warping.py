"""Flow-grid helpers of the generator: identity grid, resizes, warp, occlusion.

A flow is a `grid_sample` grid (B, H, W, 2) in [-1, 1], (x, y) order. Every resize and warp
inside the generator uses bilinear with align_corners=True (zeros padding for the warp), as
the official code does; resizes happen only when the sizes differ.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ... import ops
from ..fused import FusedOps


def identity_grid(size: int, device: torch.device | None = None) -> torch.Tensor:
    """(1, size, size, 2) float32 identity flow: [..., 0] = linspace(-1, 1) over width, [..., 1] over height."""
    line = torch.linspace(-1.0, 1.0, size).to(device)  # built on CPU like the official
    x = line.view(1, size).expand(size, size)
    y = line.view(size, 1).expand(size, size)
    return torch.stack((x, y), dim=-1).unsqueeze(0)


def resize_map(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear align_corners=True resize of (B, C, h, w) to (B, C, size, size); no-op if equal."""
    if x.shape[-2] == size and x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=True)


def resize_flow(flow: torch.Tensor, size: int) -> torch.Tensor:
    """(B, h, w, 2) -> (B, size, size, 2), bilinear align_corners=True; no-op if equal."""
    if flow.shape[1] == size and flow.shape[2] == size:
        return flow
    resized = F.interpolate(flow.permute(0, 3, 1, 2), size=(size, size), mode="bilinear", align_corners=True)
    return resized.permute(0, 2, 3, 1)


def warp(feature: torch.Tensor, flow: torch.Tensor, fused: FusedOps | None = None) -> torch.Tensor:
    """Sample `feature` (B, C, H, W) at `flow` resized to H x W: bilinear, zeros, align_corners=True."""
    if fused is not None:
        return ops.warp(feature, flow.float(), align_corners=True, backend=fused.backend)
    grid = resize_flow(flow, feature.shape[-1]).to(feature.dtype)  # no-op in fp32 (half models sample in their dtype)
    return F.grid_sample(_sampleable(feature), grid, align_corners=True)


def _sampleable(feature: torch.Tensor) -> torch.Tensor:
    """`feature`, made contiguous when it is a half-precision CPU tensor: CPU grid_sample gives
    NaN on some channels-last (or expanded channels-last) bf16/fp16 inputs (torch 2.13); fp32
    and CUDA tensors are passed through untouched."""
    if feature.device.type == "cpu" and feature.dtype in (torch.float16, torch.bfloat16):
        return feature.contiguous()
    return feature


def warp_occluded(feature: torch.Tensor, flow: torch.Tensor, occlusion: torch.Tensor,
                  fused: FusedOps | None = None) -> torch.Tensor:
    """occlude(warp(feature, flow), occlusion); fused: one kernel."""
    if fused is not None:
        return ops.warp(feature, flow.float(), occlusion.float(), align_corners=True, backend=fused.backend)
    return occlude(warp(feature, flow), occlusion)


def occlude(feature: torch.Tensor, occlusion: torch.Tensor) -> torch.Tensor:
    """feature (B, C, H, W) x occlusion (B, 1, h, w) resized to H x W (align_corners=True)."""
    if occlusion.shape[-2:] != feature.shape[-2:]:
        occlusion = F.interpolate(occlusion, size=feature.shape[-2:], mode="bilinear", align_corners=True)
    return feature * occlusion.to(feature.dtype)


def out_of_frame_tokens(flow: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, grid*grid) bool: True where `flow` (B, h, w, 2), resized to grid x grid (bilinear,
    align_corners=True, always called like the official), leaves [-1, 1] in x or y."""
    b = flow.shape[0]
    small = F.interpolate(flow.permute(0, 3, 1, 2), size=(grid, grid), mode="bilinear", align_corners=True)
    small = small.reshape(b, 2, grid * grid)
    outside = (small > 1) | (small < -1)
    return outside[:, 0, :] | outside[:, 1, :]
