"""Fused GroupNorm + swish (the VQGAN blocks' `swish(GroupNorm(x))`), dispatched to torch/triton.

`group_norm_swish(x, num_groups, weight, bias, eps, swish=True)` = GroupNorm then
y * sigmoid(y) (`swish=False`: the GroupNorm alone). One read of x and one write of the
output on the triton backend (plus a small statistics pass); statistics in float32 for every
input dtype; the output keeps x's dtype and memory layout (contiguous or channels-last).
The triton kernel centres each group on its first element before the statistics: a constant
group gives exactly beta (NaN with eps=0, 0/0 as in the reference) at any magnitude, and
|mean| >> std keeps float32 accuracy (torch's own CPU group_norm loses it there).

Backends: "triton" (CUDA, or CPU under TRITON_INTERPRET=1; forward only) and "torch" (the
reference below: F.group_norm in float32, then F.silu, cast back). With `backend=None` a CUDA
input runs on triton unless a gradient is needed (autograd enabled and an input requires
grad): then the differentiable torch reference runs. Asking for triton explicitly while a
gradient is needed is a RuntimeError.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._dispatch import resolve_backend
from ._checks import as_index, check_same_device, check_tensor

__all__ = ["group_norm_swish", "group_norm_swish_reference"]

SUPPORTED = ("triton", "torch")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def group_norm_swish_reference(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None = None,
                               bias: torch.Tensor | None = None, eps: float = 1e-6,
                               swish: bool = True) -> torch.Tensor:
    """The torch reference: GroupNorm (float32 statistics and affine), then swish; x's dtype.

    x: (N, C, *) float; weight, bias: (C,) or None. Differentiable. Keeps channels-last.
    """
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = F.group_norm(x.to(compute), num_groups, None if weight is None else weight.to(compute),
                     None if bias is None else bias.to(compute), eps)
    if swish:
        y = F.silu(y, inplace=not y.requires_grad)
    return y.to(x.dtype)


@torch.library.custom_op("mcc_fast::group_norm_swish", mutates_args=())
def _group_norm_swish_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, num_groups: int, eps: float,
                         swish: bool) -> torch.Tensor:
    from ..kernels import group_norm_swish as kernel

    return kernel.group_norm_swish(x, weight, bias, num_groups, eps, swish)


def _hw_mergeable(x: torch.Tensor) -> bool:
    """True when H and W of a 4-D x merge into one pixel stride (kernels.group_norm_swish._mergeable)."""
    return x.dim() == 3 or x.shape[2] == 1 or x.stride(2) == x.shape[3] * x.stride(3)


@_group_norm_swish_op.register_fake
def _(x, weight, bias, num_groups, eps, swish):
    # like the kernel: x whose H and W do not merge (e.g. H and W transposed) is made contiguous first
    return torch.empty_like(x if _hw_mergeable(x) else x.contiguous())


def _check(x, num_groups, weight, bias, eps) -> int:
    """Raise on bad arguments; returns num_groups as a Python int."""
    check_tensor(x, "x")
    if x.dim() < 2:
        raise ValueError(f"x must have shape (N, C, ...), got {tuple(x.shape)}")
    groups = as_index(num_groups)
    if groups is None or groups < 1:
        raise ValueError(f"num_groups must be a positive int, got {num_groups!r}")
    channels = x.shape[1]
    if channels % groups:
        raise ValueError(f"num_groups={groups} must divide x's {channels} channels (x shape {tuple(x.shape)})")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            check_tensor(t, name, ndim=1)
            if t.shape[0] != channels:
                raise ValueError(f"{name} must have shape ({channels},) to match x's channels, got {tuple(t.shape)}")
    check_same_device(x=x, weight=weight, bias=bias)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"eps must be a number >= 0, got {eps!r}")
    return groups


def group_norm_swish(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None = None,
                     bias: torch.Tensor | None = None, eps: float = 1e-6, *, swish: bool = True,
                     backend: str | None = None) -> torch.Tensor:
    """swish(GroupNorm(x)) (or GroupNorm(x) with swish=False) in one fused pass.

    x: (N, C, H, W) or (N, C, L) float32/float16/bfloat16 (float64: torch backend), contiguous
    or channels-last; num_groups divides C; weight, bias: (C,) float (None: 1 and 0); eps as
    in nn.GroupNorm. Returns x's shape, dtype and layout. backend: None (auto), "torch" or
    "triton" (module docstring for the gradient rule).
    """
    num_groups = _check(x, num_groups, weight, bias, eps)
    if not isinstance(swish, bool):  # as the other ops' flags: a truthy "False" would apply swish
        raise TypeError(f"swish must be a bool, got {type(swish).__name__}")
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias))
    if backend is None and (needs_grad or x.dtype not in KERNEL_DTYPES or x.dim() not in (3, 4)):
        backend = "torch"
    chosen = resolve_backend(backend, x, weight, bias, op="group_norm_swish", supported=SUPPORTED)
    if chosen == "torch":
        return group_norm_swish_reference(x, num_groups, weight, bias, eps, swish)
    if needs_grad:
        raise RuntimeError("group_norm_swish: the triton backend is forward only; a gradient is needed here "
                           "(use backend='torch' or backend=None)")
    if x.dtype not in KERNEL_DTYPES or x.dim() not in (3, 4):
        raise TypeError(f"group_norm_swish: the triton backend takes 3-D or 4-D float32/float16/bfloat16 x, "
                        f"got {x.dim()}-D {x.dtype}")
    channels = x.shape[1]
    # the kernel reads weight[c] and bias[c] at unit stride
    weight = x.new_ones(channels, dtype=torch.float32) if weight is None else weight.contiguous()
    bias = x.new_zeros(channels, dtype=torch.float32) if bias is None else bias.contiguous()
    return _group_norm_swish_op(x, weight, bias, num_groups, float(eps), swish)
