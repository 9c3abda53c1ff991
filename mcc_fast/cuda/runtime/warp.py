"""Run-time launchers of the warping kernels: the host code of csrc/warp.cu over NVRTC-compiled
csrc/warp_kernels.cuh. Same functions and arguments as mcc_fast._cuda's (see csrc/warp.h)."""
from __future__ import annotations

import ctypes

from .launch import BOOL, F32, I32, I64, PTR, Family, Kernel

# csrc/warp_kernels.cuh (tests/test_cuda_runtime.py checks they agree)
THREADS = 256
CHANNELS_PER_THREAD = 4
INDEX32_LIMIT = 2**30  # kIndex32Limit: below it the kernels decompose their indices in 32 bits
_INT_MAX = 2**31 - 1


class SampleGeometry(ctypes.Structure):
    """csrc/warp_types.h SampleGeometry, field for field, with the same defaults. Array fields
    accept lists, like the compiled module's class."""

    _fields_ = [
        ("B", ctypes.c_int64), ("C", ctypes.c_int64), ("H", ctypes.c_int64), ("W", ctypes.c_int64),
        ("x_strides", ctypes.c_int64 * 4),
        ("M", ctypes.c_int64), ("fh", ctypes.c_int64), ("fw", ctypes.c_int64),
        ("flow_strides", ctypes.c_int64 * 5),
        ("has_occ", ctypes.c_bool),
        ("oh", ctypes.c_int64), ("ow", ctypes.c_int64),
        ("occ_strides", ctypes.c_int64 * 3),
        ("Ho", ctypes.c_int64), ("Wo", ctypes.c_int64),
        ("out_strides", ctypes.c_int64 * 5),
        ("mode", ctypes.c_int), ("padding", ctypes.c_int),
        ("align", ctypes.c_bool), ("resize_flow", ctypes.c_bool), ("resize_occ", ctypes.c_bool),
        ("flow_scale_y", ctypes.c_float), ("flow_scale_x", ctypes.c_float),
        ("occ_scale_y", ctypes.c_float), ("occ_scale_x", ctypes.c_float),
    ]

    def __init__(self):
        super().__init__()
        self.M = self.oh = self.ow = 1
        self.flow_scale_y = self.flow_scale_x = self.occ_scale_y = self.occ_scale_x = 1.0

    def __setattr__(self, name, value):
        if isinstance(value, list):
            value = tuple(value)
        super().__setattr__(name, value)


_G = SampleGeometry
_PARAMS = {
    "forward": ("sample_forward_kernel<{T}, {I}>", (PTR, PTR, PTR, PTR, _G, I64, BOOL)),
    "backward": ("sample_backward_kernel<{T}, {I}>", (PTR, PTR, PTR, PTR, _G, PTR, I64, I64, I64, I64, PTR, PTR, PTR,
                                                      PTR)),
    "gather": ("gather_input_grad_kernel<{T}, {I}>", (PTR, PTR, PTR, I32, PTR, _G, PTR, I64, I64, I64, I64, BOOL)),
    "resize_backward": ("resize_backward_axis_kernel<{I}>", (PTR, I64, I64, I64, I64, PTR, I64, I64, I64, I64, I64,
                                                             I64, I64, I64, I64, F32, F32, I64, BOOL)),
}
# "<name>" decomposes its indices in int, "<name>_i64" in 64 bits (see INDEX32_LIMIT)
FAMILY = Family("warp_kernels.cuh", {
    f"{key}{suffix}": Kernel("mcc::" + name.replace("{I}", index), params)
    for key, (name, params) in _PARAMS.items() for suffix, index in (("", "int"), ("_i64", "mcc::I64"))
})


def _kernel(key: str, *index_bounds: int) -> str:
    return key if max(index_bounds) < INDEX32_LIMIT else f"{key}_i64"


def _grid_for(total: int) -> int:
    return min(max((total + THREADS - 1) // THREADS, 1), _INT_MAX)


def sample_forward(x, flow, occ, out, geometry, dtype, stream):
    """See csrc/warp.h."""
    g = geometry
    groups = (g.C + CHANNELS_PER_THREAD - 1) // CHANNELS_PER_THREAD
    total = g.B * g.M * g.Ho * g.Wo * groups
    if total == 0:
        return
    channel_fast = g.out_strides[2] == 1 and g.C > 1
    FAMILY.launch(_kernel("forward", total), _grid_for(total), THREADS, stream, x, flow, occ, out, g, groups,
                  channel_fast, dtype=dtype)


def sample_backward(grad_out, x, flow, occ, geometry, grad_x, gx_strides, grad_flow, grad_occ, keys, weights, dtype,
                    stream):
    """See csrc/warp.h."""
    g = geometry
    total = g.B * g.M * g.Ho * g.Wo
    if total == 0:
        return
    if grad_occ != 0 and g.M != 1:
        raise ValueError("sample_backward: grad_occ needs M == 1")
    FAMILY.launch(_kernel("backward", total), _grid_for(total), THREADS, stream, grad_out, x, flow, occ, g, grad_x,
                  *gx_strides, grad_flow, grad_occ, keys, weights, dtype=dtype)


def gather_input_grad(bounds, perm, weights, entries, grad_out, geometry, grad_x, gx_strides, dtype, stream):
    """See csrc/warp.h."""
    g = geometry
    total = g.B * g.H * g.W * g.C
    if total == 0:
        return
    if entries not in (1, 4):
        raise ValueError("gather_input_grad: entries must be 1 or 4")
    channel_fast = gx_strides[1] == 1 and g.C > 1
    kernel = _kernel("gather", total, entries * g.B * g.M * g.Ho * g.Wo)
    FAMILY.launch(kernel, _grid_for(total), THREADS, stream, bounds, perm, weights, entries, grad_out, g, grad_x,
                  *gx_strides, channel_fast, dtype=dtype)


def resize_backward_axis(src, src_strides, dst, dst_strides, B, A, lo, E, hi, scale, inv_scale, window, align,
                         stream):
    """See csrc/warp.h."""
    total = B * A * lo * E
    if total == 0:
        return
    FAMILY.launch(_kernel("resize_backward", total), _grid_for(total), THREADS, stream, src, *src_strides, dst,
                  *dst_strides, B, A, lo, E, hi, scale, inv_scale, window, align)
