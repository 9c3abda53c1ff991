"""VQGAN building blocks of the generator: GroupNorm, swish, ResBlock, AttnBlock, resampling.

All tensors are (B, C, H, W) float. GroupNorm uses eps 1e-6 with affine parameters, as the
official VQGAN code does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm(groups, channels, eps=1e-6, affine=True)."""
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


def swish(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(x), written like the official (not F.silu) for bitwise-close parity."""
    return x * torch.sigmoid(x)


class ResBlock(nn.Module):
    """(GroupNorm, swish, conv3x3) x 2 plus a 1x1 shortcut when the width changes.

    (B, in_channels, H, W) -> (B, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        skip = x if self.shortcut is None else self.shortcut(x)
        return h + skip


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a residual, (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.query = nn.Conv2d(channels, channels, 1)
        self.key = nn.Conv2d(channels, channels, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        q, k, v = self.query(h), self.key(h), self.value(h)
        b, c, height, width = q.shape
        q = q.reshape(b, c, height * width).permute(0, 2, 1)  # (B, N, C)
        k = k.reshape(b, c, height * width)  # (B, C, N)
        weights = torch.bmm(q, k) * (int(c) ** -0.5)
        weights = F.softmax(weights, dim=2)  # (B, Nq, Nk)
        v = v.reshape(b, c, height * width)
        h = torch.bmm(v, weights.permute(0, 2, 1)).reshape(b, c, height, width)
        return x + self.proj(h)


class Downsample(nn.Module):
    """Zero-pad right/bottom by 1, then conv3x3 stride 2: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Nearest x2, then conv3x3: (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MiddleBlock(nn.Module):
    """ResBlock, AttnBlock, ResBlock at constant width (the VQGAN "non-local" block)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.res1 = ResBlock(channels, channels, groups)
        self.attn = AttnBlock(channels, groups)
        self.res2 = ResBlock(channels, channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res2(self.attn(self.res1(x)))
