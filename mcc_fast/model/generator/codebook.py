"""Codebooks, their per-scale row allocation, and the nearest-code quantiser.

At inference a codebook is only the key/value set of a cross-attention (the raw rows of the
scale's allocation, identical for every sample). In training each scale also searches its
rows for the nearest code of every token (the VQ loss and, for motion, the reconstruction).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ... import ops
from ..fused import FusedOps
from ..summary import summary_repr
from .config import GeneratorConfig


class Codebook(nn.Module):
    """`size` learned codes of width `dim` (float32 parameter `weight`, (size, dim)).

    Initialised U(-1/size, 1/size) like the official `VectorQuantizer`. `fused`: search it with
    ops.quantize (set by `Model.use_fused_ops`; None: the reference search).
    """

    fused: FusedOps | None = None

    def __init__(self, size: int, dim: int, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.weight = nn.Parameter(torch.empty(size, dim).uniform_(-1.0 / size, 1.0 / size))

    def row_range(self, scale: int) -> tuple[int, int]:
        """Rows [start, stop) that scale index `scale` uses (config.codebook_allocation)."""
        return self.config.code_range(self.weight.shape[0], scale)

    def rows(self, scale: int) -> torch.Tensor:
        """The codes of scale index `scale`, (M, dim) (a view of `weight`)."""
        start, stop = self.row_range(scale)
        return self.weight[start:stop]


@dataclass
class Quantized:
    """Result of a nearest-code search over (B, d, h, w) features.

    quantized: (B, d, h, w) straight-through codes (value of the codes, gradient of z).
    loss: () VQ loss beta * mean((sg(z_q) - z)^2) + mean((z_q - sg(z))^2).
    indices: (B, h, w) int64 chosen rows, indexing the whole codebook.
    """

    __repr__ = summary_repr

    quantized: torch.Tensor
    loss: torch.Tensor
    indices: torch.Tensor


def quantize_nearest(z: torch.Tensor, codebook: Codebook, scale: int, beta: float) -> Quantized:
    """Nearest-code quantisation of `z` (B, d, h, w) over the rows scale `scale` uses.

    Distances are |z|^2 + |e|^2 - 2 z.e in the official order (ties and near-ties resolve
    like the official); argmin picks the lowest row among exact ties. With `codebook.fused`:
    ops.quantize (the same values and gradients; near-ties re-ranked exactly).
    """
    if codebook.fused is not None:
        return _quantize_fused(z, codebook, scale, beta)
    start, _ = codebook.row_range(scale)
    codes = codebook.rows(scale)
    b, d, h, w = z.shape
    z_last = z.permute(0, 2, 3, 1).contiguous()
    flat = z_last.view(-1, d)
    # Distances in float32 (at least) even under autocast: a no-op without mixed precision.
    with torch.autocast(device_type=z.device.type, enabled=False):
        dtype = torch.promote_types(torch.promote_types(flat.dtype, codes.dtype), torch.float32)
        flat_d, codes_d = flat.to(dtype), codes.to(dtype)
        distances = (flat_d**2).sum(dim=1, keepdim=True) + (codes_d**2).sum(1) - 2 * torch.matmul(flat_d, codes_d.t())
    local = torch.argmin(distances, dim=1)
    z_q = codes[local].view(z_last.shape)
    loss = beta * torch.mean((z_q.detach() - z_last) ** 2) + torch.mean((z_q - z_last.detach()) ** 2)
    z_q = z_last + (z_q - z_last).detach()
    return Quantized(
        quantized=z_q.permute(0, 3, 1, 2).contiguous(),
        loss=loss,
        indices=(local + start).view(b, h, w),
    )


def _quantize_fused(z: torch.Tensor, codebook: Codebook, scale: int, beta: float) -> Quantized:
    start, stop = codebook.row_range(scale)
    with torch.autocast(device_type=z.device.type, enabled=False):  # distances in float32, as above
        q = ops.quantize(z.permute(0, 2, 3, 1).float(), codebook.weight, stop - start, start, beta,
                         backend=codebook.fused.backend)
    return Quantized(quantized=q.z_q.permute(0, 3, 1, 2).contiguous(), loss=q.loss, indices=q.indices)
