"""Fusion of a compensated feature into the decoder at scales k >= 1.

h = ResBlock(2C -> C)(cat[compensated, x]); x = x + w * (x * scale(h) + shift(h)), with
scale/shift = conv3x3, LeakyReLU(0.2), conv3x3; then x = x + conv3x3(compensated).
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import ResBlock


def _modulation(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.2),
                         nn.Conv2d(channels, channels, 3, padding=1))


class FusionBlock(nn.Module):
    """(compensated (B, C, R, R), decoder x (B, C, R, R), weight w) -> fused x (B, C, R, R)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.merge = ResBlock(2 * channels, channels, groups)
        self.scale = _modulation(channels)
        self.shift = _modulation(channels)
        self.skip = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, compensated: torch.Tensor, x: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
        h = self.merge(torch.cat((compensated, x), dim=1))
        x = x + weight * (x * self.scale(h) + self.shift(h))
        return x + self.skip(compensated)
