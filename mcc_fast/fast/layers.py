"""Fast forms of the reference building blocks, reading the reference modules' weights.

Every layer takes and returns feature maps (B, C, H, W) in the runtime's compute dtype and
memory format (channels-last by default); weights are derived tensors (runtime.py), so the
layers stay in step with the reference model. Differences from the reference, all exact up
to floating-point reassociation:

* GroupNorm + swish is one fused op (`mcc_fast.ops.group_norm_swish`), swish as F.silu;
* BatchNorm (eval statistics) is folded into the preceding convolution;
* several convolutions reading the same input are merged into one (more output channels);
* nearest x2 upsampling followed by a 3x3 convolution is computed as four 2x2 convolutions
  of the low-resolution input, one per output phase (2.25x fewer multiply-adds, and the
  upsampled map is never stored);
* the VQGAN spatial attention runs through `scaled_dot_product_attention` on the
  channels-last map viewed as (B, H*W, C) tokens, with q, k, v from one merged projection.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..model.generator.blocks import AttnBlock, Downsample, MiddleBlock, ResBlock, Upsample
from ..model.motion.hourglass import DownBlock, Hourglass, UpBlock
from ..ops.group_norm import SUPPORTED as GROUP_NORM_BACKENDS
from .runtime import Runtime


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval BatchNorm as y = x * scale + shift (float64)."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return scale, bn.bias.double() - bn.running_mean.double() * scale


class Conv(nn.Module):
    """One or more reference nn.Conv2d with the same input, merged along output channels, with an
    optional eval BatchNorm folded in (single conv only). (B, C_in, H, W) -> (B, sum C_out, H', W')."""

    def __init__(self, rt: Runtime, convs: nn.Conv2d | Sequence[nn.Conv2d], bn: nn.BatchNorm2d | None = None) -> None:
        super().__init__()
        convs = [convs] if isinstance(convs, nn.Conv2d) else list(convs)
        first = convs[0]
        for conv in convs[1:]:
            if (conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups, conv.in_channels) != (
                    first.kernel_size, first.stride, first.padding, first.dilation, first.groups, first.in_channels):
                raise ValueError("Conv: merged convolutions must share kernel, stride, padding, groups and input width")
        if bn is not None and len(convs) != 1:
            raise ValueError("Conv: a BatchNorm folds into a single convolution")
        self.stride, self.padding = first.stride, first.padding
        self.dilation, self.groups = first.dilation, first.groups
        self.out_channels = sum(c.out_channels for c in convs)
        # A 1x1 conv on a channels-last map is a GEMM over the (B H W, C) view. Single-threaded
        # CPU torch sends small-batch 1x1 convs to its slow NCHW path (copies), so run the GEMM.
        self.pointwise = (rt.options.channels_last and rt.device.type == "cpu" and torch.get_num_threads() == 1
                          and first.kernel_size == (1, 1) and first.stride == (1, 1)
                          and first.padding == (0, 0) and first.groups == 1)

        def weight() -> torch.Tensor:
            if len(convs) == 1 and bn is None:
                return rt.weight(first.weight)
            w = torch.cat([c.weight for c in convs], dim=0)
            if bn is not None:
                scale, _ = _bn_scale_shift(bn)
                w = (w.double() * scale.view(-1, 1, 1, 1)).to(first.weight.dtype)
            return rt.weight(w)

        def bias() -> torch.Tensor:
            parts = [c.bias if c.bias is not None else c.weight.new_zeros(c.out_channels) for c in convs]
            b = parts[0] if len(parts) == 1 else torch.cat(parts)
            if bn is not None:
                scale, shift = _bn_scale_shift(bn)
                b = (b.double() * scale + shift).to(first.weight.dtype)
            return rt.weight(b)

        rt.derive(self, "weight", weight)
        rt.derive(self, "bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pointwise:
            return F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias).permute(0, 3, 1, 2)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class BlockDiagonalConv(nn.Module):
    """Convolutions over disjoint channel slices of one input, as a single convolution.

    convs[i] reads input channels [sum_{j<i} C_in_j, ...): the merged weight is block-diagonal
    (zeros elsewhere), so the result equals the separate convolutions concatenated. Meant for
    small output heads (the zero blocks cost multiply-adds, not launches).
    """

    def __init__(self, rt: Runtime, convs: Sequence[nn.Conv2d]) -> None:
        super().__init__()
        first = convs[0]
        self.stride, self.padding = first.stride, first.padding

        def weight() -> torch.Tensor:
            c_out = sum(c.out_channels for c in convs)
            c_in = sum(c.in_channels for c in convs)
            w = first.weight.new_zeros(c_out, c_in, *first.kernel_size)
            o = i = 0
            for c in convs:
                w[o:o + c.out_channels, i:i + c.in_channels] = c.weight
                o, i = o + c.out_channels, i + c.in_channels
            return rt.weight(w)

        rt.derive(self, "weight", weight)
        rt.derive(self, "bias", lambda: rt.weight(torch.cat([c.bias for c in convs])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


class UpsampleConv(nn.Module):
    """nearest x2 upsampling then a 3x3/padding-1 conv (optional folded BatchNorm), computed
    on the low-resolution input: (B, C_in, H, W) -> (B, C_out, 2H, 2W).

    Output pixel (2i + a, 2j + b) only sees input rows {i-1, i} (a = 0) or {i, i+1} (a = 1)
    and likewise for columns, so each of the four phases is a 2x2 convolution whose taps
    are sums of the 3x3 taps landing on the same input pixel.
    """

    # which 3x3 taps land on each of the two input rows of a phase: phase a -> [taps of row 0, row 1]
    _TAPS = {0: ((0,), (1, 2)), 1: ((0, 1), (2,))}

    def __init__(self, rt: Runtime, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None) -> None:
        super().__init__()
        if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.stride != (1, 1) or conv.groups != 1:
            raise ValueError("UpsampleConv needs a 3x3, padding 1, stride 1, ungrouped convolution")
        self.memory_format = rt.memory_format
        self.out_channels = conv.out_channels

        def weight() -> torch.Tensor:
            w = conv.weight.double()
            if bn is not None:
                w = w * _bn_scale_shift(bn)[0].view(-1, 1, 1, 1)
            phases = []
            for a in (0, 1):
                for b in (0, 1):
                    rows = [w[:, :, list(t), :].sum(dim=2) for t in self._TAPS[a]]  # 2 x (O, I, 3)
                    taps = torch.stack([torch.stack([r[:, :, list(t)].sum(dim=2) for t in self._TAPS[b]], dim=-1)
                                        for r in rows], dim=-2)  # (O, I, 2, 2)
                    phases.append(taps)
            return rt.weight(torch.cat(phases, dim=0).to(conv.weight.dtype))  # (4 O, I, 2, 2)

        def bias() -> torch.Tensor:
            b = conv.bias if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)
            if bn is not None:
                scale, shift = _bn_scale_shift(bn)
                b = (b.double() * scale + shift).to(conv.weight.dtype)
            return rt.weight(b)

        rt.derive(self, "weight", weight)
        rt.derive(self, "bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        o = self.out_channels
        padded = F.pad(x, (1, 1, 1, 1))
        out = torch.empty(b, o, 2 * h, 2 * w, dtype=x.dtype, device=x.device, memory_format=self.memory_format)
        for index, (pa, pb) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            window = padded[:, :, pa:pa + h + 1, pb:pb + w + 1]
            phase = F.conv2d(window, self.weight[index * o:(index + 1) * o], self.bias)
            out[:, :, pa::2, pb::2] = phase
        return out


class NormSwish(nn.Module):
    """The reference nn.GroupNorm, optionally followed by swish, through the fused op. The op has
    no cuda backend: with backend="cuda" it takes the fastest one it has (triton on a GPU)."""

    def __init__(self, rt: Runtime, norm: nn.GroupNorm, swish: bool = True) -> None:
        super().__init__()
        backend = rt.options.backend if rt.options.backend in GROUP_NORM_BACKENDS else None
        self.groups, self.eps, self.swish, self.backend = norm.num_groups, norm.eps, swish, backend
        rt.derive(self, "weight", lambda: norm.weight.float())
        rt.derive(self, "bias", lambda: norm.bias.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.group_norm_swish(x, self.groups, self.weight, self.bias, self.eps, swish=self.swish,
                                    backend=self.backend)


class FastResBlock(nn.Module):
    """Reference ResBlock: (GroupNorm+swish, conv3x3) x 2 plus the optional 1x1 shortcut."""

    def __init__(self, rt: Runtime, block: ResBlock) -> None:
        super().__init__()
        self.norm1, self.conv1 = NormSwish(rt, block.norm1), Conv(rt, block.conv1)
        self.norm2, self.conv2 = NormSwish(rt, block.norm2), Conv(rt, block.conv2)
        self.shortcut = None if block.shortcut is None else Conv(rt, block.shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(self.norm2(self.conv1(self.norm1(x))))
        return h + (x if self.shortcut is None else self.shortcut(x))


class FastAttnBlock(nn.Module):
    """Reference AttnBlock (single-head spatial self-attention) through SDPA on (B, HW, C) tokens."""

    def __init__(self, rt: Runtime, block: AttnBlock) -> None:
        super().__init__()
        self.norm = NormSwish(rt, block.norm, swish=False)
        convs = (block.query, block.key, block.value)
        rt.derive(self, "w_qkv", lambda: rt.weight(torch.cat([c.weight.flatten(1) for c in convs])))
        rt.derive(self, "b_qkv", lambda: rt.weight(torch.cat([c.bias for c in convs])))
        rt.derive(self, "w_proj", lambda: rt.weight(block.proj.weight.flatten(1)))
        rt.derive(self, "b_proj", lambda: rt.weight(block.proj.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(b, 1, h * w, c)  # a view when channels-last
        q, k, v = F.linear(tokens, self.w_qkv, self.b_qkv).chunk(3, dim=-1)
        attended = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(C), as the reference
        out = F.linear(attended, self.w_proj, self.b_proj).view(b, h, w, c).permute(0, 3, 1, 2)
        return x + out


class FastDownsample(nn.Module):
    """Reference Downsample: zero-pad right/bottom by 1, conv3x3 stride 2."""

    def __init__(self, rt: Runtime, block: Downsample) -> None:
        super().__init__()
        self.conv = Conv(rt, block.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class FastUpsample(nn.Module):
    """Reference Upsample (nearest x2, conv3x3) as an UpsampleConv."""

    def __init__(self, rt: Runtime, block: Upsample) -> None:
        super().__init__()
        self.conv = UpsampleConv(rt, block.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class FastMiddleBlock(nn.Module):
    """Reference MiddleBlock: ResBlock, AttnBlock, ResBlock."""

    def __init__(self, rt: Runtime, block: MiddleBlock) -> None:
        super().__init__()
        self.res1, self.attn, self.res2 = FastResBlock(rt, block.res1), FastAttnBlock(rt, block.attn), \
            FastResBlock(rt, block.res2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res2(self.attn(self.res1(x)))


class FastHourglass(nn.Module):
    """Reference FOMM Hourglass (eval BatchNorm folded into the convs): (B, Cin, H, W) -> (B, Cout, H, W)."""

    def __init__(self, rt: Runtime, hourglass: Hourglass) -> None:
        super().__init__()
        self.down = nn.ModuleList(Conv(rt, blk.conv, blk.norm) for blk in hourglass.encoder.blocks)
        self.up = nn.ModuleList(UpsampleConv(rt, blk.conv, blk.norm) for blk in hourglass.decoder.blocks)
        for blk in list(hourglass.encoder.blocks) + list(hourglass.decoder.blocks):
            if not isinstance(blk, (DownBlock, UpBlock)):  # pragma: no cover - structural guard
                raise TypeError(f"FastHourglass: unexpected block {type(blk).__name__}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [x]
        for conv in self.down:
            skips.append(F.avg_pool2d(F.relu(conv(skips[-1])), kernel_size=2))
        out = skips.pop()
        for conv in self.up:
            out = torch.cat([F.relu(conv(out)), skips.pop()], dim=1)
        return out
