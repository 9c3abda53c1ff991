"""Fused grid-sample warping (public ops, dispatched to torch/triton/cuda).

- `grid_sample`: the contract and results of F.grid_sample for 4-D inputs.
- `warp`: resize flow (and occlusion) on the fly + sample + multiply, one read of x, one write.
- `warp_many`: one source sampled by M flows (dense motion's deformed sources).

Kernels take float32/float16/bfloat16 features with any strides (contiguous or channels-last;
outputs follow channels-last inputs) and compute in float32; grids, flows and occlusions are
used in float32. float64 runs on the torch backend (the reference; its outputs take the same
layout). NaN/inf grid coordinates behave as in ATen's CUDA grid sampler on every device
(outside the image: zero with zeros padding); the torch backend is F.grid_sample itself, so on
CPU tensors it gives what ATen's CPU sampler gives (NaN outputs for NaN coordinates), except
that the coordinates ATen's CPU bilinear backward crashes on (NaN with border padding; NaN,
+-inf or an overflowing pixel coordinate with reflection) give no gradient, as on the kernels.
The input gradient is accumulated with fp32 atomics unless `deterministic` (or
`torch.use_deterministic_algorithms(True)`), which sorts the contributions and sums them in a
fixed order: bitwise reproducible.
"""
from __future__ import annotations

from typing import Optional

import torch

from .._dispatch import deterministic_requested, refuse_double_backward, resolve_backend, under_vmap
from ..reference import warp as reference
from ._checks import check_same_device, check_tensor

MODES = {"bilinear": 0, "nearest": 1}
PADDINGS = {"zeros": 0, "border": 1, "reflection": 2}
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _impl(backend: str):
    """(grid_sample module, warp module, warp_many module) of a kernel backend."""
    if backend == "cuda":
        from ..cuda import warp as cuda_warp

        return cuda_warp, cuda_warp, cuda_warp
    from ..kernels import grid_sample as k_grid_sample
    from ..kernels import warp as k_warp
    from ..kernels import warp_many as k_warp_many

    return k_grid_sample, k_warp, k_warp_many


def _out_format(x: torch.Tensor) -> torch.memory_format:
    # must match kernels.grid_sample.output_memory_format and cuda.warp._out_format
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _or_empty(t: Optional[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    return t if t is not None else like.new_empty(0)


def _grad_like(x: torch.Tensor, need: bool) -> torch.Tensor:
    return torch.empty_like(x, memory_format=torch.preserve_format) if need else x.new_empty(0)


def _f32(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return t if t is None or t.dtype == torch.float32 else t.float()


# --------------------------------------------------------------------------- grid_sample
@torch.library.custom_op("mcc_fast::grid_sample", mutates_args=())
def _grid_sample_op(x: torch.Tensor, grid: torch.Tensor, mode: int, padding: int, align_corners: bool,
                    backend: str, deterministic: bool) -> torch.Tensor:
    return _impl(backend)[0].grid_sample_forward(x, grid, mode, padding, align_corners)


@_grid_sample_op.register_fake
def _(x, grid, mode, padding, align_corners, backend, deterministic):
    return torch.empty((x.shape[0], x.shape[1], grid.shape[1], grid.shape[2]), dtype=x.dtype, device=x.device,
                       memory_format=_out_format(x))


@torch.library.custom_op("mcc_fast::grid_sample_backward", mutates_args=())
def _grid_sample_bwd_op(grad_out: torch.Tensor, x: torch.Tensor, grid: torch.Tensor, mode: int, padding: int,
                        align_corners: bool, backend: str, deterministic: bool, need_x: bool,
                        need_grid: bool) -> tuple[torch.Tensor, torch.Tensor]:
    gx, gg = _impl(backend)[0].grid_sample_backward(grad_out, x, grid, mode, padding, align_corners, need_x,
                                                    need_grid, deterministic)
    return _or_empty(gx, x), _or_empty(gg, grid)


@_grid_sample_bwd_op.register_fake
def _(grad_out, x, grid, mode, padding, align_corners, backend, deterministic, need_x, need_grid):
    gg = torch.empty(grid.shape, dtype=torch.float32, device=x.device) if need_grid else grid.new_empty(0)
    return _grad_like(x, need_x), gg


def _grid_sample_setup(ctx, inputs, output):
    x, grid, *cfg = inputs
    ctx.save_for_backward(x, grid)
    ctx.cfg = cfg


def _grid_sample_backward(ctx, grad):
    x, grid = ctx.saved_tensors
    need_x, need_grid = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    gx, gg = _grid_sample_bwd_op(grad, x, grid, *ctx.cfg, need_x, need_grid)
    return (gx if need_x else None), (gg if need_grid else None), None, None, None, None, None


_grid_sample_op.register_autograd(_grid_sample_backward, setup_context=_grid_sample_setup)
refuse_double_backward(_grid_sample_bwd_op, "grid_sample")


# --------------------------------------------------------------------------- warp
@torch.library.custom_op("mcc_fast::warp", mutates_args=())
def _warp_op(x: torch.Tensor, flow: torch.Tensor, occlusion: Optional[torch.Tensor], align_corners: bool,
             backend: str, deterministic: bool) -> torch.Tensor:
    return _impl(backend)[1].warp_forward(x, flow, occlusion, align_corners)


@_warp_op.register_fake
def _(x, flow, occlusion, align_corners, backend, deterministic):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_out_format(x))


@torch.library.custom_op("mcc_fast::warp_backward", mutates_args=())
def _warp_bwd_op(grad_out: torch.Tensor, x: torch.Tensor, flow: torch.Tensor, occlusion: Optional[torch.Tensor],
                 align_corners: bool, backend: str, deterministic: bool, need_x: bool, need_flow: bool,
                 need_occ: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gx, gf, go = _impl(backend)[1].warp_backward(grad_out, x, flow, occlusion, align_corners, need_x, need_flow,
                                                 need_occ, deterministic)
    return _or_empty(gx, x), _or_empty(gf, flow), _or_empty(go, flow)


@_warp_bwd_op.register_fake
def _(grad_out, x, flow, occlusion, align_corners, backend, deterministic, need_x, need_flow, need_occ):
    go = (torch.empty(occlusion.shape, dtype=torch.float32, device=x.device)
          if need_occ and occlusion is not None else flow.new_empty(0))
    gf = torch.empty(flow.shape, dtype=torch.float32, device=x.device) if need_flow else flow.new_empty(0)
    return _grad_like(x, need_x), gf, go


def _warp_setup(ctx, inputs, output):
    x, flow, occ, *cfg = inputs
    ctx.save_for_backward(x, flow, occ)
    ctx.cfg = cfg


def _warp_backward(ctx, grad):
    x, flow, occ = ctx.saved_tensors
    need = ctx.needs_input_grad
    gx, gf, go = _warp_bwd_op(grad, x, flow, occ, *ctx.cfg, need[0], need[1], bool(need[2] and occ is not None))
    return (gx if need[0] else None), (gf if need[1] else None), (go if need[2] else None), None, None, None


_warp_op.register_autograd(_warp_backward, setup_context=_warp_setup)
refuse_double_backward(_warp_bwd_op, "warp")


# --------------------------------------------------------------------------- warp_many
@torch.library.custom_op("mcc_fast::warp_many", mutates_args=())
def _warp_many_op(x: torch.Tensor, flows: torch.Tensor, align_corners: bool, backend: str,
                  deterministic: bool) -> torch.Tensor:
    return _impl(backend)[2].warp_many_forward(x, flows, align_corners)


@_warp_many_op.register_fake
def _(x, flows, align_corners, backend, deterministic):
    b, m, h, w, _ = flows.shape
    return x.new_empty((b, m, x.shape[1], h, w))


@torch.library.custom_op("mcc_fast::warp_many_backward", mutates_args=())
def _warp_many_bwd_op(grad_out: torch.Tensor, x: torch.Tensor, flows: torch.Tensor, align_corners: bool,
                      backend: str, deterministic: bool, need_x: bool,
                      need_flow: bool) -> tuple[torch.Tensor, torch.Tensor]:
    gx, gf = _impl(backend)[2].warp_many_backward(grad_out, x, flows, align_corners, need_x, need_flow,
                                                  deterministic)
    return _or_empty(gx, x), _or_empty(gf, flows)


@_warp_many_bwd_op.register_fake
def _(grad_out, x, flows, align_corners, backend, deterministic, need_x, need_flow):
    gf = torch.empty(flows.shape, dtype=torch.float32, device=x.device) if need_flow else flows.new_empty(0)
    return _grad_like(x, need_x), gf


def _warp_many_setup(ctx, inputs, output):
    x, flows, *cfg = inputs
    ctx.save_for_backward(x, flows)
    ctx.cfg = cfg


def _warp_many_backward(ctx, grad):
    x, flows = ctx.saved_tensors
    need_x, need_flow = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    gx, gf = _warp_many_bwd_op(grad, x, flows, *ctx.cfg, need_x, need_flow)
    return (gx if need_x else None), (gf if need_flow else None), None, None, None


_warp_many_op.register_autograd(_warp_many_backward, setup_context=_warp_many_setup)
refuse_double_backward(_warp_many_bwd_op, "warp_many")


# --------------------------------------------------------------------------- public API
def _choose(backend: str | None, op: str, x: torch.Tensor, *coords: Optional[torch.Tensor]) -> str:
    chosen = resolve_backend(backend, x, *coords, op=op)
    if chosen == "torch":
        return chosen
    wide = x.dtype not in KERNEL_DTYPES or any(t is not None and t.dtype == torch.float64 for t in coords)
    if wide:
        if backend is None:
            return "torch"  # float64: the reference
        dtypes = ", ".join(str(t.dtype) for t in (x, *coords) if t is not None)
        raise TypeError(f"{op}: the {chosen} backend supports float32/float16/bfloat16 tensors, got {dtypes}")
    return chosen


def _keep_layout(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The torch backend's output in the kernels' layout: channels-last when x is."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return out.contiguous(memory_format=torch.channels_last)
    return out


def _unnormalize(coord: torch.Tensor, size: int, align_corners: bool) -> torch.Tensor:
    """[-1, 1] -> pixel coordinate, as ATen's grid_sampler_unnormalize (and the kernels) compute it."""
    if align_corners:
        return (coord + 1.0) * 0.5 * (size - 1.0)
    return ((coord + 1.0) * size - 1.0) * 0.5


def _cpu_backward_unsafe(x: torch.Tensor, grid: torch.Tensor, padding_mode: str,
                         align_corners: bool) -> torch.Tensor:
    """(N, Ho, Wo) bool: output pixels whose coordinates ATen's CPU bilinear backward cannot take
    (it writes out of bounds, a segfault): NaN with border padding; NaN, +-inf or a pixel
    coordinate that overflows with reflection padding."""
    g = grid.detach().to(reference.compute_dtype(x, grid))
    cx = _unnormalize(g[..., 0], x.shape[-1], align_corners)
    cy = _unnormalize(g[..., 1], x.shape[-2], align_corners)
    if padding_mode == "border":
        return torch.isnan(cx) | torch.isnan(cy)
    return ~(torch.isfinite(cx) & torch.isfinite(cy))


def _grid_sample_torch(x: torch.Tensor, grid: torch.Tensor, mode: str, padding_mode: str,
                       align_corners: bool) -> torch.Tensor:
    """The torch backend: F.grid_sample (the reference), in the kernels' layout.

    On CPU, when autograd will differentiate a bilinear border/reflection sampling, the pixels
    `_cpu_backward_unsafe` flags keep ATen's forward value but are sampled outside autograd: they
    give x no gradient and the grid a zero gradient, as on the kernel backends (and ATen's CUDA
    sampler), instead of crashing the process in the backward.
    """
    guard = (x.device.type == "cpu" and mode == "bilinear" and padding_mode != "zeros"
             and torch.is_grad_enabled() and (x.requires_grad or grid.requires_grad))
    if guard:
        bad = _cpu_backward_unsafe(x, grid, padding_mode, align_corners)
        # under vmap / torch.compile the mask cannot be read: always take the guarded form
        if under_vmap() or torch.compiler.is_compiling() or bool(bad.any()):
            with torch.no_grad():
                raw = reference.grid_sample(x, grid, mode, padding_mode, align_corners)
            safe = reference.grid_sample(x, grid.masked_fill(bad[..., None], 0.0), mode, padding_mode,
                                         align_corners)
            return _keep_layout(torch.where(bad[:, None], raw, safe), x)
    return _keep_layout(reference.grid_sample(x, grid, mode, padding_mode, align_corners), x)


def _check_flag(value, name: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def _check_spatial(x: torch.Tensor, name: str) -> None:
    if x.shape[-2] == 0 or x.shape[-1] == 0:
        raise ValueError(f"{name} must have non-empty spatial dimensions, got shape {tuple(x.shape)}")


def _check_coords(t: torch.Tensor, name: str, ndim: int, batch: int) -> None:
    check_tensor(t, name, ndim=ndim)
    if t.shape[-1] != 2:
        raise ValueError(f"{name} must end in 2 (x, y) coordinates, got shape {tuple(t.shape)}")
    if t.shape[0] != batch:
        raise ValueError(f"{name} has batch {t.shape[0]} but x has batch {batch}; they must match")


def grid_sample(x: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros",
                align_corners: bool = False, *, backend: str | None = None,
                deterministic: bool | None = None) -> torch.Tensor:
    """F.grid_sample for 4-D inputs: x (N, C, H, W) sampled at grid (N, Ho, Wo, 2) -> (N, C, Ho, Wo).

    x: float32/float16/bfloat16 (float64 on the torch backend), contiguous or channels-last;
    grid: float32/float16/bfloat16, (x, y) in [-1, 1], used in float32 (float64: torch backend
    only). mode "bilinear" | "nearest"; padding_mode "zeros" | "border" | "reflection". Output in
    x.dtype (channels-last when x is).
    backend: None (auto), "torch", "triton" or "cuda"; deterministic: bitwise-reproducible
    input gradient (None: follow torch.use_deterministic_algorithms).
    """
    check_tensor(x, "x", ndim=4)
    _check_coords(grid, "grid", 4, x.shape[0])
    check_same_device(x=x, grid=grid)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {tuple(MODES)}, got {mode!r}")
    if padding_mode not in PADDINGS:
        raise ValueError(f"padding_mode must be one of {tuple(PADDINGS)}, got {padding_mode!r}")
    _check_flag(align_corners, "align_corners")
    _check_spatial(x, "x")
    det = deterministic_requested(deterministic)
    chosen = _choose(backend, "grid_sample", x, grid)
    if chosen == "torch":
        return _grid_sample_torch(x, grid, mode, padding_mode, align_corners)
    return _grid_sample_op(x, _f32(grid), MODES[mode], PADDINGS[padding_mode], align_corners, chosen, det)


def warp(x: torch.Tensor, flow: torch.Tensor, occlusion: torch.Tensor | None = None, align_corners: bool = True,
         *, backend: str | None = None, deterministic: bool | None = None) -> torch.Tensor:
    """Fused `grid_sample(x, resize(flow)) * resize(occlusion)` (bilinear, zeros padding).

    x: (B, C, H, W) float32/float16/bfloat16, contiguous or channels-last; flow: (B, h, w, 2)
    grid at any resolution, resized bilinearly to (H, W) on the fly exactly as
    F.interpolate(..., align_corners=align_corners) (no resize when already (H, W));
    occlusion: optional (B, 1, h', w'), resized the same way and multiplied in. Flow and
    occlusion are used in float32. Returns (B, C, H, W) in x.dtype.
    """
    check_tensor(x, "x", ndim=4)
    _check_coords(flow, "flow", 4, x.shape[0])
    if occlusion is not None:
        check_tensor(occlusion, "occlusion", ndim=4)
        if occlusion.shape[0] != x.shape[0] or occlusion.shape[1] != 1:
            raise ValueError(f"occlusion must have shape (B={x.shape[0]}, 1, h, w), got {tuple(occlusion.shape)}")
        _check_spatial(occlusion, "occlusion")
    check_same_device(x=x, flow=flow, occlusion=occlusion)
    _check_flag(align_corners, "align_corners")
    _check_spatial(x, "x")
    _check_spatial(flow.movedim(-1, 1), "flow")
    det = deterministic_requested(deterministic)
    chosen = _choose(backend, "warp", x, flow, occlusion)
    if chosen == "torch":
        return _keep_layout(reference.warp(x, flow, occlusion, align_corners), x)
    return _warp_op(x, _f32(flow), _f32(occlusion), align_corners, chosen, det)


def warp_many(x: torch.Tensor, flows: torch.Tensor, align_corners: bool = False, *, backend: str | None = None,
              deterministic: bool | None = None) -> torch.Tensor:
    """One source sampled by M flows: x (B, C, H, W), flows (B, M, h, w, 2) -> (B, M, C, h, w).

    Bilinear, zeros padding (dense motion's deformed sources use align_corners=False). x:
    float32/float16/bfloat16; flows used in float32. The source is read once for all M flows.
    """
    check_tensor(x, "x", ndim=4)
    _check_coords(flows, "flows", 5, x.shape[0])
    check_same_device(x=x, flows=flows)
    _check_flag(align_corners, "align_corners")
    _check_spatial(x, "x")
    det = deterministic_requested(deterministic)
    chosen = _choose(backend, "warp_many", x, flows)
    if chosen == "torch":
        return reference.warp_many(x, flows, align_corners)
    return _warp_many_op(x, _f32(flows), align_corners, chosen, det)
