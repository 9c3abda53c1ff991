"""Motion Codebook Compensation: motion tokens attend to the motion codebook.

Per scale k (B = batch, md = motion_dim, T = token grid, F = flow size):

1. query: the scale's source feature warped by the current flow (no occlusion), resized to
   T x T if needed, 1x1 conv -> md + ReLU; concatenated with ReLU(1x1 conv K -> md) of the
   driving heatmaps resized to T x T (align_corners=True); 1x1 conv 2 md -> md.
2. motion tokens: the displacement m = (flow - grid) * (F-1)/2, *detached*, through conv3x3
   2 -> md, Downsample (F -> T), ResBlock; concatenated with the query, 1x1 conv -> md;
   flattened to T*T sequence-first tokens.
3. `motion_layers` codebook transformer layers over the scale's codebook rows.

Training only: the nearest-code search on the step-2 motion embedding (before the query
fusion), and its decoding back to a displacement (Upsample, ResBlock, GroupNorm, conv3x3 -> 2).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..summary import summary_repr
from .blocks import Downsample, ResBlock, Upsample, group_norm
from .codebook import Codebook, Quantized, quantize_nearest
from .config import GeneratorConfig
from .transformer import CodebookTransformerLayer
from .warping import resize_map


class MotionQueryEncoder(nn.Module):
    """Step 1: (warped source feature, driving heatmaps) -> query map (B, md, T, T)."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.grid = config.token_grid
        md = config.motion_dim
        self.source_projections = nn.ModuleList(nn.Conv2d(c, md, 1) for c in config.scale_channels)
        self.heatmap_projection = nn.Conv2d(config.num_keypoints, md, 1)
        self.fuse = nn.Conv2d(2 * md, md, 1)

    def heatmap_features(self, heatmaps: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) driving heatmaps -> (B, md, T, T), shared by every scale of a frame."""
        resized = F.interpolate(heatmaps, size=(self.grid, self.grid), mode="bilinear", align_corners=True)
        # The motion estimator keeps its heatmaps in fp32; a half-precision model convolves in its own dtype.
        return F.relu(self.heatmap_projection(resized.to(self.heatmap_projection.weight.dtype)))

    def forward(self, scale: int, warped_source: torch.Tensor, heatmap_features: torch.Tensor) -> torch.Tensor:
        """warped_source (B, C_k, R, R) -> query (B, md, T, T)."""
        source = F.relu(self.source_projections[scale](resize_map(warped_source, self.grid)))
        return self.fuse(torch.cat((source, heatmap_features), dim=1))


@dataclass
class MotionTokens:
    """Output of the motion transformer at one scale.

    tokens: (B, md, T, T) compensated motion tokens.
    vq: the nearest-code search of the motion embedding (training only, else None).
    """

    __repr__ = summary_repr

    tokens: torch.Tensor
    vq: Quantized | None


class MotionCompensation(nn.Module):
    """Steps 2-3 (plus the training-only search and displacement decoder)."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        md = config.motion_dim
        groups = config.norm_groups
        self.codebook = Codebook(config.motion_codebook_size, md, config)
        self.position_embedding = nn.Parameter(torch.zeros(config.num_tokens, md))
        self.query = MotionQueryEncoder(config)
        self.displacement_embedding = nn.Sequential(
            nn.Conv2d(2, md, 3, padding=1), Downsample(md), ResBlock(md, md, groups))
        self.token_fuse = nn.Conv2d(2 * md, md, 1)
        self.layers = nn.ModuleList(
            CodebookTransformerLayer(md, config.num_heads, md * config.ffn_expansion)
            for _ in range(config.motion_layers))
        self.displacement_decoder = nn.Sequential(
            Upsample(md), ResBlock(md, md, groups), group_norm(md, groups), nn.Conv2d(md, 2, 3, padding=1))

    def forward(self, scale: int, displacement: torch.Tensor, query: torch.Tensor,
                quantize: bool = False) -> MotionTokens:
        """displacement (B, F, F, 2) in flow pixels; query (B, md, T, T) -> MotionTokens."""
        b = displacement.shape[0]
        grid = self.config.token_grid
        md = self.config.motion_dim
        embedded = self.displacement_embedding(displacement.permute(0, 3, 1, 2).detach())
        vq = quantize_nearest(embedded, self.codebook, scale, self.config.beta) if quantize else None
        query = resize_map(query, embedded.shape[-1])
        tokens = self.token_fuse(torch.cat((embedded, query), dim=1))
        tokens = tokens.reshape(b, md, grid * grid).permute(2, 0, 1)
        codes = self.codebook.rows(scale)
        for layer in self.layers:
            tokens = layer(tokens, codes, grid, self.position_embedding)
        return MotionTokens(tokens=tokens.permute(1, 2, 0).reshape(b, md, grid, grid), vq=vq)

    def decode_displacement(self, quantized: torch.Tensor) -> torch.Tensor:
        """Quantised motion embedding (B, md, T, T) -> displacement (B, F, F, 2) in flow pixels."""
        return self.displacement_decoder(quantized).permute(0, 2, 3, 1)
