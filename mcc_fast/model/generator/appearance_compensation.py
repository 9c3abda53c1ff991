"""Appearance Codebook Compensation: warped feature tokens attend to the appearance codebook.

Per scale k (resolution R = T * 2**k, patch p = 2**k, ad = appearance_dim):
tokenise the occluded, warped source feature (B, C_k, R, R) into T*T tokens of width ad
(p = 1: 1x1 conv; p > 1: each p x p patch flattened in (p1, p2, c) order, then a linear
layer), run `appearance_layers` codebook transformer layers over the scale's codebook rows
(the first layer's self-attention ignores the out-of-frame tokens as keys, the others attend
to all), and un-tokenise back to (B, C_k, R, R) (the mirror image of the tokeniser).

Training only: the nearest-code search of the tokenised driving-image features.
"""
from __future__ import annotations

import torch
from torch import nn

from .codebook import Codebook, Quantized, quantize_nearest
from .config import GeneratorConfig
from .transformer import CodebookTransformerLayer


class PatchTokenizer(nn.Module):
    """(B, C, T p, T p) -> token map (B, d, T, T)."""

    def __init__(self, channels: int, dim: int, patch: int, grid: int) -> None:
        super().__init__()
        self.patch, self.grid, self.dim = patch, grid, dim
        self.proj = nn.Conv2d(channels, dim, 1) if patch == 1 else nn.Linear(channels * patch * patch, dim)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        if self.patch == 1:
            return self.proj(feature)
        b, c = feature.shape[:2]
        g, p = self.grid, self.patch
        patches = feature.reshape(b, c, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(b, g * g, p * p * c)
        return self.proj(patches).permute(0, 2, 1).reshape(b, self.dim, g, g)


class PatchUntokenizer(nn.Module):
    """Sequence-first tokens (T*T, B, d) -> (B, C, T p, T p)."""

    def __init__(self, channels: int, dim: int, patch: int, grid: int) -> None:
        super().__init__()
        self.patch, self.grid, self.dim, self.channels = patch, grid, dim, channels
        self.proj = nn.Conv2d(dim, channels, 1) if patch == 1 else nn.Linear(dim, channels * patch * patch)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b = tokens.shape[1]
        g, p, c = self.grid, self.patch, self.channels
        if p == 1:
            return self.proj(tokens.permute(1, 2, 0).reshape(b, self.dim, g, g))
        patches = self.proj(tokens.permute(1, 0, 2))  # (B, T*T, p*p*C)
        return patches.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, g * p, g * p)


class AppearanceCompensation(nn.Module):
    """Per-scale tokenisers, the appearance codebook transformer and un-tokenisers."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        ad, grid = config.appearance_dim, config.token_grid
        self.codebook = Codebook(config.appearance_codebook_size, ad, config)
        self.position_embedding = nn.Parameter(torch.zeros(config.num_tokens, ad))
        self.tokenizers = nn.ModuleList(
            PatchTokenizer(c, ad, config.patch_size(k), grid) for k, c in enumerate(config.scale_channels))
        self.untokenizers = nn.ModuleList(
            PatchUntokenizer(c, ad, config.patch_size(k), grid) for k, c in enumerate(config.scale_channels))
        self.layers = nn.ModuleList(
            CodebookTransformerLayer(ad, config.num_heads, ad * config.ffn_expansion)
            for _ in range(config.appearance_layers))

    def forward(self, scale: int, feature: torch.Tensor, ignored_tokens: torch.Tensor) -> torch.Tensor:
        """feature (B, C_k, R, R), ignored_tokens (B, T*T) bool -> compensated (B, C_k, R, R)."""
        b = feature.shape[0]
        grid, ad = self.config.token_grid, self.config.appearance_dim
        tokens = self.tokenizers[scale](feature).reshape(b, ad, grid * grid).permute(2, 0, 1)
        codes = self.codebook.rows(scale)
        for i, layer in enumerate(self.layers):
            mask = ignored_tokens if i == 0 else None
            tokens = layer(tokens, codes, grid, self.position_embedding, key_padding_mask=mask)
        return self.untokenizers[scale](tokens)

    def quantize_target(self, scale: int, target: torch.Tensor) -> Quantized:
        """Training: tokenise a driving-image feature (B, C_k, R, R) and search its nearest codes."""
        return quantize_nearest(self.tokenizers[scale](target), self.codebook, scale, self.config.beta)
