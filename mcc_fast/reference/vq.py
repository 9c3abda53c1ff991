"""Plain-PyTorch reference for the nearest-code search and vector quantisation.

The oracle for the kernels. Follows the official `VectorQuantizer` (CodeFormer/VQGAN, used
by MCC): distance = |z|^2 + |e|^2 - 2 z.e over the searched rows, argmin (ties to the
lowest index), the chosen rows gathered (the one-hot matmul's values), loss = beta * mean((sg(e) - z)^2) +
mean((e - sg(z))^2), z_q = z + sg(e - z), perplexity = exp(-sum p log(p + 1e-10)) with p
the code frequencies. On top of the official formula, the package-wide rules for
non-finite input (mcc_fast.ops.nearest_code): rows of z with NaN/Inf get index -1 and
distance NaN (their codes are NaN); codebook rows with NaN/Inf are never chosen; a row
whose every distance overflows float32 gets -1 too.

Reported distances are the direct sum (z - e)^2 of the chosen row (never negative).
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class VQStats(NamedTuple):
    """What training logs about one quantisation.

    perplexity: () float32, exp(-sum p log(p + 1e-10)) with p = counts / number of rows.
    usage: () float32, fraction of the searched codes chosen at least once.
    counts: (num_codes,) int64, rows assigned to each searched code (code start + i).
    sq_distances: (...) float32, squared distance of each row to its code (NaN: no code).
    """

    perplexity: torch.Tensor
    usage: torch.Tensor
    counts: torch.Tensor
    sq_distances: torch.Tensor


class Quantized(NamedTuple):
    """Result of `mcc_fast.ops.quantize`: `z_q, indices, loss, stats = quantize(...)`.

    z_q: (..., d) straight-through codes z + sg(e - z) (value of the code, gradient of z).
    indices: (...) int64 rows of the whole codebook (-1 where z was not finite).
    loss: () beta * mean((sg(e) - z)^2) + mean((e - sg(z))^2), float32 (float64 input:
    float64); NaN when any row of z is not finite.
    stats: VQStats.
    """

    z_q: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    stats: VQStats


def _acc_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def nearest_code(z: torch.Tensor, codebook: torch.Tensor, start: int, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest rows of codebook[start:start+num] for each row of z.

    z: (N, d) float; codebook: (K, d) float. Returns int64 indices (N,) into the whole
    codebook (-1 for rows of z that are not finite) and float32 squared distances (N,)
    (NaN for those rows). Distances accumulate in float32 (float64 stays float64).
    """
    acc = _acc_dtype(z, codebook)
    zf = z.to(acc)
    ef = codebook[start:start + num].to(acc)
    dist = (zf * zf).sum(1, keepdim=True) + (ef * ef).sum(1)[None, :] - 2.0 * (zf @ ef.t())
    code_ok = torch.isfinite(ef).all(1)
    dist = dist.masked_fill(~code_ok[None, :] | torch.isnan(dist), float("inf"))
    best, idx = torch.min(dist, dim=1)
    row_ok = torch.isfinite(zf).all(1) & (best < float("inf"))
    chosen = ef[idx]
    sq = ((zf - chosen) ** 2).sum(1)
    idx = torch.where(row_ok, idx + start, torch.full_like(idx, -1))
    sq = torch.where(row_ok, sq, torch.full_like(sq, float("nan")))
    return idx, sq.to(torch.float32)


def perplexity(counts: torch.Tensor, rows: int) -> torch.Tensor:
    """exp(-sum p log(p + 1e-10)), p = counts / rows (the official formula), float32."""
    p = counts.to(torch.float32) / rows
    return torch.exp(-(p * torch.log(p + 1e-10)).sum())


def quantize(z: torch.Tensor, codebook: torch.Tensor, start: int, num: int, beta: float = 0.25) -> Quantized:
    """Official VQ forward through autograd: gradients flow to z and to codebook.

    z (..., d), codebook (K, d) of one dtype. Returns Quantized(z_q (..., d) in z's dtype,
    indices (...) int64, loss () float32 (float64 for float64 input; computed in that
    precision for float16/bfloat16 input too), stats).
    """
    d = z.shape[-1]
    lead = z.shape[:-1]
    zf = z.reshape(-1, d)
    n = zf.shape[0]
    idx, sq = nearest_code(zf.detach(), codebook.detach(), start, num)
    valid = idx >= 0
    local = torch.where(valid, idx - start, torch.zeros_like(idx))
    codes = codebook[start:start + num]
    # the official one-hot matmul's values (and gradient, an index-add), gathered: a matmul
    # would spread 0 * NaN from an unchosen non-finite codebook row into every row
    e = codes[local]
    e = torch.where(valid[:, None], e, torch.full_like(e, float("nan")))
    acc = _acc_dtype(zf, codes)  # the loss is a float32 (float64) mean for every input dtype
    e_acc, z_acc = e.to(acc), zf.to(acc)
    loss = beta * torch.mean((e_acc.detach() - z_acc) ** 2) + torch.mean((e_acc - z_acc.detach()) ** 2)
    z_q = zf + (e - zf).detach()
    counts = torch.bincount(local[valid], minlength=num)
    stats = VQStats(
        perplexity=perplexity(counts, n),
        usage=(counts > 0).to(torch.float32).mean(),
        counts=counts,
        sq_distances=sq.reshape(lead),
    )
    return Quantized(z_q.reshape(z.shape), idx.reshape(lead), loss, stats)
