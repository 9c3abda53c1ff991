"""Fast VQGAN encoder (source features, once per source) and decoder with the fusion blocks.

Same functions as mcc_fast.model.generator.{encoder, decoder, fusion}, on channels-last
maps in the compute dtype. Fusion: the first convs of the scale and shift branches read the
same h, so they are one conv (2C outputs); their second convs are one grouped conv (groups 2).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model.generator.decoder import Decoder
from ..model.generator.encoder import Encoder
from ..model.generator.fusion import FusionBlock
from .layers import Conv, FastAttnBlock, FastDownsample, FastMiddleBlock, FastResBlock, FastUpsample, NormSwish
from .runtime import Runtime


class _Level(nn.Module):
    """ResBlocks (+ AttnBlocks) of one encoder/decoder level and its resampling block."""

    def __init__(self, rt: Runtime, level, resample: type) -> None:
        super().__init__()
        self.res_blocks = nn.ModuleList(FastResBlock(rt, b) for b in level.res_blocks)
        self.attn_blocks = None if level.attn_blocks is None else nn.ModuleList(
            FastAttnBlock(rt, b) for b in level.attn_blocks)
        block = getattr(level, "downsample", None) if resample is FastDownsample else getattr(level, "upsample", None)
        self.resample = None if block is None else resample(rt, block)

    def unit(self, j: int, x: torch.Tensor) -> torch.Tensor:
        x = self.res_blocks[j](x)
        return x if self.attn_blocks is None else self.attn_blocks[j](x)


class FastEncoder(nn.Module):
    """Source image (B, 3, S, S) -> per-scale features, coarse first (like Encoder.forward)."""

    def __init__(self, rt: Runtime, encoder: Encoder) -> None:
        super().__init__()
        self.rt = rt
        self.num_levels, self.num_scales = encoder.config.num_levels, len(encoder.config.scales)
        self.stem = Conv(rt, encoder.stem)
        self.levels = nn.ModuleList(_Level(rt, level, FastDownsample) for level in encoder.levels)
        self.middle = FastMiddleBlock(rt, encoder.middle)
        self.norm_out = NormSwish(rt, encoder.norm_out, swish=False)
        self.conv_out = Conv(rt, encoder.conv_out)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(self.rt.feature(image))
        by_level = []
        for level in self.levels:
            for j in range(len(level.res_blocks)):
                x = level.unit(j, x)
            by_level.append(x)
            if level.resample is not None:
                x = level.resample(x)
        by_level[-1] = self.conv_out(self.norm_out(self.middle(x)))
        return [by_level[self.num_levels - 1 - k] for k in range(self.num_scales)]


class FastFusion(nn.Module):
    """Reference FusionBlock: (compensated, decoder x, weight) -> fused x."""

    def __init__(self, rt: Runtime, fusion: FusionBlock) -> None:
        super().__init__()
        self.merge = FastResBlock(rt, fusion.merge)
        self.first = Conv(rt, [fusion.scale[0], fusion.shift[0]])
        self.slope = fusion.scale[1].negative_slope
        second = (fusion.scale[2], fusion.shift[2])
        rt.derive(self, "w_second", lambda: rt.weight(torch.cat([c.weight for c in second])))
        rt.derive(self, "b_second", lambda: rt.weight(torch.cat([c.bias for c in second])))
        self.skip = Conv(rt, fusion.skip)

    def forward(self, compensated: torch.Tensor, x: torch.Tensor, weight: float) -> torch.Tensor:
        h = self.merge(torch.cat((compensated, x), dim=1))
        a = F.leaky_relu(self.first(h), self.slope)
        scale, shift = F.conv2d(a, self.w_second, self.b_second, padding=1, groups=2).chunk(2, dim=1)
        modulated = torch.addcmul(shift, x, scale)
        x = x + modulated if weight == 1.0 else x + weight * modulated
        return x + self.skip(compensated)


class FastDecoder(nn.Module):
    """Compensated latent (B, latent, T, T) -> frame (B, 3, S, S) in the compute dtype, fusing
    compensated[k] after the first ResBlock of level k >= 1 (like Decoder with a fuse hook)."""

    def __init__(self, rt: Runtime, decoder: Decoder, fusions: nn.ModuleDict, fusion_weight: float) -> None:
        super().__init__()
        self.stem = Conv(rt, decoder.stem)
        self.middle = FastMiddleBlock(rt, decoder.middle)
        self.levels = nn.ModuleList(_Level(rt, level, FastUpsample) for level in decoder.levels)
        self.fusions = nn.ModuleDict({k: FastFusion(rt, f) for k, f in fusions.items()})
        self.fusion_weight = float(fusion_weight)
        self.norm_out = NormSwish(rt, decoder.norm_out, swish=False)
        self.conv_out = Conv(rt, decoder.conv_out)

    def forward(self, compensated: list[torch.Tensor]) -> torch.Tensor:
        x = self.middle(self.stem(compensated[0]))
        for k, level in enumerate(self.levels):
            for j in range(len(level.res_blocks)):
                x = level.res_blocks[j](x)
                if j == 0 and 1 <= k < len(compensated):
                    x = self.fusions[str(k)](compensated[k], x, self.fusion_weight)
                if level.attn_blocks is not None:
                    x = level.attn_blocks[j](x)
            if level.resample is not None:
                x = level.resample(x)
        return self.conv_out(self.norm_out(x))
