"""Fused dense motion (FOMM-style deformable flow composition), dispatched to torch/triton/cuda.

Public ops (each takes ``backend=None | "torch" | "triton" | "cuda"``):

* ``keypoint_heatmaps(kp, size, variance=0.01)``: Gaussians (B, K, H, W).
* ``sparse_motions(kp_source, kp_driving, jac_source=None, jac_driving=None, *, size)``:
  (B, K+1, H, W, 2), identity first, T_k(z) = kp_s + J_s J_d^-1 (z - kp_d).
* ``dense_motion_input(source, kp_source, kp_driving, jac_source, jac_driving, align_corners)``:
  the hourglass input (B, (K+1)*(C+1), H, W) in one pass, sparse motions never stored.
* ``compose_flow(mask_logits, kp_source, kp_driving, jac_source, jac_driving)``:
  softmax over the K+1 mask channels, sum_g M_g T_g(z) -> (B, H, W, 2).

The torch backend is the plain reference (``mcc_fast.reference.dense_motion``). The kernels
compute in float32 whatever the input dtype (2x2 inverse, exponentials, softmax): keypoints
and jacobians are read as float32; outputs are cast to the documented dtype at the store.

Singular jacobians: the 2x2 inverse is the closed form adjugate / det (as in the reference,
CUDA-graph friendly, never raises). A det of exactly 0 gives inf/nan entries, so that
keypoint's sparse motion is inf/nan: ``compose_flow`` is then non-finite wherever the
reference is, and in ``dense_motion_input`` that group's deformed channels are NaN (a
non-finite sampling position gives NaN, as ``grid_sample`` on CPU does); the other groups
and samples are unaffected. Gradients through a singular jacobian are inf/nan likewise.

Non-finite keypoints or jacobians (NaN/inf) give the reference's forward NaN/inf pattern. In
the backward of ``dense_motion_input`` a non-finite sampling position contributes no gradient
(as in grid_sample's CUDA backward; the CPU reference gives NaN there): a keypoint's gradient
that is NaN on the CPU reference only through such positions (e.g. kp_driving's when kp_source
is NaN) is finite on the kernel backends. Gradients through a NaN heatmap or an inf/nan
inverse stay non-finite.

Backward: to the source, keypoints, jacobians (through the closed-form inverse) and mask
logits. Keypoint/jacobian gradients are per-block partial sums reduced afterwards
(deterministic). The source gradient of ``dense_motion_input`` is scattered with float32
atomics, like ``grid_sample``'s CUDA backward: under ``torch.use_deterministic_algorithms(True)``
it raises (or warns with ``warn_only=True``), as grid_sample does.
"""
from __future__ import annotations

import types
import warnings
from typing import Optional, Sequence

import torch

from .._dispatch import refuse_double_backward, resolve_backend
from ..reference import dense_motion as reference
from ._checks import as_index, check_same_device, check_tensor

__all__ = ["keypoint_heatmaps", "sparse_motions", "dense_motion_input", "compose_flow"]

_SLICES = {"kp_source": (0, 2), "kp_driving": (2, 4), "jac_source": (4, 8), "jac_driving": (8, 12)}


# --------------------------------------------------------------------------- kernels
def _kernels(backend: str):
    """The launchers of one backend, with the signatures of kernels/*.py."""
    if backend == "cuda":
        from ..cuda import dense_motion as cuda_dm

        return cuda_dm
    from ..kernels import compose_flow as cf
    from ..kernels import dense_motion_input as dmi
    from ..kernels import keypoint_heatmaps as kh
    from ..kernels import sparse_motions as sm

    return types.SimpleNamespace(
        keypoint_heatmaps=kh.keypoint_heatmaps,
        sparse_motions=sm.sparse_motions,
        dense_motion_input_forward=dmi.dense_motion_input_forward,
        dense_motion_input_backward=dmi.dense_motion_input_backward,
        compose_flow_forward=cf.compose_flow_forward,
        compose_flow_backward=cf.compose_flow_backward,
    )


def _f32(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.to(torch.float32).contiguous()


def _split_keypoint_grads(grads: torch.Tensor, needs: Sequence[bool], like: Sequence[Optional[torch.Tensor]]):
    """(B, K, 12) float32 -> gradients of kp_source, kp_driving, jac_source, jac_driving."""
    out = []
    for (lo, hi), need, t in zip(_SLICES.values(), needs, like):
        if not need or t is None:
            out.append(None)
        else:
            out.append(grads[..., lo:hi].reshape(t.shape).to(t.dtype))
    return out


def _grid(h: int, w: int, device) -> torch.Tensor:
    return reference.make_coordinate_grid(h, w, torch.float32, device)


def _affine_backward(grad_a: torch.Tensor, jac_source: torch.Tensor, jac_driving: torch.Tensor):
    """Chain dL/dA (B, K, 2, 2) through A = J_s D, D = inverse_2x2(J_d) -> (dJ_s, dJ_d)."""
    inv = reference.inverse_2x2(jac_driving)
    inv_t = inv.transpose(-1, -2)
    d_js = grad_a @ inv_t
    d_inv = jac_source.transpose(-1, -2) @ grad_a
    d_jd = -(inv_t @ d_inv @ inv_t)
    return d_js, d_jd


# --------------------------------------------------------------------------- keypoint_heatmaps
@torch.library.custom_op("mcc_fast::keypoint_heatmaps", mutates_args=())
def _keypoint_heatmaps_op(kp: torch.Tensor, h: int, w: int, variance: float, backend: str) -> torch.Tensor:
    return _kernels(backend).keypoint_heatmaps(_f32(kp), h, w, variance, kp.dtype)


@_keypoint_heatmaps_op.register_fake
def _(kp, h, w, variance, backend):
    return kp.new_empty(kp.shape[0], kp.shape[1], h, w)


def _heatmaps_setup(ctx, inputs, output):
    kp, h, w, variance, _ = inputs
    ctx.save_for_backward(kp, output)
    ctx.size = (h, w)
    ctx.variance = variance


def _heatmaps_backward(ctx, grad):
    kp, heat = ctx.saved_tensors
    h, w = ctx.size
    weight = grad.float() * heat.float() / ctx.variance  # dG/dkp = G (z - kp) / variance
    offset = _grid(h, w, kp.device).view(1, 1, h, w, 2) - kp.float().view(*kp.shape[:2], 1, 1, 2)
    d_kp = (weight.unsqueeze(-1) * offset).sum(dim=(2, 3))
    return d_kp.to(kp.dtype), None, None, None, None


_keypoint_heatmaps_op.register_autograd(_heatmaps_backward, setup_context=_heatmaps_setup)


# --------------------------------------------------------------------------- sparse_motions
@torch.library.custom_op("mcc_fast::sparse_motions", mutates_args=())
def _sparse_motions_op(kp_source: torch.Tensor, kp_driving: torch.Tensor, jac_source: Optional[torch.Tensor],
                       jac_driving: Optional[torch.Tensor], h: int, w: int, backend: str) -> torch.Tensor:
    return _kernels(backend).sparse_motions(_f32(kp_source), _f32(kp_driving), _f32(jac_source), _f32(jac_driving),
                                            h, w, kp_source.dtype)


@_sparse_motions_op.register_fake
def _(kp_source, kp_driving, jac_source, jac_driving, h, w, backend):
    return kp_source.new_empty(kp_source.shape[0], kp_source.shape[1] + 1, h, w, 2)


def _sparse_setup(ctx, inputs, output):
    kp_source, kp_driving, jac_source, jac_driving, h, w, _ = inputs
    ctx.save_for_backward(kp_source, kp_driving, jac_source, jac_driving)
    ctx.size = (h, w)


def _sparse_backward(ctx, grad):
    kp_s, kp_d, jac_s, jac_d = ctx.saved_tensors
    h, w = ctx.size
    bs, num_kp = kp_s.shape[:2]
    go = grad[:, 1:].float()  # the identity group has no parameters
    g_sum = go.sum(dim=(2, 3))  # (B, K, 2)
    d_kps = g_sum
    d_js = d_jd = None
    if jac_s is None:
        d_kpd = -g_sum
    else:
        js, jd = jac_s.float(), jac_d.float()
        affine = js @ reference.inverse_2x2(jd)
        offset = _grid(h, w, kp_s.device).view(1, 1, h, w, 2) - kp_d.float().view(bs, num_kp, 1, 1, 2)
        grad_a = torch.einsum("bkhwi,bkhwj->bkij", go, offset)
        d_kpd = -(affine.transpose(-1, -2) @ g_sum.unsqueeze(-1)).squeeze(-1)
        d_js, d_jd = _affine_backward(grad_a, js, jd)
        d_js, d_jd = d_js.to(jac_s.dtype), d_jd.to(jac_d.dtype)
    return d_kps.to(kp_s.dtype), d_kpd.to(kp_d.dtype), d_js, d_jd, None, None, None


_sparse_motions_op.register_autograd(_sparse_backward, setup_context=_sparse_setup)


# --------------------------------------------------------------------------- dense_motion_input
@torch.library.custom_op("mcc_fast::dense_motion_input", mutates_args=())
def _dense_motion_input_op(source: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor,
                           jac_source: Optional[torch.Tensor], jac_driving: Optional[torch.Tensor],
                           align_corners: bool, variance: float, backend: str) -> torch.Tensor:
    return _kernels(backend).dense_motion_input_forward(
        source, _f32(kp_source), _f32(kp_driving), _f32(jac_source), _f32(jac_driving), align_corners, variance)


@_dense_motion_input_op.register_fake
def _(source, kp_source, kp_driving, jac_source, jac_driving, align_corners, variance, backend):
    bs, channels, h, w = source.shape
    return source.new_empty(bs, (kp_source.shape[1] + 1) * (channels + 1), h, w)


@torch.library.custom_op("mcc_fast::dense_motion_input_backward", mutates_args=())
def _dense_motion_input_backward_op(grad: torch.Tensor, source: torch.Tensor, kp_source: torch.Tensor,
                                    kp_driving: torch.Tensor, jac_source: Optional[torch.Tensor],
                                    jac_driving: Optional[torch.Tensor], align_corners: bool, variance: float,
                                    need_source_grad: bool, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _kernels(backend).dense_motion_input_backward(
        grad.to(source.dtype).contiguous(), source, _f32(kp_source), _f32(kp_driving), _f32(jac_source),
        _f32(jac_driving), align_corners, variance, need_source_grad)


@_dense_motion_input_backward_op.register_fake
def _(grad, source, kp_source, kp_driving, jac_source, jac_driving, align_corners, variance, need_source_grad,
      backend):
    d_src = source.new_empty(source.shape if need_source_grad else (0,), dtype=torch.float32)
    return d_src, source.new_empty(kp_source.shape[0], kp_source.shape[1], 12, dtype=torch.float32)


def _alert_source_grad_not_deterministic(source: torch.Tensor) -> None:
    if source.device.type != "cuda" or not torch.are_deterministic_algorithms_enabled():
        return
    msg = ("mcc_fast.ops.dense_motion_input: the gradient w.r.t. `source` accumulates with atomics and has no "
           "deterministic implementation (like grid_sample's CUDA backward); keypoint and jacobian gradients "
           "are deterministic. Detach the source, or disable torch.use_deterministic_algorithms.")
    if torch.is_deterministic_algorithms_warn_only_enabled():
        warnings.warn(msg, stacklevel=3)
    else:
        raise RuntimeError(msg)


def _dmi_setup(ctx, inputs, output):
    source, kp_s, kp_d, jac_s, jac_d, align_corners, variance, backend = inputs
    ctx.save_for_backward(source, kp_s, kp_d, jac_s, jac_d)
    ctx.args = (align_corners, variance, backend)


def _dmi_backward(ctx, grad):
    source, kp_s, kp_d, jac_s, jac_d = ctx.saved_tensors
    align_corners, variance, backend = ctx.args
    needs = ctx.needs_input_grad
    need_source = bool(needs[0])
    if need_source:
        _alert_source_grad_not_deterministic(source)
    d_src, d_kp = _dense_motion_input_backward_op(grad, source, kp_s, kp_d, jac_s, jac_d, align_corners,
                                                  variance, need_source, backend)
    d_source = d_src.to(source.dtype) if need_source else None
    return (d_source, *_split_keypoint_grads(d_kp, needs[1:5], (kp_s, kp_d, jac_s, jac_d)), None, None, None)


_dense_motion_input_op.register_autograd(_dmi_backward, setup_context=_dmi_setup)
refuse_double_backward(_dense_motion_input_backward_op, "dense_motion_input")


# --------------------------------------------------------------------------- compose_flow
@torch.library.custom_op("mcc_fast::compose_flow", mutates_args=())
def _compose_flow_op(mask_logits: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor,
                     jac_source: Optional[torch.Tensor], jac_driving: Optional[torch.Tensor],
                     backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _kernels(backend).compose_flow_forward(
        mask_logits, _f32(kp_source), _f32(kp_driving), _f32(jac_source), _f32(jac_driving))


@_compose_flow_op.register_fake
def _(mask_logits, kp_source, kp_driving, jac_source, jac_driving, backend):
    bs, _, h, w = mask_logits.shape
    return (mask_logits.new_empty(bs, h, w, 2, dtype=torch.float32),
            mask_logits.new_empty(bs, h, w, 2, dtype=torch.float32))


@torch.library.custom_op("mcc_fast::compose_flow_backward", mutates_args=())
def _compose_flow_backward_op(grad: torch.Tensor, mask_logits: torch.Tensor, flow: torch.Tensor, stats: torch.Tensor,
                              kp_source: torch.Tensor, kp_driving: torch.Tensor, jac_source: Optional[torch.Tensor],
                              jac_driving: Optional[torch.Tensor], backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _kernels(backend).compose_flow_backward(
        grad.to(torch.float32).contiguous(), mask_logits, flow, stats, _f32(kp_source), _f32(kp_driving),
        _f32(jac_source), _f32(jac_driving))


@_compose_flow_backward_op.register_fake
def _(grad, mask_logits, flow, stats, kp_source, kp_driving, jac_source, jac_driving, backend):
    return (torch.empty_like(mask_logits),
            mask_logits.new_empty(kp_source.shape[0], kp_source.shape[1], 12, dtype=torch.float32))


def _compose_setup(ctx, inputs, output):
    mask_logits, kp_s, kp_d, jac_s, jac_d, backend = inputs
    flow, stats = output
    ctx.mark_non_differentiable(stats)
    ctx.save_for_backward(mask_logits, kp_s, kp_d, jac_s, jac_d, flow, stats)
    ctx.backend = backend


def _compose_backward(ctx, grad_flow, grad_stats):
    mask_logits, kp_s, kp_d, jac_s, jac_d, flow, stats = ctx.saved_tensors
    needs = ctx.needs_input_grad
    d_logits, d_kp = _compose_flow_backward_op(grad_flow, mask_logits, flow, stats, kp_s, kp_d, jac_s, jac_d,
                                               ctx.backend)
    return (d_logits if needs[0] else None, *_split_keypoint_grads(d_kp, needs[1:5], (kp_s, kp_d, jac_s, jac_d)),
            None)


_compose_flow_op.register_autograd(_compose_backward, setup_context=_compose_setup)
refuse_double_backward(_compose_flow_backward_op, "compose_flow")


# --------------------------------------------------------------------------- checks
def _check_keypoints(kp_source, kp_driving, jac_source, jac_driving) -> tuple[int, int]:
    check_tensor(kp_source, "kp_source", ndim=3)
    check_tensor(kp_driving, "kp_driving", ndim=3)
    if kp_source.shape[-1] != 2:
        raise ValueError(f"kp_source must have shape (B, K, 2), got {tuple(kp_source.shape)}")
    if tuple(kp_driving.shape) != tuple(kp_source.shape):
        raise ValueError(f"kp_driving must have the shape of kp_source {tuple(kp_source.shape)} (B, K, 2), "
                         f"got {tuple(kp_driving.shape)}")
    if (jac_source is None) != (jac_driving is None):
        raise ValueError("jac_source and jac_driving must both be given or both be None")
    bs, num_kp = kp_source.shape[:2]
    if jac_source is not None:
        for name, jac in (("jac_source", jac_source), ("jac_driving", jac_driving)):
            check_tensor(jac, name, ndim=4)
            if tuple(jac.shape) != (bs, num_kp, 2, 2):
                raise ValueError(f"{name} must have shape (B, K, 2, 2) = {(bs, num_kp, 2, 2)} to match kp_source, "
                                 f"got {tuple(jac.shape)}")
    if num_kp < 1:
        raise ValueError(f"kp_source must hold at least one keypoint, got shape {tuple(kp_source.shape)}")
    return bs, num_kp


def _check_size(size, name: str = "size") -> tuple[int, int]:
    pair = [] if isinstance(size, (str, bytes)) or not isinstance(size, Sequence) else [as_index(s) for s in size]
    if len(pair) != 2 or None in pair:
        raise ValueError(f"{name} must be a pair (H, W) of ints, got {size!r}")
    h, w = pair
    if h < 2 or w < 2:
        raise ValueError(f"{name} must be at least (2, 2) (the coordinate grid divides by n - 1), got {(h, w)}")
    return h, w


def _check_variance(variance) -> float:
    if isinstance(variance, bool) or not isinstance(variance, (int, float)) or not variance > 0:
        raise ValueError(f"variance must be a number > 0, got {variance!r}")
    return float(variance)


def _resolve(backend, tensors: dict, op: str) -> str:
    present = {n: t for n, t in tensors.items() if t is not None}
    check_same_device(**present)
    has_f64 = any(t.dtype == torch.float64 for t in present.values())
    if backend is None and has_f64:
        return "torch"  # the kernels compute in float32: float64 stays on the reference
    chosen = resolve_backend(backend, *present.values(), op=op)
    if chosen != "torch" and has_f64:
        names = ", ".join(n for n, t in present.items() if t.dtype == torch.float64)
        raise TypeError(f"{op}: the {chosen} backend supports float32/float16/bfloat16, got float64 for {names}")
    return chosen


# --------------------------------------------------------------------------- public ops
def keypoint_heatmaps(kp: torch.Tensor, size: Sequence[int], variance: float = 0.01, *,
                      backend: str | None = None) -> torch.Tensor:
    """Unnormalised Gaussians exp(-0.5 |z - kp|^2 / variance) on the (H, W) coordinate grid.

    kp: (B, K, 2) float (x, y) in [-1, 1], K >= 1; size: (H, W), each >= 2. Returns (B, K, H, W) in
    kp's dtype (computed in float32 by the kernels). Differentiable w.r.t. kp.
    """
    check_tensor(kp, "kp", ndim=3)
    if kp.shape[-1] != 2:
        raise ValueError(f"kp must have shape (B, K, 2), got {tuple(kp.shape)}")
    if kp.shape[1] < 1:
        raise ValueError(f"kp must hold at least one keypoint, got shape {tuple(kp.shape)}")
    h, w = _check_size(size)
    variance = _check_variance(variance)
    chosen = _resolve(backend, {"kp": kp}, "keypoint_heatmaps")
    if chosen == "torch":
        return reference.keypoint_heatmaps(kp, (h, w), variance)
    return _keypoint_heatmaps_op(kp, h, w, variance, chosen)


def sparse_motions(kp_source: torch.Tensor, kp_driving: torch.Tensor, jac_source: torch.Tensor | None = None,
                   jac_driving: torch.Tensor | None = None, *, size: Sequence[int],
                   backend: str | None = None) -> torch.Tensor:
    """Per-keypoint backward motions T_k(z) = kp_s + J_s J_d^-1 (z - kp_d), identity first.

    kp_*: (B, K, 2) float; jac_*: (B, K, 2, 2) or both None (pure translations).
    size: (H, W). Returns (B, K+1, H, W, 2) in kp_source's dtype; [:, 0] is the identity
    grid. For tests and users: the fused ops never store it. Differentiable w.r.t. all inputs.
    """
    _check_keypoints(kp_source, kp_driving, jac_source, jac_driving)
    h, w = _check_size(size)
    chosen = _resolve(backend, {"kp_source": kp_source, "kp_driving": kp_driving, "jac_source": jac_source,
                                "jac_driving": jac_driving}, "sparse_motions")
    if chosen == "torch":
        return reference.sparse_motions(kp_source, kp_driving, jac_source, jac_driving,
                                        size=(h, w)).to(kp_source.dtype)
    return _sparse_motions_op(kp_source, kp_driving, jac_source, jac_driving, h, w, chosen)


def dense_motion_input(source: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor,
                       jac_source: torch.Tensor | None = None, jac_driving: torch.Tensor | None = None,
                       align_corners: bool = False, *, variance: float = 0.01,
                       backend: str | None = None) -> torch.Tensor:
    """The dense-motion hourglass input in one pass: per group [heatmap difference, deformed source].

    source: (B, C, H, W) float32/float16/bfloat16 (any strides; H, W >= 2); kp_*: (B, K, 2);
    jac_*: (B, K, 2, 2) or both None. Returns (B, (K+1)*(C+1), H, W) in source's dtype:
    channel g*(C+1) is G(kp_d) - G(kp_s) of keypoint g-1 (zeros for the background g = 0),
    channels g*(C+1)+1 .. g*(C+1)+C the source sampled bilinearly at T_g(z) (grid_sample,
    zeros padding, `align_corners`; the official model uses False). Differentiable w.r.t.
    source, keypoints and jacobians.
    """
    check_tensor(source, "source", ndim=4)
    bs, num_kp = _check_keypoints(kp_source, kp_driving, jac_source, jac_driving)
    if source.shape[0] != bs:
        raise ValueError(f"source has batch {source.shape[0]} but kp_source has batch {bs}; they must match")
    _check_size(source.shape[2:], "source's (H, W)")
    if source.shape[1] < 1:
        raise ValueError(f"source must have at least one channel, got shape {tuple(source.shape)}")
    variance = _check_variance(variance)
    if not isinstance(align_corners, bool):
        raise TypeError(f"align_corners must be a bool, got {type(align_corners).__name__}")
    chosen = _resolve(backend, {"source": source, "kp_source": kp_source, "kp_driving": kp_driving,
                                "jac_source": jac_source, "jac_driving": jac_driving}, "dense_motion_input")
    if chosen == "torch":
        return reference.dense_motion_input(source, kp_source, kp_driving, jac_source, jac_driving,
                                            align_corners, variance=variance).to(source.dtype)
    return _dense_motion_input_op(source, kp_source, kp_driving, jac_source, jac_driving, align_corners,
                                  variance, chosen)


def compose_flow(mask_logits: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor,
                 jac_source: torch.Tensor | None = None, jac_driving: torch.Tensor | None = None, *,
                 backend: str | None = None) -> torch.Tensor:
    """Deformable flow composition: softmax over the K+1 mask channels, then sum_g M_g T_g(z).

    mask_logits: (B, K+1, H, W) float (background channel first; any strides; H, W >= 2);
    kp_*: (B, K, 2); jac_*: (B, K, 2, 2) or both None. Returns the (B, H, W, 2) backward
    flow (a grid_sample grid) in the promoted dtype of mask_logits and kp_source; the
    kernels compute softmax and motions in float32. Differentiable w.r.t. all inputs.
    """
    check_tensor(mask_logits, "mask_logits", ndim=4)
    bs, num_kp = _check_keypoints(kp_source, kp_driving, jac_source, jac_driving)
    if mask_logits.shape[0] != bs or mask_logits.shape[1] != num_kp + 1:
        raise ValueError(f"mask_logits must have shape (B, K+1, H, W) = ({bs}, {num_kp + 1}, H, W) for kp_source "
                         f"of shape {tuple(kp_source.shape)}, got {tuple(mask_logits.shape)}")
    _check_size(mask_logits.shape[2:], "mask_logits' (H, W)")
    chosen = _resolve(backend, {"mask_logits": mask_logits, "kp_source": kp_source, "kp_driving": kp_driving,
                                "jac_source": jac_source, "jac_driving": jac_driving}, "compose_flow")
    out_dtype = torch.promote_types(mask_logits.dtype, kp_source.dtype)
    if chosen == "torch":
        return reference.compose_flow(mask_logits, kp_source, kp_driving, jac_source, jac_driving).to(out_dtype)
    flow, _ = _compose_flow_op(mask_logits, kp_source, kp_driving, jac_source, jac_driving, chosen)
    return flow.to(out_dtype)
