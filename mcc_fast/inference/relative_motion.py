"""FOMM relative motion (`normalize_kp` of first-order-model's animate.py), for animation.

With source keypoints (kp_s, J_s), the driving frame's (kp_d, J_d) and the reference
driving frame's (kp_d0, J_d0) (by default the video's first frame):

    kp = kp_s + scale * (kp_d - kp_d0)
    J  = J_d @ inverse(J_d0) @ J_s                    (matrix products, in this order)
    scale = sqrt(area(hull(kp_s)) / area(hull(kp_d0)))   with adapt_scale, else 1

Absolute motion uses (kp_d, J_d) as they are (`adapt_scale` does not apply, as in FOMM).
The jacobians are not scaled (FOMM). The inverse is the closed-form 2x2 one
(`mcc_fast.reference.dense_motion.inverse_2x2`): a singular J_d0 gives inf/nan jacobians.

Differences from FOMM: the scale is computed per sample (FOMM uses sample 0 of the batch),
and a degenerate hull (fewer than 3 distinct points, all collinear, or NaN) gives scale 1
with a warning instead of a Qhull exception.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ..model.motion.keypoint_detector import Keypoints
from ..reference.dense_motion import inverse_2x2

__all__ = ["convex_hull_area", "movement_scale", "relative_keypoints", "normalize_keypoints"]


def _hull_area_monotone_chain(points: np.ndarray) -> float:
    """Area of the convex hull of (N, 2) points (Andrew's monotone chain + shoelace)."""
    pts = sorted(set(map(tuple, points.tolist())))
    if len(pts) < 3:
        return 0.0

    def cross(o, a, b) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = lower[:-1] + upper[:-1]
    if len(hull) < 3:
        return 0.0
    xs = np.array([p[0] for p in hull], dtype=np.float64)
    ys = np.array([p[1] for p in hull], dtype=np.float64)
    return float(0.5 * abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))))


def convex_hull_area(points: np.ndarray | torch.Tensor, *, use_scipy: bool = True) -> float:
    """Area of the convex hull of (N, 2) points (float64 arithmetic).

    Uses scipy.spatial.ConvexHull (its `.volume` is the area in 2-D) when scipy is installed
    and `use_scipy`; otherwise, or when Qhull rejects the points (degenerate hull), our own
    monotone chain. Degenerate hulls (< 3 distinct or collinear points) have area 0; any
    NaN/inf point gives NaN.
    """
    if isinstance(points, torch.Tensor):
        points = points.detach().to("cpu", torch.float64).numpy()
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {points.shape}")
    if not np.isfinite(points).all():
        return float("nan")
    if use_scipy:
        try:
            from scipy.spatial import ConvexHull
        except ImportError:
            ConvexHull = None
        if ConvexHull is not None and len(points) >= 3:
            try:
                return float(ConvexHull(points).volume)
            except Exception:  # QhullError (scipy.spatial.QhullError): degenerate input
                pass
    return _hull_area_monotone_chain(points)


def movement_scale(kp_source: torch.Tensor, kp_reference: torch.Tensor) -> torch.Tensor:
    """FOMM's adapt_movement_scale: sqrt(hull area of kp_source / hull area of kp_reference).

    kp_source, kp_reference: (B, K, 2) keypoint values (or a batch of 1 broadcast to the
    other). Returns (B,) float32 on kp_source's device. Degenerate or NaN hulls give 1 with a
    warning. Reads the keypoints on the CPU (one device sync; once per video).
    """
    for name, kp in (("kp_source", kp_source), ("kp_reference", kp_reference)):
        if not isinstance(kp, torch.Tensor) or kp.dim() != 3 or kp.shape[-1] != 2:
            raise ValueError(f"{name} must be a tensor (B, K, 2), got {getattr(kp, 'shape', type(kp).__name__)}")
    source, reference = torch.broadcast_tensors(kp_source.detach().cpu().double(), kp_reference.detach().cpu().double())
    scales = []
    for b in range(source.shape[0]):
        area_source, area_reference = convex_hull_area(source[b].numpy()), convex_hull_area(reference[b].numpy())
        if not (np.isfinite(area_source) and np.isfinite(area_reference) and area_source > 0 and area_reference > 0):
            warnings.warn(f"movement scale: degenerate keypoint hull (source area {area_source:.3g}, reference area "
                          f"{area_reference:.3g}) in sample {b}; using scale 1", RuntimeWarning, stacklevel=2)
            scales.append(1.0)
        else:
            scales.append(float(np.sqrt(area_source) / np.sqrt(area_reference)))
    return torch.tensor(scales, dtype=torch.float32, device=kp_source.device)


def relative_keypoints(kp_source: Keypoints, kp_driving: Keypoints, kp_reference: Keypoints,
                       scale: torch.Tensor | float = 1.0) -> Keypoints:
    """kp = kp_s + scale (kp_d - kp_d0); J = J_d inverse(J_d0) J_s (see the module docstring).

    Batches broadcast (a source / reference of batch 1 with a driving batch of n).
    scale: a float, or (B,) per sample. Arithmetic in float32 (at least), result in
    kp_driving's dtype. When any jacobian is None the result carries kp_driving's jacobian.
    """
    dtype = kp_driving.value.dtype
    work = torch.promote_types(dtype, torch.float32)
    value_d, value_d0, value_s = (k.value.to(work) for k in (kp_driving, kp_reference, kp_source))
    if isinstance(scale, torch.Tensor):
        scale = scale.to(device=value_d.device, dtype=work).reshape(-1, 1, 1)
    value = value_s + (value_d - value_d0) * scale
    jacobian = kp_driving.jacobian
    if kp_driving.jacobian is not None and kp_reference.jacobian is not None and kp_source.jacobian is not None:
        jac_d, jac_d0, jac_s = (k.jacobian.to(work) for k in (kp_driving, kp_reference, kp_source))
        jacobian = torch.matmul(torch.matmul(jac_d, inverse_2x2(jac_d0)), jac_s).to(kp_driving.jacobian.dtype)
    return Keypoints(value=value.to(dtype), jacobian=jacobian)


def normalize_keypoints(kp_source: Keypoints, kp_driving: Keypoints, kp_reference: Keypoints, *,
                        relative: bool = True, adapt_scale: bool = True) -> Keypoints:
    """FOMM `normalize_kp` with use_relative_movement = use_relative_jacobian = `relative`.

    relative=False returns kp_driving unchanged (absolute motion). With relative and
    adapt_scale the scale comes from the hulls of kp_source and kp_reference (per sample).
    """
    if not relative:
        return kp_driving
    scale = movement_scale(kp_source.value, kp_reference.value) if adapt_scale else 1.0
    return relative_keypoints(kp_source, kp_driving, kp_reference, scale)
