"""Nearest-code search and vector quantisation (public ops, dispatched to torch/triton/cuda).

`nearest_code` finds, for every row of z, the nearest row of a block of codebook rows;
`quantize` is the official VQ layer on top of it (straight-through z_q, the VQ loss, its
gradients to z and to the codebook, perplexity and code usage); `quantize_multiscale`
runs several of them (one per scale: different inputs, one codebook, different row
ranges) in one launch.

Numerics (all backends)
-----------------------
- Distances accumulate in float32 (float64 inputs, torch backend only: float64). z and the
  codebook are promoted to a common dtype first (bfloat16 z with a float32 codebook: both
  float32), through autograd.
- Ties (equal distances, e.g. duplicate codebook rows) go to the lowest index.
- Near-ties (triton and cuda backends): candidates come from |e|^2 - 2 z.e on tensor cores
  (fp32 inputs: TF32 with `precision="tf32"`, the default; 3xTF32 with "tf32x3"; plain fp32
  FMA with "ieee"; fp16/bf16 inputs: exact products, fp32 accumulation). The two best
  candidates are then re-ranked by the exact fp32 difference d(z,e1) - d(z,e2) =
  sum (e1 - e2)(e1 + e2 - 2z), which has no |z|^2 cancellation. Guaranteed: the result is
  the exact-fp32 argmin whenever the true nearest code is among the two best approximate
  candidates, which holds unless a third code lies within 2*tau of it, where tau bounds the
  approximate distance error: at most 2^-8 |z||e| for TF32 (operands keep 10 mantissa
  bits; typical errors are far smaller), about 2^-18 |z||e| for 3xTF32, and about
  d * 2^-24 |z||e| (accumulation only) for fp16/bf16 and "ieee". Codes that close are
  equally good to within that tolerance; a far-off wrong code is never returned. The cuda
  backend uses tensor cores (wmma) for fp16/bf16 and for fp32 with "tf32"; fp32 with
  "tf32x3" or "ieee" uses fp32 FMA there (the "ieee" accuracy). The torch reference uses the
  official expanded formula, so at near-ties the backends may pick different (equally near,
  within the tolerances above) codes.
- Reported distances are the direct fp32 sum (z - e)^2 of the chosen code: never
  negative (+inf if it overflows float32).

Non-finite input
----------------
- A row of z containing NaN or +-Inf gets index -1 and distance NaN; in `quantize` its z_q
  row is NaN, the loss is NaN, it counts toward no code (perplexity and usage use the
  remaining rows over all N), its z gradient is NaN when the loss gradient is nonzero, and
  it adds nothing to the codebook gradient. A finite wrong index is never returned.
- Codebook rows containing NaN or +-Inf are never chosen; if no searched row is finite
  every index is -1.
- The search is valid while |z| |e| stays below about 1e37 (float32 range); a row whose
  distances to every code overflow float32 gets index -1 and distance NaN as well. Between
  the two limits (|z|^2 or |e|^2 past float32's 3.4e38, |z| |e| not) the backends differ:
  the torch reference's expanded |z|^2 + |e|^2 - 2 z.e overflows, so it returns -1 / NaN,
  while the kernels, ranking by |e|^2 - 2 z.e, still return the nearest code, with a
  distance of +inf (and an infinite loss in `quantize`). A codebook holding one code past
  that limit (|e|^2 overflows) beside finite ones is also outside the valid range: the
  reference then ranks only the others and may return a farther finite code than the
  kernels do. Codebooks of a trained model are many orders of magnitude inside it.

Determinism
-----------
The forward is deterministic. The codebook gradient is an index-add: with
`deterministic=True`, or `torch.use_deterministic_algorithms(True)` when
`deterministic=None`, it is a sorted segment sum and bitwise reproducible run to run;
otherwise float atomics (faster; summation order varies). The z gradient is always
deterministic.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .._dispatch import deterministic_requested, refuse_double_backward, resolve_backend, under_vmap
from ..reference import vq as reference
from ..reference.vq import Quantized, VQStats
from ._checks import as_index, check_same_device, check_tensor

__all__ = ["Quantized", "VQStats", "nearest_code", "quantize", "quantize_multiscale", "PRECISIONS"]

PRECISIONS = ("tf32", "tf32x3", "ieee")
MAX_SEGMENTS = 4  # searches per launch (kernels/vq_search.py)


def _impl(backend: str):
    """The kernel module of a backend: search(...) and backward(...)."""
    if backend == "cuda":
        from ..cuda import vq as cuda_vq

        return cuda_vq
    from ..kernels import vq_search

    return vq_search


def _grad_impl(backend: str):
    if backend == "cuda":
        from ..cuda import vq as cuda_vq

        return cuda_vq
    from ..kernels import vq_codebook_grad

    return vq_codebook_grad


def _check_range(k: int, num_codes, start, name_num: str = "num_codes", name_start: str = "start") -> tuple[int, int]:
    """(start, num) as ints, or a ValueError naming the argument."""
    first = as_index(start)
    if first is None or not 0 <= first < k:
        raise ValueError(f"{name_start} must be an int in [0, {k}) (the codebook has {k} rows), got {start!r}")
    num = k - first if num_codes is None else as_index(num_codes)
    if num is None or num < 1 or first + num > k:
        raise ValueError(f"{name_num} must be an int in [1, {k - first}] (codebook has {k} rows, "
                         f"{name_start}={first}), got {num_codes!r}")
    return first, num


def _check_codebook(codebook) -> None:
    check_tensor(codebook, "codebook", ndim=2)
    if codebook.shape[0] < 1 or codebook.shape[1] < 1:
        raise ValueError(f"codebook must have at least one row and one column, got shape {tuple(codebook.shape)}")


def _check_z(z, codebook, name: str, *, ndim=None) -> None:
    check_tensor(z, name, ndim=ndim)
    if z.dim() < 1:
        raise ValueError(f"{name} must have at least 1 dimension (..., d), got a 0-d tensor")
    check_same_device(**{name: z, "codebook": codebook})
    if z.shape[-1] != codebook.shape[1]:
        raise ValueError(f"{name} has d={z.shape[-1]} (its last dimension) but codebook has d={codebook.shape[1]}; "
                         "they must match")


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def _choose(backend, *tensors, op: str) -> str:
    """The backend for `tensors`, already promoted to their common dtype (what the kernels get)."""
    dtype = tensors[0].dtype
    if backend is None and dtype == torch.float64:
        return "torch"  # the kernels are float32/float16/bfloat16
    chosen = resolve_backend(backend, *tensors, op=op)
    if chosen != "torch" and dtype == torch.float64:
        raise TypeError(f"{op}: the {chosen} backend supports float32/float16/bfloat16 inputs, got float64 "
                        "(use backend='torch')")
    return chosen


def _common_dtype(z: torch.Tensor, codebook: torch.Tensor) -> torch.dtype:
    return torch.promote_types(z.dtype, codebook.dtype)


def nearest_code(z: torch.Tensor, codebook: torch.Tensor, num_codes: int | None = None, start: int = 0, *,
                 backend: str | None = None, precision: str = "tf32") -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest codebook row for every query row, over rows [start, start + num_codes).

    z: (N, d) float32/float16/bfloat16 (float64: torch backend); codebook: (K, d), same
    device. num_codes: rows to search (all from `start` when None). Returns (indices
    int64 (N,) into the whole codebook, squared distances float32 (N,), never negative).
    Ties go to the lowest index; rows of z with NaN/Inf get -1 and NaN (module docstring).
    backend: None (auto), "torch", "triton" or "cuda". precision: for float32 inputs on
    the triton and cuda backends, "tf32" (default), "tf32x3" or "ieee" (module docstring).
    No gradient flows through this op.
    """
    _check_codebook(codebook)
    _check_z(z, codebook, "z", ndim=2)
    start, num = _check_range(codebook.shape[0], num_codes, start)
    _check_precision(precision)
    dtype = _common_dtype(z, codebook)
    z, codebook = z.detach().to(dtype), codebook.detach().to(dtype)
    chosen = _choose(backend, z, codebook, op="nearest_code")
    if chosen == "torch":
        return reference.nearest_code(z, codebook, start, num)
    return _nearest_code_op(z, codebook, start, num, precision, chosen)


def _segments(backend: str, zs, starts, nums) -> list:
    segment = _impl(backend).Segment
    return [segment(z, s, n) for z, s, n in zip(zs, starts, nums)]


# ------------------------------------------------------------------ custom ops (torch.library)
# The kernel backends run behind torch.library custom ops: fake implementations give
# torch.compile (fullgraph) and meta tensors the output shapes, register_autograd the gradient.

@torch.library.custom_op("mcc_fast::nearest_code", mutates_args=())
def _nearest_code_op(z: torch.Tensor, codebook: torch.Tensor, start: int, num: int, precision: str,
                     backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    res = _impl(backend).search(_segments(backend, [z], [start], [num]), codebook, fused=False,
                                precision=precision)
    return res.indices, res.distances


@_nearest_code_op.register_fake
def _(z, codebook, start, num, precision, backend):
    n = z.shape[0]
    return z.new_empty(n, dtype=torch.int64), z.new_empty(n, dtype=torch.float32)


@torch.library.custom_op("mcc_fast::quantize", mutates_args=())
def _quantize_op(codebook: torch.Tensor, zs: list[torch.Tensor], starts: list[int], nums: list[int], beta: float,
                 precision: str, backend: str, deterministic: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                              torch.Tensor, torch.Tensor, torch.Tensor,
                                                                              torch.Tensor]:
    """Fused search + z_q + loss + stats of up to 4 segments. Returns (z_q (sum N_s, d),
    loss (S,), indices (sum N_s,), distances (sum N_s,), perplexity (S,), usage (S,),
    counts (sum num_s,)); `deterministic` is only read by the backward."""
    res = _impl(backend).search(_segments(backend, zs, starts, nums), codebook, fused=True, beta=beta,
                                precision=precision)
    return res.z_q, res.loss, res.indices, res.distances, res.perplexity, res.usage, res.counts


@_quantize_op.register_fake
def _(codebook, zs, starts, nums, beta, precision, backend, deterministic):
    total, nseg = sum(z.shape[0] for z in zs), len(zs)

    def f32(n):
        return codebook.new_empty(n, dtype=torch.float32)

    return (codebook.new_empty(total, codebook.shape[1]), f32(nseg), codebook.new_empty(total, dtype=torch.int64),
            f32(total), f32(nseg), f32(nseg), codebook.new_empty(sum(nums), dtype=torch.int64))


@torch.library.custom_op("mcc_fast::quantize_backward", mutates_args=())
def _quantize_bwd_op(codebook: torch.Tensor, indices: torch.Tensor, zs: list[torch.Tensor],
                     grad_zq: Optional[torch.Tensor], grad_loss: Optional[torch.Tensor], starts: list[int],
                     nums: list[int], beta: float, backend: str, deterministic: bool,
                     need_codebook: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(dz (sum N_s, d), dcodebook (K, d) contiguous, or an empty tensor when not needed)."""
    rows = [z.shape[0] for z in zs]
    per_segment = [None] * len(zs) if grad_zq is None else list(grad_zq.split(rows))
    grad_z, grad_cb = _grad_impl(backend).backward(
        _segments(backend, zs, starts, nums), codebook, indices, per_segment, grad_loss, beta,
        deterministic=deterministic, need_codebook_grad=need_codebook)
    return grad_z, codebook.new_empty(0) if grad_cb is None else grad_cb


@_quantize_bwd_op.register_fake
def _(codebook, indices, zs, grad_zq, grad_loss, starts, nums, beta, backend, deterministic, need_codebook):
    grad_z = zs[0].new_empty(sum(z.shape[0] for z in zs), codebook.shape[1])
    # contiguous whatever the codebook's strides (a transposed parameter), as the kernels return it
    return grad_z, codebook.new_empty(codebook.shape) if need_codebook else codebook.new_empty(0)


def _quantize_setup(ctx, inputs, output):
    codebook, zs, starts, nums, beta, _precision, backend, deterministic = inputs
    # only z_q and loss carry gradients; the statistics are constants, as on the torch backend
    ctx.mark_non_differentiable(*output[2:])
    ctx.save_for_backward(codebook, output[2], *zs)
    ctx.cfg = (starts, nums, beta, backend, deterministic)
    ctx.set_materialize_grads(False)


def _quantize_backward(ctx, grad_zq, grad_loss, *_stats):
    codebook, indices, *zs = ctx.saved_tensors
    starts, nums, beta, backend, deterministic = ctx.cfg
    # z_q = z + sg(e - z) has no codebook gradient: the codebook gets one only through the loss
    # (None, not zeros, as on the torch backend: an optimizer then skips the codebook)
    need_cb, need_z = ctx.needs_input_grad[0] and grad_loss is not None, ctx.needs_input_grad[1]
    settings = (None,) * 6  # starts, nums, beta, precision, backend, deterministic
    if grad_loss is None and grad_zq is None:
        return None, [None] * len(zs), *settings  # one entry per z: the structure of the inputs
    grad_z, grad_cb = _quantize_bwd_op(codebook, indices, zs, grad_zq, grad_loss, starts, nums, beta, backend,
                                       deterministic, bool(need_cb))
    grad_zs = list(grad_z.split([z.shape[0] for z in zs])) if need_z else None
    return (grad_cb if need_cb else None), grad_zs, *settings


_quantize_op.register_autograd(_quantize_backward, setup_context=_quantize_setup)
refuse_double_backward(_quantize_bwd_op, "quantize")


def _quantize_group(zs2d, codebook, starts, nums, beta, precision, deterministic, backend):
    z_q, loss, indices, distances, ppl, usage, counts = _quantize_op(
        codebook, list(zs2d), list(starts), list(nums), float(beta), precision, backend, bool(deterministic))
    results, row, cnt = [], 0, 0
    for s in range(len(zs2d)):
        n, k = zs2d[s].shape[0], nums[s]
        stats = VQStats(perplexity=ppl[s], usage=usage[s], counts=counts[cnt:cnt + k],
                        sq_distances=distances[row:row + n])
        results.append((z_q[row:row + n], indices[row:row + n], loss[s], stats))
        row, cnt = row + n, cnt + k
    return results


def _as_list(values, name: str) -> list:
    if isinstance(values, torch.Tensor) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a list or tuple (one entry per input), got {type(values).__name__}")
    return list(values)


def quantize_multiscale(zs: Sequence[torch.Tensor], codebook: torch.Tensor, num_codes: Sequence[int | None],
                        starts: Sequence[int] | None = None, beta: float = 0.25, *,
                        deterministic: bool | None = None, backend: str | None = None,
                        precision: str = "tf32") -> list[Quantized]:
    """`quantize` for several inputs against one codebook, each over its own rows.

    zs[s]: (..., d) searches codebook rows [starts[s], starts[s] + num_codes[s]) (MCC: the
    scale-s prefix 256*(s+1), starts all 0; the disjoint-blocks ablation: starts 256*s).
    On the kernel backends up to 4 searches share one launch (and one backward). Returns a
    list of Quantized, one per input, each as `quantize` would return it.
    """
    return _quantize_many(zs, codebook, num_codes, starts, beta, deterministic, backend, precision,
                          names=None)


def _quantize_many(zs, codebook, num_codes, starts, beta, deterministic, backend, precision, names):
    if under_vmap():
        op = "quantize" if names else "quantize_multiscale"
        raise NotImplementedError(
            f"{op} does not run under torch.func.vmap: call it on the whole batch (z (..., d) takes any leading "
            "dims; the loss and statistics are over all of them), or loop over the batch")
    _check_codebook(codebook)
    zs, nums_in = _as_list(zs, "zs"), _as_list(num_codes, "num_codes")
    if not zs:
        raise ValueError("zs must hold at least one tensor")
    if len(nums_in) != len(zs):
        raise ValueError(f"num_codes must have one entry per input: {len(zs)} inputs, {len(nums_in)} num_codes")
    starts = [0] * len(zs) if starts is None else _as_list(starts, "starts")
    if len(starts) != len(zs):
        raise ValueError(f"starts must have one entry per input: {len(zs)} inputs, {len(starts)} starts")
    k = codebook.shape[0]
    nums = []
    for i, (z, nc, st) in enumerate(zip(zs, nums_in, starts)):
        zname, nname, sname = names or (f"zs[{i}]", f"num_codes[{i}]", f"starts[{i}]")
        _check_z(z, codebook, zname)
        starts[i], num = _check_range(k, nc, st, nname, sname)
        nums.append(num)
    _check_precision(precision)
    det = deterministic_requested(deterministic)
    if not isinstance(beta, (int, float)) or isinstance(beta, bool):
        raise TypeError(f"beta must be a float, got {type(beta).__name__}")
    dtype = codebook.dtype
    for z in zs:
        dtype = torch.promote_types(dtype, z.dtype)
    zs = [z.to(dtype) for z in zs]
    cb = codebook.to(dtype)
    chosen = _choose(backend, *zs, cb, op="quantize")
    if chosen == "torch":
        return [reference.quantize(z, cb, st, n, beta) for z, st, n in zip(zs, starts, nums)]
    d = cb.shape[1]
    flat = [z.reshape(-1, d) for z in zs]
    out: list[Quantized] = []
    for g0 in range(0, len(zs), MAX_SEGMENTS):
        sl = slice(g0, g0 + MAX_SEGMENTS)
        for (zq, idx, loss, stats), z in zip(
                _quantize_group(flat[sl], cb, starts[sl], nums[sl], beta, precision, det, chosen), zs[sl]):
            lead = z.shape[:-1]
            out.append(Quantized(zq.reshape(z.shape), idx.reshape(lead), loss,
                                 stats._replace(sq_distances=stats.sq_distances.reshape(lead))))
    return out


def quantize(z: torch.Tensor, codebook: torch.Tensor, num_codes: int | None = None, start: int = 0,
             beta: float = 0.25, *, deterministic: bool | None = None, backend: str | None = None,
             precision: str = "tf32") -> Quantized:
    """Vector-quantise z against codebook rows [start, start + num_codes) (official VQ).

    z: (..., d) float (a channels-last view of a feature map is the caller's job);
    codebook: (K, d) (a parameter: it receives gradients). Returns Quantized(z_q, indices,
    loss, stats), a NamedTuple:
      z_q (..., d): straight-through z + sg(e - z) in the common dtype of z and codebook;
      indices (...) int64 into the whole codebook (-1 where z is not finite);
      loss (): beta * mean((sg(e) - z)^2) + mean((e - sg(z))^2), float32 (float64 input: float64);
      stats: VQStats(perplexity, usage, counts, sq_distances).
    Gradients to z and codebook equal autograd through that formula (float tolerance).
    deterministic: bitwise-reproducible codebook gradient (None: follow
    torch.are_deterministic_algorithms_enabled()). backend / precision: as nearest_code.
    """
    return _quantize_many([z], codebook, [num_codes], [start], beta, deterministic, backend, precision,
                          names=("z", "num_codes", "start"))[0]
