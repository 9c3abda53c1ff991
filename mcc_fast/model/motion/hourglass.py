"""FOMM hourglass (U-Net) with BatchNorm, shared by the keypoint detector and dense motion."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DownBlock(nn.Module):
    """conv3x3 -> BatchNorm -> ReLU -> AvgPool 2x2: (B, Cin, H, W) -> (B, Cout, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), kernel_size=2)


class UpBlock(nn.Module):
    """nearest x2 -> conv3x3 -> BatchNorm -> ReLU: (B, Cin, H, W) -> (B, Cout, 2H, 2W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.relu(self.norm(self.conv(x)))


def _level_channels(block_expansion: int, max_features: int, level: int) -> int:
    """Channels after `level` halvings: min(max_features, block_expansion * 2**level)."""
    return min(max_features, block_expansion * 2**level)


class HourglassEncoder(nn.Module):
    """num_blocks DownBlocks; returns [input, after block 0, ..., after block n-1]."""

    def __init__(self, in_channels: int, block_expansion: int, max_features: int, num_blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            DownBlock(
                in_channels if i == 0 else _level_channels(block_expansion, max_features, i),
                _level_channels(block_expansion, max_features, i + 1),
            )
            for i in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]
        for block in self.blocks:
            features.append(block(features[-1]))
        return features


class HourglassDecoder(nn.Module):
    """num_blocks UpBlocks, deepest first; each output is concatenated with the matching skip."""

    def __init__(self, in_channels: int, block_expansion: int, max_features: int, num_blocks: int) -> None:
        super().__init__()
        blocks = []
        for level in reversed(range(num_blocks)):
            skip_factor = 1 if level == num_blocks - 1 else 2  # deeper levels also carry their skip
            blocks.append(
                UpBlock(
                    skip_factor * _level_channels(block_expansion, max_features, level + 1),
                    _level_channels(block_expansion, max_features, level),
                )
            )
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = block_expansion + in_channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        out = features[-1]
        for block, skip in zip(self.blocks, reversed(features[:-1])):
            out = torch.cat([block(out), skip], dim=1)
        return out


class Hourglass(nn.Module):
    """Encoder-decoder: (B, Cin, H, W) -> (B, block_expansion + Cin, H, W).

    H and W must be divisible by 2**num_blocks.
    """

    def __init__(self, in_channels: int, block_expansion: int, max_features: int, num_blocks: int) -> None:
        super().__init__()
        self.encoder = HourglassEncoder(in_channels, block_expansion, max_features, num_blocks)
        self.decoder = HourglassDecoder(in_channels, block_expansion, max_features, num_blocks)
        self.out_channels = self.decoder.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
