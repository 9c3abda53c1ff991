"""VQGAN decoder ("generator" in the official code) with fusion hooks.

conv3x3 stem, middle block (Res, Attn, Res), then one level per resolution, coarse first
(level k at ``token_grid * 2**k``): ``res_blocks_per_level`` ResBlocks (each followed by an
AttnBlock at the token grid, k = 0) and, except for the finest level, an Upsample; then
GroupNorm and conv3x3 -> image channels (no swish, no output activation).

The compensated features of scales k >= 1 are fused right after the first ResBlock of level
k (official decoder blocks 9, 12, 15).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .blocks import AttnBlock, MiddleBlock, ResBlock, Upsample, group_norm
from .config import GeneratorConfig

FuseHook = Callable[[int, torch.Tensor], torch.Tensor]


class DecoderLevel(nn.Module):
    """One resolution level: ResBlocks (+ AttnBlocks at the token grid), optional Upsample."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, attention: bool,
                 upsample: bool, groups: int) -> None:
        super().__init__()
        self.res_blocks = nn.ModuleList(
            ResBlock(in_channels if j == 0 else out_channels, out_channels, groups) for j in range(num_blocks))
        self.attn_blocks = nn.ModuleList(AttnBlock(out_channels, groups) for _ in range(num_blocks)) if attention else None
        self.upsample = Upsample(out_channels) if upsample else None


class Decoder(nn.Module):
    """Latent (B, latent_channels, T, T) -> image (B, image_channels, S, S)."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        groups = config.norm_groups
        latent = config.latent_channels
        self.stem = nn.Conv2d(latent, latent, 3, padding=1)
        self.middle = MiddleBlock(latent, groups)
        levels = []
        in_ch = latent
        for k in range(config.num_levels):
            out_ch = config.level_channels[config.num_levels - 1 - k]
            levels.append(DecoderLevel(in_ch, out_ch, config.res_blocks_per_level, attention=k == 0,
                                       upsample=k != config.num_levels - 1, groups=groups))
            in_ch = out_ch
        self.levels = nn.ModuleList(levels)
        self.norm_out = group_norm(in_ch, groups)
        self.conv_out = nn.Conv2d(in_ch, config.image_channels, 3, padding=1)

    def forward(self, latent: torch.Tensor, fuse: FuseHook | None = None) -> torch.Tensor:
        """Decode; `fuse(k, x)` (if given) replaces x after the first ResBlock of level k >= 1."""
        x = self.middle(self.stem(latent))
        for k, level in enumerate(self.levels):
            for j, res_block in enumerate(level.res_blocks):
                x = res_block(x)
                if j == 0 and k >= 1 and fuse is not None:
                    x = fuse(k, x)
                if level.attn_blocks is not None:
                    x = level.attn_blocks[j](x)
            if level.upsample is not None:
                x = level.upsample(x)
        return self.conv_out(self.norm_out(x))
