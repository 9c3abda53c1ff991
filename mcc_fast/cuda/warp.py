"""CUDA wrappers for the warping family (csrc/warp.cu): same functions and contracts as the
Triton launchers in kernels/grid_sample.py, kernels/warp.py and kernels/warp_many.py.

Features are float32/float16/bfloat16 with any strides; grids, flows and occlusions are
float32 (the public ops cast them). Outputs are allocated here with torch.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from . import extension
from ._common import current_stream, dtype_code


def resize_scale(in_size: int, out_size: int, align: bool) -> float:
    """ATen's area_pixel_compute_scale in float32 (returned as the exact Python float)."""
    if align:
        return float(np.float32(in_size - 1) / np.float32(out_size - 1)) if out_size > 1 else 0.0
    return float(np.float32(in_size) / np.float32(out_size))


def _out_format(x: torch.Tensor) -> torch.memory_format:
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _geometry(ext, x, coords, coord_strides, m, ho, wo, out_strides, mode, padding, align, occ=None):
    g = ext.SampleGeometry()
    g.B, g.C, g.H, g.W = x.shape
    g.x_strides = list(x.stride())
    g.M, g.fh, g.fw = m, coords.shape[-3], coords.shape[-2]
    g.flow_strides = list(coord_strides)
    g.Ho, g.Wo = ho, wo
    g.out_strides = list(out_strides)
    g.mode, g.padding, g.align = mode, padding, align
    g.resize_flow = (g.fh, g.fw) != (ho, wo)
    g.flow_scale_y, g.flow_scale_x = resize_scale(g.fh, ho, align), resize_scale(g.fw, wo, align)
    if occ is not None:
        g.has_occ = True
        g.oh, g.ow = occ.shape[2], occ.shape[3]
        g.occ_strides = [occ.stride(0), occ.stride(2), occ.stride(3)]
        g.resize_occ = (g.oh, g.ow) != (ho, wo)
        g.occ_scale_y, g.occ_scale_x = resize_scale(g.oh, ho, align), resize_scale(g.ow, wo, align)
    return g


def _four(t: torch.Tensor) -> list[int]:
    """Strides of a (B, C, H, W) tensor as (b, m=0, c, h, w)."""
    s = t.stride()
    return [s[0], 0, s[1], s[2], s[3]]


def _coords4(t: torch.Tensor) -> list[int]:
    """Strides of a (B, h, w, 2) grid as (b, m=0, h, w, k)."""
    s = t.stride()
    return [s[0], 0, s[1], s[2], s[3]]


def _ptr(t: torch.Tensor | None) -> int:
    return t.data_ptr() if t is not None else 0


def _forward(ext, x, coords, occ, out, g):
    with torch.cuda.device(x.device):
        ext.sample_forward(x.data_ptr(), coords.data_ptr(), _ptr(occ), out.data_ptr(), g, dtype_code(x, "x"),
                           current_stream(x))
    return out


def _backward(ext, grad_out, x, coords, occ, g, need_x, need_flow, need_occ, deterministic, entries):
    """Runs the backward kernel (+ the deterministic gather). Returns (grad_x, grad_coords, grad_occ),
    grad_coords fp32 (B*M*Ho*Wo, 2) flat, grad_occ fp32 (B*Ho*Wo) flat."""
    q = g.B * g.M * g.Ho * g.Wo
    det = need_x and deterministic
    if need_x:
        grad_x = (torch.empty_like(x, memory_format=torch.preserve_format) if det
                  else torch.zeros_like(x, dtype=torch.float32, memory_format=torch.preserve_format))
    else:
        grad_x = None
    gflow = torch.empty((q, 2), dtype=torch.float32, device=x.device) if need_flow else None
    gocc = torch.empty(q, dtype=torch.float32, device=x.device) if need_occ else None
    keys = torch.empty(q * entries, dtype=torch.int64, device=x.device) if det else None
    wts = torch.empty(q * entries, dtype=torch.float32, device=x.device) if det else None
    gx_strides = list(grad_x.stride()) if grad_x is not None else [0, 0, 0, 0]
    with torch.cuda.device(x.device):
        stream = current_stream(x)
        ext.sample_backward(grad_out.data_ptr(), x.data_ptr(), coords.data_ptr(), _ptr(occ), g,
                            0 if det else _ptr(grad_x), gx_strides, _ptr(gflow), _ptr(gocc), _ptr(keys), _ptr(wts),
                            dtype_code(x, "x"), stream)
        if det:
            t = g.B * g.H * g.W
            sorted_keys, perm = torch.sort(keys, stable=True)
            bounds = torch.searchsorted(sorted_keys, torch.arange(t + 1, device=x.device, dtype=torch.int64))
            ext.gather_input_grad(bounds.data_ptr(), perm.data_ptr(), wts.data_ptr(), entries, grad_out.data_ptr(),
                                  g, grad_x.data_ptr(), gx_strides, dtype_code(x, "x"), stream)
    if grad_x is not None and grad_x.dtype != x.dtype:
        grad_x = grad_x.to(x.dtype)
    return grad_x, gflow, gocc


def resize_backward(g_hi: torch.Tensor, size: tuple[int, int], align: bool) -> torch.Tensor:
    """Adjoint of the bilinear resize (h, w) -> (H, W): (B, H, W, K) fp32 -> (B, h, w, K) fp32."""
    ext = extension(device=g_hi.device)
    b, hh, ww, k = g_hi.shape
    h, w = size
    cur = g_hi.contiguous()
    with torch.cuda.device(g_hi.device):
        stream = current_stream(g_hi)
        for axis, lo, hi in ((2, w, ww), (1, h, hh)):
            if lo == hi:
                continue
            if axis == 2:
                out = torch.empty((b, hh, lo, k), dtype=torch.float32, device=g_hi.device)
                a, e = hh, k
                ss, st = list(cur.stride()), list(out.stride())
            else:
                out = torch.empty((b, lo, cur.shape[2], k), dtype=torch.float32, device=g_hi.device)
                a, e = 1, cur.shape[2] * k
                ss, st = [cur.stride(0), 0, cur.stride(1), 1], [out.stride(0), 0, out.stride(1), 1]
            scale = resize_scale(lo, hi, align)
            window = min(hi, math.ceil(2.0 / scale) + 6) if scale > 0 else hi
            ext.resize_backward_axis(cur.data_ptr(), ss, out.data_ptr(), st, b, a, lo, e, hi, scale,
                                     1.0 / scale if scale > 0 else 0.0, window, align, stream)
            cur = out
    return cur


def grid_sample_forward(x: torch.Tensor, grid: torch.Tensor, mode: int, padding: int, align: bool) -> torch.Tensor:
    """x (N, C, H, W), grid (N, Ho, Wo, 2) fp32 -> (N, C, Ho, Wo) in x.dtype and layout."""
    ext = extension(device=x.device)
    n, c = x.shape[:2]
    ho, wo = grid.shape[1], grid.shape[2]
    out = torch.empty((n, c, ho, wo), dtype=x.dtype, device=x.device, memory_format=_out_format(x))
    if out.numel() == 0:
        return out
    g = _geometry(ext, x, grid, _coords4(grid), 1, ho, wo, _four(out), mode, padding, align)
    return _forward(ext, x, grid, None, out, g)


def grid_sample_backward(grad_out, x, grid, mode, padding, align, need_x, need_grid, deterministic):
    """Returns (grad_x in x.dtype | None, grad_grid fp32 (N, Ho, Wo, 2) | None)."""
    ext = extension(device=grad_out.device)
    n, ho, wo = grid.shape[0], grid.shape[1], grid.shape[2]
    if not (need_x or need_grid):
        return None, None
    g = _geometry(ext, x, grid, _coords4(grid), 1, ho, wo, _four(grad_out), mode, padding, align)
    gx, gg, _ = _backward(ext, grad_out, x, grid, None, g, need_x, need_grid, False, deterministic,
                          4 if mode == 0 else 1)
    return gx, (gg.view(n, ho, wo, 2) if gg is not None else None)


def warp_forward(x: torch.Tensor, flow: torch.Tensor, occ: torch.Tensor | None, align: bool) -> torch.Tensor:
    """x (B, C, H, W); flow (B, h, w, 2) fp32; occ (B, 1, h', w') fp32 or None -> (B, C, H, W)."""
    ext = extension(device=x.device)
    h, w = x.shape[2], x.shape[3]
    out = torch.empty_like(x, memory_format=_out_format(x))
    if out.numel() == 0:
        return out
    g = _geometry(ext, x, flow, _coords4(flow), 1, h, w, _four(out), 0, 0, align, occ)
    return _forward(ext, x, flow, occ, out, g)


def warp_backward(grad_out, x, flow, occ, align, need_x, need_flow, need_occ, deterministic):
    """Returns (grad_x | None, grad_flow fp32 (B, h, w, 2) | None, grad_occ fp32 (B, 1, h', w') | None)."""
    ext = extension(device=grad_out.device)
    b, h, w = x.shape[0], x.shape[2], x.shape[3]
    need_occ = need_occ and occ is not None
    if not (need_x or need_flow or need_occ):
        return None, None, None
    g = _geometry(ext, x, flow, _coords4(flow), 1, h, w, _four(grad_out), 0, 0, align, occ)
    gx, gf, go = _backward(ext, grad_out, x, flow, occ, g, need_x, need_flow, need_occ, deterministic, 4)
    if gf is not None:
        gf = resize_backward(gf.view(b, h, w, 2), (flow.shape[1], flow.shape[2]), align)
    if go is not None:
        go = resize_backward(go.view(b, h, w, 1), (occ.shape[2], occ.shape[3]), align).view(occ.shape)
    return gx, gf, go


def warp_many_forward(x: torch.Tensor, flows: torch.Tensor, align: bool) -> torch.Tensor:
    """x (B, C, H, W); flows (B, M, h, w, 2) fp32 -> (B, M, C, h, w) contiguous, x.dtype."""
    ext = extension(device=x.device)
    b, c = x.shape[:2]
    m, ho, wo = flows.shape[1], flows.shape[2], flows.shape[3]
    out = torch.empty((b, m, c, ho, wo), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    g = _geometry(ext, x, flows, flows.stride(), m, ho, wo, out.stride(), 0, 0, align)
    return _forward(ext, x, flows, None, out, g)


def warp_many_backward(grad_out, x, flows, align, need_x, need_flow, deterministic):
    """Returns (grad_x | None, grad_flows fp32 (B, M, h, w, 2) | None)."""
    ext = extension(device=grad_out.device)
    b, m, ho, wo = flows.shape[:4]
    if not (need_x or need_flow):
        return None, None
    g = _geometry(ext, x, flows, flows.stride(), m, ho, wo, grad_out.stride(), 0, 0, align)
    gx, gf, _ = _backward(ext, grad_out, x, flows, None, g, need_x, need_flow, False, deterministic, 4)
    return gx, (gf.view(b, m, ho, wo, 2) if gf is not None else None)
