"""Run-time launchers of the dense-motion kernels: the host code of csrc/dense_motion.cu over
NVRTC-compiled csrc/dense_motion_kernels.cuh. Same functions and arguments as
mcc_fast._cuda's (see csrc/dense_motion.h)."""
from __future__ import annotations

from .launch import BOOL, F32, I32, I64, PTR, Family, Kernel

THREADS = 256  # csrc/dense_motion_kernels.cuh kThreads (tests/test_cuda_runtime.py checks it)
dense_motion_block_pixels = THREADS  # an attribute, as in the compiled module

_KP = (PTR, PTR, PTR, PTR, BOOL)  # kp_source, kp_driving, jac_source, jac_driving, has_jac
FAMILY = Family("dense_motion_kernels.cuh", {
    "heatmaps": Kernel("mcc::keypoint_heatmaps_kernel<{T}>", (PTR, PTR, I32, I32, I32, F32)),
    "sparse": Kernel("mcc::sparse_motions_kernel<{T}>", (*_KP, PTR, I32, I32, I32)),
    "input_fwd": Kernel("mcc::dense_motion_input_fwd_kernel<{T}>", (PTR, I64, I64, I64, I64, *_KP, BOOL, PTR, I32,
                                                                    I32, I32, I32, F32)),
    "compose_fwd": Kernel("mcc::compose_flow_fwd_kernel<{T}>", (PTR, I64, I64, I64, I64, *_KP, PTR, PTR, I32, I32,
                                                                I32)),
    "input_bwd": Kernel("mcc::dense_motion_input_bwd_kernel<{T}>", (PTR, PTR, I64, I64, I64, I64, *_KP, BOOL, PTR,
                                                                    PTR, I32, I32, I32, I32, I32, F32)),
    "compose_bwd": Kernel("mcc::compose_flow_bwd_kernel<{T}>", (PTR, PTR, I64, I64, I64, I64, PTR, I64, I64, I64,
                                                                I64, PTR, PTR, *_KP, PTR, I32, I32, I32, I32)),
})


def _pixel_grid(height: int, width: int, y: int, z: int, what: str) -> tuple[int, int, int]:
    if height * width > (1 << 30) or y > 65535 or z > 65535:
        raise ValueError(f"{what}: sizes out of range (H*W <= 2^30, groups and batch <= 65535)")
    return ((height * width + THREADS - 1) // THREADS, y, z)


def keypoint_heatmaps_forward(kp, batch, num_kp, height, width, variance, out_dtype, out, stream):
    """See csrc/dense_motion.h."""
    if batch * num_kp * height * width == 0:
        return
    grid = _pixel_grid(height, width, num_kp, batch, "keypoint_heatmaps")
    FAMILY.launch("heatmaps", grid, THREADS, stream, kp, out, height, width, num_kp, variance, dtype=out_dtype)


def sparse_motions_forward(kp_source, kp_driving, jac_source, jac_driving, has_jac, batch, num_kp, height, width,
                           out_dtype, out, stream):
    """See csrc/dense_motion.h."""
    if batch * height * width == 0:
        return
    grid = _pixel_grid(height, width, num_kp + 1, batch, "sparse_motions")
    FAMILY.launch("sparse", grid, THREADS, stream, kp_source, kp_driving, jac_source, jac_driving, has_jac, out,
                  height, width, num_kp, dtype=out_dtype)


def dense_motion_input_forward(source, stride_b, stride_c, stride_h, stride_w, batch, channels, height, width, dtype,
                               kp_source, kp_driving, jac_source, jac_driving, has_jac, num_kp, align_corners,
                               variance, out, stream):
    """See csrc/dense_motion.h."""
    if batch * height * width == 0:
        return
    grid = _pixel_grid(height, width, num_kp + 1, batch, "dense_motion_input")
    FAMILY.launch("input_fwd", grid, THREADS, stream, source, stride_b, stride_c, stride_h, stride_w, kp_source,
                  kp_driving, jac_source, jac_driving, has_jac, align_corners, out, channels, height, width, num_kp,
                  variance, dtype=dtype)


def dense_motion_input_backward(grad, source, stride_b, stride_c, stride_h, stride_w, batch, channels, height, width,
                                dtype, kp_source, kp_driving, jac_source, jac_driving, has_jac, num_kp, align_corners,
                                variance, source_grad, partial, num_blocks, stream):
    """See csrc/dense_motion.h."""
    if batch * height * width == 0:
        return
    grid = _pixel_grid(height, width, num_kp + 1, batch, "dense_motion_input_backward")
    if grid[0] != num_blocks:
        raise ValueError("dense_motion_input_backward: num_blocks must be ceil(H * W / block_pixels)")
    FAMILY.launch("input_bwd", grid, THREADS, stream, grad, source, stride_b, stride_c, stride_h, stride_w,
                  kp_source, kp_driving, jac_source, jac_driving, has_jac, align_corners, source_grad, partial,
                  channels, height, width, num_kp, num_blocks, variance, dtype=dtype)


def compose_flow_forward(logits, stride_b, stride_c, stride_h, stride_w, batch, groups, height, width, dtype,
                         kp_source, kp_driving, jac_source, jac_driving, has_jac, flow, stats, stream):
    """See csrc/dense_motion.h."""
    if batch * height * width == 0:
        return
    grid = _pixel_grid(height, width, batch, 1, "compose_flow")
    FAMILY.launch("compose_fwd", grid, THREADS, stream, logits, stride_b, stride_c, stride_h, stride_w, kp_source,
                  kp_driving, jac_source, jac_driving, has_jac, flow, stats, height, width, groups - 1, dtype=dtype)


def compose_flow_backward(grad, logits, stride_b, stride_c, stride_h, stride_w, dlogits, dstride_b, dstride_c,
                          dstride_h, dstride_w, batch, groups, height, width, dtype, flow, stats, kp_source, kp_driving,
                          jac_source, jac_driving, has_jac, partial, num_blocks, stream):
    """See csrc/dense_motion.h."""
    if batch * height * width == 0:
        return
    grid = _pixel_grid(height, width, groups, batch, "compose_flow_backward")
    if grid[0] != num_blocks:
        raise ValueError("compose_flow_backward: num_blocks must be ceil(H * W / block_pixels)")
    FAMILY.launch("compose_bwd", grid, THREADS, stream, grad, logits, stride_b, stride_c, stride_h, stride_w, dlogits,
                  dstride_b, dstride_c, dstride_h, dstride_w, flow, stats, kp_source, kp_driving, jac_source,
                  jac_driving, has_jac, partial, height, width, groups - 1, num_blocks, dtype=dtype)
