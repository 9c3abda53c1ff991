"""Triton many-flow warp: one source sampled by M flows (dense motion's K+1 deformed sources).

out[b, m] = grid_sample(x[b], flows[b, m]) (bilinear, zeros padding) without expanding the
source M times: every (b, m, pixel-block) program reads the same x[b], which stays in cache,
so the source is read from memory once for all M flows. Backward: per-pixel flow gradients,
the input gradient summed over all M flows (atomics, or the deterministic sorted gather).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .grid_sample import (
    _idx, bilinear_backward_tile, bilinear_entries, bilinear_sample_store, block_sizes, channel_split,
    channels_last_tile, gather_input_grad, grad_buffer, needs_int64, program_tile, source_index, source_index_grad,
    sum_splits,
)
from ._device import on_tensor_device


@triton.jit
def _warp_many_fwd_kernel(
    x_ptr, flow_ptr, out_ptr,
    C, H, W, M, Wo, P, NB, NS, CPP,
    sxn, sxc, sxh, sxw, sfb, sfm, sfh, sfw, sfk, sob, som, soc, sop,
    ALIGN: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, INT64: tl.constexpr, CL: tl.constexpr,
):
    bm, pb, cs, c_lo, c_hi = program_tile(NB, NS, CPP, C)
    b = _idx(bm // M, INT64)
    m = _idx(bm % M, INT64)
    p = pb * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < P
    f = flow_ptr + b * sfb + m * sfm + _idx(p // Wo, INT64) * sfh + _idx(p % Wo, INT64) * sfw
    ix = source_index(tl.load(f, mask=pm, other=0.0).to(tl.float32), W, 0, ALIGN)
    iy = source_index(tl.load(f + sfk, mask=pm, other=0.0).to(tl.float32), H, 0, ALIGN)
    o_base = out_ptr + b * sob + m * som + _idx(p, INT64) * sop
    bilinear_sample_store(x_ptr + b * sxn, o_base, ix, iy, pm, ix, c_lo, c_hi, H, W, sxc, sxh, sxw, soc,
                          False, BLOCK_C, INT64, CL)


@triton.jit
def _warp_many_bwd_kernel(
    go_ptr, x_ptr, flow_ptr, gx_ptr, gflow_ptr, key_ptr, wt_ptr,
    C, H, W, M, Wo, P, NB, NS, CPP, Q, sentinel,
    sgob, sgom, sgoc, sgoh, sgow, sxn, sxc, sxh, sxw, sfb, sfm, sfh, sfw, sfk, sdn, sdc, sdh, sdw,
    ALIGN: tl.constexpr, ATOMIC_X: tl.constexpr, ENTRIES_X: tl.constexpr, NEED_FLOW: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, INT64: tl.constexpr, CL: tl.constexpr,
):
    bm, pb, cs, c_lo, c_hi = program_tile(NB, NS, CPP, C)
    b = _idx(bm // M, INT64)
    m = _idx(bm % M, INT64)
    p = pb * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < P
    oy = _idx(p // Wo, INT64)
    ox = _idx(p % Wo, INT64)
    f = flow_ptr + b * sfb + m * sfm + oy * sfh + ox * sfw
    ix, mx = source_index_grad(tl.load(f, mask=pm, other=0.0).to(tl.float32), W, 0, ALIGN)
    iy, my = source_index_grad(tl.load(f + sfk, mask=pm, other=0.0).to(tl.float32), H, 0, ALIGN)
    go_base = go_ptr + b * sgob + m * sgom + oy * sgoh + ox * sgow
    gix, giy, _gv = bilinear_backward_tile(
        go_base, x_ptr + b * sxn, gx_ptr + b * sdn, ix, iy, pm, ix, c_lo, c_hi, H, W,
        sgoc, sxc, sxh, sxw, sdc, sdh, sdw,
        False, ATOMIC_X, NEED_FLOW, False, BLOCK_P, BLOCK_C, INT64, CL)
    q = (b * M + m) * P + p  # row of the (B*M*P, 2) flow gradient; block of deterministic entries
    qs = cs.to(tl.int64) * Q + q  # the flow gradient of channel split cs (summed on the host)
    if ENTRIES_X:
        bilinear_entries(key_ptr, wt_ptr, q, ix, iy, pm & (cs == 0), b, ix, H, W, sentinel, False)
    if NEED_FLOW:
        tl.store(gflow_ptr + qs * 2, gix * mx, mask=pm)
        tl.store(gflow_ptr + qs * 2 + 1, giy * my, mask=pm)


@on_tensor_device
def warp_many_forward(x: torch.Tensor, flows: torch.Tensor, align: bool) -> torch.Tensor:
    """x (B, C, H, W) fp32/fp16/bf16; flows (B, M, h, w, 2) fp32 -> (B, M, C, h, w) contiguous, x.dtype."""
    b, c, h, w = x.shape
    m, ho, wo = flows.shape[1], flows.shape[2], flows.shape[3]
    out = torch.empty((b, m, c, ho, wo), dtype=x.dtype, device=x.device)
    p = ho * wo
    if out.numel() == 0:
        return out
    cl = channels_last_tile(x)
    block_p, block_c = block_sizes(c, cl)
    nb = triton.cdiv(p, block_p)
    ns, cpp = channel_split(b * m * nb, c, block_c, x.device)
    _warp_many_fwd_kernel[(b * m * nb * ns,)](
        x, flows, out, c, h, w, m, wo, p, nb, ns, cpp, *x.stride(), *flows.stride(),
        out.stride(0), out.stride(1), out.stride(2), out.stride(4),
        ALIGN=align, BLOCK_P=block_p, BLOCK_C=block_c, INT64=needs_int64(x, flows, out), CL=cl,
    )
    return out


@on_tensor_device
def warp_many_backward(grad_out: torch.Tensor, x: torch.Tensor, flows: torch.Tensor, align: bool,
                       need_x: bool, need_flow: bool, deterministic: bool):
    """Returns (grad_x in x.dtype | None, grad_flows fp32 (B, M, h, w, 2) | None)."""
    b, c, h, w = x.shape
    m, ho, wo = flows.shape[1], flows.shape[2], flows.shape[3]
    p = ho * wo
    if not (need_x or need_flow):
        return None, None
    det = need_x and deterministic
    grad_x = grad_buffer(x, det) if need_x else None
    cl = channels_last_tile(x)
    block_p, block_c = block_sizes(c, cl, backward=True)
    nb = triton.cdiv(p, block_p)
    q = b * m * p
    ns, cpp = channel_split(b * m * nb, c, block_c, x.device)
    gflow = torch.empty((ns, b, m, ho, wo, 2), dtype=torch.float32, device=x.device) if need_flow else None
    keys = torch.empty(q * 4 if det else 1, dtype=torch.int64, device=x.device)
    wts = torch.empty(q * 4 if det else 1, dtype=torch.float32, device=x.device)
    if q > 0:
        _warp_many_bwd_kernel[(b * m * nb * ns,)](
            grad_out, x, flows, grad_x if grad_x is not None else wts, gflow if gflow is not None else wts, keys, wts,
            c, h, w, m, wo, p, nb, ns, cpp, q, b * h * w, *grad_out.stride(), *x.stride(), *flows.stride(),
            *(grad_x.stride() if grad_x is not None else (0, 0, 0, 0)),
            ALIGN=align, ATOMIC_X=need_x and not det, ENTRIES_X=det, NEED_FLOW=need_flow,
            BLOCK_P=block_p, BLOCK_C=block_c, INT64=needs_int64(grad_out, x, flows, grad_x), CL=cl,
        )
        if det:
            go_strides = (grad_out.stride(0), grad_out.stride(1), grad_out.stride(2), grad_out.stride(3),
                          grad_out.stride(4))
            gather_input_grad(keys, wts, grad_out, grad_x, 4, go_strides, m, wo, p)
    elif det:
        grad_x.zero_()
    if grad_x is not None and grad_x.dtype != x.dtype:
        grad_x = grad_x.to(x.dtype)
    return grad_x, (sum_splits(gflow) if gflow is not None else None)


_INTS = ["C", "H", "W", "M", "Wo", "P", "NB", "NS", "CPP"]
_FS = ["sxn", "sxc", "sxh", "sxw", "sfb", "sfm", "sfh", "sfw", "sfk"]

# Representative compilations checked in CI for sm_86/sm_90 (tests/test_triton_compile.py).
COMPILE_SPECS = [
    dict(fn=_warp_many_fwd_kernel, name=f"warp_many_fwd[{t},C{bc}]",
         signature={"x_ptr": f"*{t}", "flow_ptr": "*fp32", "out_ptr": f"*{t}",
                    **{k: "i32" for k in _INTS + _FS + ["sob", "som", "soc", "sop"]}},
         constexprs={"ALIGN": al, "BLOCK_P": 512 // bc, "BLOCK_C": bc, "INT64": False, "CL": cl})
    for t, bc, al, cl in [("fp32", 4, False, False), ("bf16", 4, False, True), ("fp16", 32, True, True)]
] + [
    dict(fn=_warp_many_bwd_kernel, name=f"warp_many_bwd[{t},det{int(det)}]",
         signature={"go_ptr": f"*{t}", "x_ptr": f"*{t}", "flow_ptr": "*fp32", "gx_ptr": "*fp32",
                    "gflow_ptr": "*fp32", "key_ptr": "*i64", "wt_ptr": "*fp32",
                    **{k: "i32" for k in _INTS + ["Q", "sentinel", "sgob", "sgom", "sgoc", "sgoh", "sgow"] + _FS
                       + ["sdn", "sdc", "sdh", "sdw"]}},
         constexprs={"ALIGN": False, "ATOMIC_X": not det, "ENTRIES_X": det, "NEED_FLOW": True,
                     "BLOCK_P": 64, "BLOCK_C": 4, "INT64": False, "CL": cl})
    for t, det, cl in [("fp32", False, False), ("bf16", True, True)]
]
