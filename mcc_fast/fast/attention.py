"""The codebook transformer layer, batch-first, through scaled_dot_product_attention.

Reads a reference `CodebookTransformerLayer` (sequence-first nn.MultiheadAttention) and
computes the same function on batch-first tokens (B, N, d), N = T*T in row-major order, so
that the tokens are a free view of a channels-last (B, d, T, T) map:

    t = t + SelfAttn(q = k = LN1(t) + pos, v = LN1(t), key mask)
    t = t + CrossAttn(q = LN2(t) + pos, k = v = codes of the scale)
    t = t + conv3x3(GELU(conv3x3(LN3(t))))

Derived tensors (recomputed from the reference weights by Runtime.refresh):
* the q/k/v in-projection as one (3 H hp, d) matrix, and the position embedding's share of
  the projections, pos @ W^T + b, as a per-token bias (N, 3 H hp): position embeddings go on
  q and k only, never on v (v gets only its bias);
* the cross-attention keys and values of *all* codebook rows, projected once: (1, H, M, hp)
  each; a scale's rows are a contiguous range, so each scale uses a view;
* with `pad_head_dim` hp > hd, every head's q, k and v get zero columns (zero weight rows and
  zero bias), which changes no dot product; the out-projection gets matching zero columns;
  the softmax scale stays 1/sqrt(hd).

Cross-attention keys and values are the same for every sample and nothing is masked there,
so the batch is folded into the query sequence: one (1, H, B N, hp) attention call.

All-masked samples: the reference (nn.MultiheadAttention) returns NaN for a sample whose
tokens are all masked as keys. Here such a sample's mask is dropped: it attends to all of
its tokens (as the other layers do), so its output is finite. Samples with at least one
unmasked token are unaffected.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..model.generator.codebook import Codebook
from ..model.generator.transformer import CodebookTransformerLayer
from .layers import Conv
from .runtime import Runtime


def keep_mask(ignored: torch.Tensor) -> torch.Tensor:
    """(B, N) bool, True = ignored as a key -> SDPA mask (B, 1, 1, N), True = attended.

    A sample whose tokens are all ignored attends to all of them instead (no NaN).
    """
    keep = ~ignored | ignored.all(dim=1, keepdim=True)
    return keep[:, None, None, :]


def _head_rows(w: torch.Tensor, heads: int, head_dim: int, padded: int) -> torch.Tensor:
    """(H hd, ...) projection rows -> (H hp, ...) with zero rows padding each head."""
    if padded == head_dim:
        return w
    per_head = w.reshape(heads, head_dim, *w.shape[1:])
    pad = per_head.new_zeros(heads, padded - head_dim, *w.shape[1:])
    return torch.cat([per_head, pad], dim=1).reshape(heads * padded, *w.shape[1:])


class FastCodebookLayer(nn.Module):
    """Fast form of one reference CodebookTransformerLayer (see module docstring).

    forward(tokens (B, N, d), scale k, ignored (B, N) bool or None) -> (B, N, d), tokens in
    the compute dtype; N = grid * grid.
    """

    def __init__(self, rt: Runtime, layer: CodebookTransformerLayer, position: Callable[[], torch.Tensor],
                 codebook: Codebook, grid: int) -> None:
        """position: returns the (N, d) position embedding, read at every refresh (a replaced
        Parameter is followed, so it must not be captured)."""
        super().__init__()
        d = layer.dim
        heads = layer.self_attention.num_heads
        hd = d // heads
        hp = max(hd, rt.options.pad_head_dim or hd)
        self.dim, self.heads, self.head_dim, self.padded, self.grid = d, heads, hd, hp, grid
        self.scale = hd ** -0.5
        self.row_ranges = [codebook.row_range(k) for k in range(len(codebook.config.scales))]
        sa, ca = layer.self_attention, layer.cross_attention

        def rows(w: torch.Tensor) -> torch.Tensor:
            return _head_rows(w, heads, hd, hp)

        def columns(w: torch.Tensor) -> torch.Tensor:  # out-projection (d, H hd) -> (d, H hp)
            return _head_rows(w.t(), heads, hd, hp).t()

        def self_in_weight() -> torch.Tensor:
            wq, wk, wv = sa.in_proj_weight.chunk(3)
            return rt.weight(torch.cat([rows(wq), rows(wk), rows(wv)]))

        def self_in_bias() -> torch.Tensor:  # (N, 3 H hp): pos on q and k, v only its bias
            wq, wk, _ = sa.in_proj_weight.chunk(3)
            bq, bk, bv = sa.in_proj_bias.chunk(3)
            pos = position().float()
            q = rows((pos @ wq.float().t() + bq.float()).t())  # (H hp, N)
            k = rows((pos @ wk.float().t() + bk.float()).t())
            v = rows(bv.float()).unsqueeze(1).expand(heads * hp, pos.shape[0])
            return rt.weight(torch.cat([q, k, v]).t().contiguous())

        def cross_q_weight() -> torch.Tensor:
            return rt.weight(rows(ca.in_proj_weight.chunk(3)[0]))

        def cross_q_bias() -> torch.Tensor:  # (N, H hp)
            wq = ca.in_proj_weight.chunk(3)[0].float()
            bq = ca.in_proj_bias.chunk(3)[0].float()
            return rt.weight(rows((position().float() @ wq.t() + bq).t()).t().contiguous())

        def codes(index: int):  # keys (index 1) / values (index 2) of every codebook row: (1, H, M, hp)
            def compute() -> torch.Tensor:
                w = ca.in_proj_weight.chunk(3)[index].float()
                b = ca.in_proj_bias.chunk(3)[index].float()
                projected = codebook.weight.float() @ w.t() + b  # (M, d)
                m = projected.shape[0]
                per_head = projected.view(m, heads, hd).transpose(0, 1)  # (H, M, hd)
                if hp > hd:
                    per_head = torch.cat([per_head, per_head.new_zeros(heads, m, hp - hd)], dim=-1)
                return per_head.unsqueeze(0).to(rt.dtype).contiguous()
            return compute

        rt.derive(self, "w_self_in", self_in_weight)
        rt.derive(self, "b_self_in", self_in_bias)
        rt.derive(self, "w_self_out", lambda: rt.weight(columns(sa.out_proj.weight)))
        rt.derive(self, "b_self_out", lambda: rt.weight(sa.out_proj.bias))
        rt.derive(self, "w_cross_q", cross_q_weight)
        rt.derive(self, "b_cross_q", cross_q_bias)
        rt.derive(self, "code_keys", codes(1))
        rt.derive(self, "code_values", codes(2))
        rt.derive(self, "w_cross_out", lambda: rt.weight(columns(ca.out_proj.weight)))
        rt.derive(self, "b_cross_out", lambda: rt.weight(ca.out_proj.bias))
        for name in ("norm_self", "norm_cross", "norm_ffn"):
            norm = getattr(layer, name)
            rt.derive(self, f"{name}_weight", lambda norm=norm: rt.weight(norm.weight))
            rt.derive(self, f"{name}_bias", lambda norm=norm: rt.weight(norm.bias))
        self.eps = (layer.norm_self.eps, layer.norm_cross.eps, layer.norm_ffn.eps)
        self.ffn_in = Conv(rt, layer.ffn_in)
        self.ffn_out = Conv(rt, layer.ffn_out)

    def forward(self, tokens: torch.Tensor, scale: int, ignored: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = tokens.shape
        h, hp = self.heads, self.padded

        # self-attention
        x = F.layer_norm(tokens, (d,), self.norm_self_weight, self.norm_self_bias, self.eps[0])
        qkv = (F.linear(x, self.w_self_in) + self.b_self_in).view(b, n, 3, h, hp)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, hp), strided views
        mask = None if ignored is None else keep_mask(ignored)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        attended = attended.transpose(1, 2).reshape(b, n, h * hp)
        tokens = tokens + F.linear(attended, self.w_self_out, self.b_self_out)

        # cross-attention to the scale's codebook rows (batch folded into the queries)
        x = F.layer_norm(tokens, (d,), self.norm_cross_weight, self.norm_cross_bias, self.eps[1])
        q = (F.linear(x, self.w_cross_q) + self.b_cross_q).view(b * n, h, hp).transpose(0, 1).unsqueeze(0)
        start, stop = self.row_ranges[scale]
        attended = F.scaled_dot_product_attention(q, self.code_keys[:, :, start:stop],
                                                  self.code_values[:, :, start:stop], scale=self.scale)
        attended = attended.squeeze(0).transpose(0, 1).reshape(b, n, h * hp)
        tokens = tokens + F.linear(attended, self.w_cross_out, self.b_cross_out)

        # feed-forward on the (B, d, T, T) map (a channels-last view of the tokens)
        x = F.layer_norm(tokens, (d,), self.norm_ffn_weight, self.norm_ffn_bias, self.eps[2])
        fmap = x.view(b, self.grid, self.grid, d).permute(0, 3, 1, 2)
        fmap = self.ffn_out(F.gelu(self.ffn_in(fmap)))
        return tokens + fmap.permute(0, 2, 3, 1).reshape(b, n, d)
