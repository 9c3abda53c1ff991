"""Triton device helpers shared by the dense-motion kernels (no kernels here, no COMPILE_SPECS).

Per keypoint k the whole dense motion is a function of 12 numbers: kp_s (2), kp_d (2),
J_s (4), J_d (4). The sparse motion is the affine map T_k(z) = A_k (z - kp_d) + kp_s with
A_k = J_s inverse_2x2(J_d), the inverse in closed form (adjugate / det, in fp32): a
singular J_d gives inf/nan like the division does. Parameters are read as contiguous
float32 tensors: kp (B, K, 2), jac (B, K, 2, 2).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def pixel_grid(offs, H, W):
    """(x, y) of flattened pixel indices on the (H, W) coordinate grid, [-1, 1], fp32."""
    row = offs // W
    col = offs - row * W
    zx = 2.0 * (col.to(tl.float32) / (W - 1)) - 1.0
    zy = 2.0 * (row.to(tl.float32) / (H - 1)) - 1.0
    return zx, zy


@triton.jit
def load_keypoint(kp_ptr, bk):
    """(x, y) of keypoint bk = b * K + k of a contiguous (B, K, 2) fp32 tensor."""
    base = kp_ptr + bk.to(tl.int64) * 2
    return tl.load(base), tl.load(base + 1)


@triton.jit
def load_jacobian(jac_ptr, bk):
    """The 4 entries (row-major) of jacobian bk of a contiguous (B, K, 2, 2) fp32 tensor."""
    base = jac_ptr + bk.to(tl.int64) * 4
    return tl.load(base), tl.load(base + 1), tl.load(base + 2), tl.load(base + 3)


@triton.jit
def inverse_2x2(d00, d01, d10, d11):
    """Closed-form inverse adj / det, entry by entry as the torch reference computes it."""
    det = d00 * d11 - d01 * d10
    return d11 / det, -d01 / det, -d10 / det, d00 / det


@triton.jit
def keypoint_affine(js_ptr, jd_ptr, bk, HAS_JAC: tl.constexpr):
    """A = J_s @ inverse_2x2(J_d) for keypoint bk (the identity without jacobians)."""
    if HAS_JAC:
        s00, s01, s10, s11 = load_jacobian(js_ptr, bk)
        d00, d01, d10, d11 = load_jacobian(jd_ptr, bk)
        i00, i01, i10, i11 = inverse_2x2(d00, d01, d10, d11)
        a00 = s00 * i00 + s01 * i10
        a01 = s00 * i01 + s01 * i11
        a10 = s10 * i00 + s11 * i10
        a11 = s10 * i01 + s11 * i11
    else:
        a00 = 1.0
        a01 = 0.0
        a10 = 0.0
        a11 = 1.0
    return a00, a01, a10, a11


@triton.jit
def apply_motion(zx, zy, ksx, ksy, kdx, kdy, a00, a01, a10, a11, HAS_JAC: tl.constexpr):
    """T(z) = A (z - kp_d) + kp_s (a pure translation without jacobians)."""
    ox = zx - kdx
    oy = zy - kdy
    if HAS_JAC:
        tx = a00 * ox + a01 * oy
        ty = a10 * ox + a11 * oy
    else:
        tx = ox
        ty = oy
    return tx + ksx, ty + ksy


@triton.jit
def gaussian(zx, zy, kx, ky, variance):
    """exp(-0.5 |z - kp|^2 / variance), fp32."""
    dx = zx - kx
    dy = zy - ky
    return tl.exp(-0.5 * (dx * dx + dy * dy) / variance)


@triton.jit
def store_keypoint_grads(part_ptr, gks_x, gks_y, gkd_x, gkd_y, ga00, ga01, ga10, ga11,
                         js_ptr, jd_ptr, bk, HAS_JAC: tl.constexpr):
    """Write one block's 12 partial gradients [kp_s(2), kp_d(2), J_s(4), J_d(4)] at part_ptr.

    gks/gkd: gradients w.r.t. kp_s / kp_d (the motion's dkp_d = -A^T sum(g) must already be
    included); ga: gradient w.r.t. A = J_s D, D = inverse(J_d), chained here:
    dJ_s = dA D^T, dD = J_s^T dA, dJ_d = -D^T dD D^T. Without jacobians slots 4..11 are 0.
    """
    tl.store(part_ptr + 0, gks_x)
    tl.store(part_ptr + 1, gks_y)
    tl.store(part_ptr + 2, gkd_x)
    tl.store(part_ptr + 3, gkd_y)
    if HAS_JAC:
        s00, s01, s10, s11 = load_jacobian(js_ptr, bk)
        d00, d01, d10, d11 = load_jacobian(jd_ptr, bk)
        i00, i01, i10, i11 = inverse_2x2(d00, d01, d10, d11)
        # dJ_s = dA @ D^T
        tl.store(part_ptr + 4, ga00 * i00 + ga01 * i01)
        tl.store(part_ptr + 5, ga00 * i10 + ga01 * i11)
        tl.store(part_ptr + 6, ga10 * i00 + ga11 * i01)
        tl.store(part_ptr + 7, ga10 * i10 + ga11 * i11)
        # dD = J_s^T @ dA
        e00 = s00 * ga00 + s10 * ga10
        e01 = s00 * ga01 + s10 * ga11
        e10 = s01 * ga00 + s11 * ga10
        e11 = s01 * ga01 + s11 * ga11
        # M = D^T @ dD ; dJ_d = -M @ D^T
        m00 = i00 * e00 + i10 * e10
        m01 = i00 * e01 + i10 * e11
        m10 = i01 * e00 + i11 * e10
        m11 = i01 * e01 + i11 * e11
        tl.store(part_ptr + 8, -(m00 * i00 + m01 * i01))
        tl.store(part_ptr + 9, -(m00 * i10 + m01 * i11))
        tl.store(part_ptr + 10, -(m10 * i00 + m11 * i01))
        tl.store(part_ptr + 11, -(m10 * i10 + m11 * i11))
    else:
        for i in tl.static_range(4, 12):
            tl.store(part_ptr + i, 0.0)
