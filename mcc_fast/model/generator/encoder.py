"""VQGAN encoder of the generator, returning one feature per compensation scale.

Levels are indexed finest first (level 0 at the image resolution). Level ``i`` holds
``res_blocks_per_level`` ResBlocks (each followed by an AttnBlock at the token grid, i.e.
the last level) and, except for the last level, a Downsample. Then a middle block,
GroupNorm and a conv3x3 to the latent (no swish before that conv, as in the official).

Scale ``k`` (resolution ``token_grid * 2**k``) reads:
* the source: the latent (encoder output) for k = 0, else the output of level
  ``levels-1-k`` (before its Downsample) -- official encoder blocks 18 / 8 / 5 / 2;
* the appearance-VQ target (driving image): for k = 0 the output of the *first*
  ResBlock+AttnBlock unit of the last level (official block 11: the official indexes its
  flat block list as if the attention blocks were not there), else the same level output.
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import AttnBlock, Downsample, MiddleBlock, ResBlock, group_norm
from .config import GeneratorConfig


class EncoderLevel(nn.Module):
    """One resolution level: ResBlocks (+ AttnBlocks at the token grid), optional Downsample."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, attention: bool,
                 downsample: bool, groups: int) -> None:
        super().__init__()
        self.res_blocks = nn.ModuleList(
            ResBlock(in_channels if j == 0 else out_channels, out_channels, groups) for j in range(num_blocks))
        self.attn_blocks = nn.ModuleList(AttnBlock(out_channels, groups) for _ in range(num_blocks)) if attention else None
        self.downsample = Downsample(out_channels) if downsample else None

    def unit(self, j: int, x: torch.Tensor) -> torch.Tensor:
        """Apply the j-th ResBlock and its AttnBlock (if any)."""
        x = self.res_blocks[j](x)
        if self.attn_blocks is not None:
            x = self.attn_blocks[j](x)
        return x


class Encoder(nn.Module):
    """Image (B, image_channels, S, S) -> per-scale features (see module docstring)."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        groups = config.norm_groups
        widths = config.level_channels
        self.stem = nn.Conv2d(config.image_channels, config.base_channels, 3, padding=1)
        levels = []
        in_ch = config.base_channels
        for i, out_ch in enumerate(widths):
            last = i == config.num_levels - 1
            levels.append(EncoderLevel(in_ch, out_ch, config.res_blocks_per_level, attention=last,
                                       downsample=not last, groups=groups))
            in_ch = out_ch
        self.levels = nn.ModuleList(levels)
        self.middle = MiddleBlock(in_ch, groups)
        self.norm_out = group_norm(in_ch, groups)
        self.conv_out = nn.Conv2d(in_ch, config.latent_channels, 3, padding=1)

    def _run(self, image: torch.Tensor, appearance_targets: bool) -> list[torch.Tensor]:
        num_levels = self.config.num_levels
        num_scales = len(self.config.scales)
        by_level: dict[int, torch.Tensor] = {}
        x = self.stem(image)
        for i, level in enumerate(self.levels):
            for j in range(len(level.res_blocks)):
                x = level.unit(j, x)
                if appearance_targets and i == num_levels - 1 and j == 0:
                    by_level[i] = x
                    break
            else:
                by_level[i] = x
                if level.downsample is not None:
                    x = level.downsample(x)
        if not appearance_targets:
            x = self.conv_out(self.norm_out(self.middle(x)))
            by_level[num_levels - 1] = x
        return [by_level[num_levels - 1 - k] for k in range(num_scales)]

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Source features per scale, coarse first: [(B, latent_channels, T, T), ...,
        (B, scale_channels[k], T 2**k, T 2**k)] (float, like `image`)."""
        return self._run(image, appearance_targets=False)

    def appearance_targets(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The appearance-VQ targets per scale (training only; stops after the last one)."""
        return self._run(image, appearance_targets=True)
