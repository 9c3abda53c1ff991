"""The pre-LayerNorm codebook transformer layer shared by motion and appearance compensation.

Sequence-first tokens (N, B, d), N = token_grid**2 in row-major (h * T + w) order:

    t = t + SelfAttn(q = k = LN1(t) + pos, v = LN1(t), key_padding_mask)
    t = t + CrossAttn(q = LN2(t) + pos, k = v = codes)
    t = t + conv3x3(GELU(conv3x3(LN3(t) as a (B, d, T, T) map)))

Position embeddings go on queries and keys only (never on values, never on the codes).
This reference uses `nn.MultiheadAttention` called exactly like the official (sequence-first,
`need_weights` left at its default True, i.e. the explicit softmax path that also averages
the attention weights over heads). Consequence kept on purpose: a sample whose tokens are
all masked gets a softmax over nothing but -inf, so that sample's outputs are NaN.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CodebookTransformerLayer(nn.Module):
    """One layer: masked self-attention, cross-attention to codebook rows, conv feed-forward."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.self_attention = nn.MultiheadAttention(dim, num_heads, dropout=0.0)
        self.cross_attention = nn.MultiheadAttention(dim, num_heads, dropout=0.0)
        self.ffn_in = nn.Conv2d(dim, ffn_dim, 3, padding=1)
        self.ffn_out = nn.Conv2d(ffn_dim, dim, 3, padding=1)
        self.norm_self = nn.LayerNorm(dim)
        self.norm_cross = nn.LayerNorm(dim)
        self.norm_ffn = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, codes: torch.Tensor, grid: int, position: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (N, B, d); codes (M, d) raw codebook rows; grid T with N = T*T;
        position (N, d); key_padding_mask (B, N) bool, True = ignored as a key. -> (N, B, d)."""
        n, b, d = tokens.shape
        pos = position.unsqueeze(1)
        normed = self.norm_self(tokens)
        query = normed + pos
        key = normed + pos
        attended = self.self_attention(query, key, value=normed, key_padding_mask=key_padding_mask)[0]
        tokens = tokens + attended

        normed = self.norm_cross(tokens)
        context = codes.unsqueeze(1).expand(codes.shape[0], b, d)
        attended = self.cross_attention(normed + pos, context, value=context)[0]
        tokens = tokens + attended

        normed = self.norm_ffn(tokens)
        fmap = normed.permute(1, 2, 0).reshape(b, d, grid, grid)
        fmap = self.ffn_out(F.gelu(self.ffn_in(fmap)))
        return tokens + fmap.reshape(b, d, n).permute(2, 0, 1)
