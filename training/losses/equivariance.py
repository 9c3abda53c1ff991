"""FOMM equivariance constraint: a random affine + thin-plate-spline transform and its losses.

The transform T maps (x, y) coordinates in [-1, 1] (FOMM ``Transform``, official
``transform_params``: sigma_affine 0.05, sigma_tps 0.005, points_tps 5):

    T(z) = A z + t + (sum_j p_j * d_j(z)**2 * log(d_j(z) + 1e-6)) * (1, 1)

with theta = [A | t] = [I | 0] + N(0, sigma_affine**2) per sample (B, 2, 3); control points
c_j the 5x5 coordinate grid; d_j(z) = |z_x - c_jx| + |z_y - c_jy| (an L1 distance, as the
official); p_j ~ N(0, sigma_tps**2) per sample (B, 25). The TPS term is added to x and y alike
(the official broadcasts one value to both coordinates).

The frame is transformed by sampling it at T(grid): ``grid_sample(frame, T(grid),
padding_mode='reflection')``. The official ran on torch 1.12 with grid_sample's default
``align_corners=False`` while the grid is the align_corners=True-style coordinate grid, so
even the identity transform resamples the frame by a factor W/(W-1) about its centre; we
keep that as the default (``align_corners=False``) and offer ``True`` (exact identity).

Losses (weights 1 each), with kp_d, J_d the driving frame's keypoints/jacobians and kp_t, J_t
those of the transformed driving frame:

    value    = mean |kp_d - T(kp_t)|
    jacobian = mean |I - J_d^-1 (J_T(kp_t) J_t)|

J_T is T's Jacobian in closed form (the official differentiates T with autograd; same values,
and ours also works when kp_t does not require grad). J_d^-1 is the closed-form 2x2 inverse.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from mcc_fast.reference.dense_motion import inverse_2x2, make_coordinate_grid

__all__ = [
    "TransformParams",
    "RandomTransform",
    "equivariance_value_loss",
    "equivariance_jacobian_loss",
    "equivariance_losses",
    "keypoint_parts",
]

_TPS_EPS = 1e-6


@dataclass(frozen=True)
class TransformParams:
    """Random-transform parameters (official: sigma_affine 0.05, sigma_tps 0.005, points_tps 5).

    points_tps = 0 or sigma_tps = None disables the TPS part.
    """

    sigma_affine: float = 0.05
    sigma_tps: float | None = 0.005
    points_tps: int = 5

    def __post_init__(self) -> None:
        if not self.sigma_affine >= 0:
            raise ValueError(f"sigma_affine must be >= 0, got {self.sigma_affine}")
        if self.sigma_tps is not None and not self.sigma_tps >= 0:
            raise ValueError(f"sigma_tps must be >= 0 or None, got {self.sigma_tps}")
        if not isinstance(self.points_tps, int) or self.points_tps < 0 or self.points_tps == 1:
            raise ValueError(f"points_tps must be 0 (no TPS) or an int >= 2, got {self.points_tps!r}")

    @property
    def uses_tps(self) -> bool:
        """Whether the transform has a TPS part."""
        return self.sigma_tps is not None and self.points_tps > 0


class RandomTransform:
    """One random transform per sample (see the module docstring). Plain object, no parameters.

    theta: (B, 2, 3) float32 affine [A | t]; control_points: (P*P, 2) float32 or None;
    control_params: (B, P*P) float32 or None. Build with `sample` (random) or directly with
    chosen tensors (tests, replay). All methods compute in the dtype/device of their input
    (float32 at least).
    """

    def __init__(
        self,
        theta: torch.Tensor,
        control_params: torch.Tensor | None = None,
        points_tps: int = 0,
    ) -> None:
        if not isinstance(theta, torch.Tensor) or theta.dim() != 3 or tuple(theta.shape[1:]) != (2, 3):
            raise ValueError(f"theta must be a (B, 2, 3) tensor, got {getattr(theta, 'shape', type(theta))}")
        self.theta = theta
        self.batch_size = theta.shape[0]
        if control_params is None:
            self.control_points = None
            self.control_params = None
        else:
            if points_tps < 2:
                raise ValueError(f"points_tps must be >= 2 when control_params are given, got {points_tps}")
            expected = (self.batch_size, points_tps * points_tps)
            if not isinstance(control_params, torch.Tensor) or tuple(control_params.shape) != expected:
                raise ValueError(
                    f"control_params must have shape {expected}, got {getattr(control_params, 'shape', type(control_params))}"
                )
            self.control_params = control_params
            self.control_points = make_coordinate_grid(points_tps, points_tps, torch.float64).view(-1, 2)

    @classmethod
    def sample(
        cls,
        batch_size: int,
        params: TransformParams | None = None,
        generator: torch.Generator | None = None,
    ) -> "RandomTransform":
        """Draw a transform for `batch_size` samples from `generator` (None: torch's global RNG).

        Draws theta noise (B, 2, 3) first, then the TPS parameters (B, P*P), on the
        generator's device, in float32: a seeded generator reproduces the same transform.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        params = params or TransformParams()
        device = generator.device if generator is not None else torch.device("cpu")
        noise = torch.randn(batch_size, 2, 3, generator=generator, device=device) * params.sigma_affine
        theta = noise + torch.eye(2, 3, device=device)
        if not params.uses_tps:
            return cls(theta)
        n = params.points_tps * params.points_tps
        control = torch.randn(batch_size, n, generator=generator, device=device) * params.sigma_tps
        return cls(theta, control, params.points_tps)

    @staticmethod
    def _work_dtype(t: torch.Tensor) -> torch.dtype:
        return t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32

    def _check_coordinates(self, coordinates: torch.Tensor) -> None:
        if not isinstance(coordinates, torch.Tensor) or coordinates.dim() != 3 or coordinates.shape[-1] != 2:
            raise ValueError(
                f"coordinates must be a (B, N, 2) tensor, got {getattr(coordinates, 'shape', type(coordinates))}"
            )
        if coordinates.shape[0] not in (1, self.batch_size):
            raise ValueError(
                f"coordinates batch {coordinates.shape[0]} must be 1 or the transform's batch {self.batch_size}"
            )

    def _tps_terms(self, coordinates: torch.Tensor):
        """(distance (b, N, P*P), signed offsets (b, N, P*P, 2), params (B, 1, P*P)) in coordinates' dtype."""
        points = self.control_points.to(coordinates)
        offsets = coordinates.unsqueeze(2) - points.view(1, 1, -1, 2)
        distance = offsets.abs().sum(-1)
        params = self.control_params.to(coordinates).unsqueeze(1)
        return distance, offsets, params

    def warp_coordinates(self, coordinates: torch.Tensor) -> torch.Tensor:
        """T(coordinates): (b, N, 2) with b in {1, B} -> (B, N, 2), dtype float32 or float64."""
        self._check_coordinates(coordinates)
        z = coordinates.to(self._work_dtype(coordinates))
        theta = self.theta.to(z)
        warped = torch.einsum("bij,bnj->bni", theta[:, :, :2], z.expand(self.batch_size, -1, -1))
        warped = warped + theta[:, :, 2].unsqueeze(1)
        if self.control_params is not None:
            distance, _, params = self._tps_terms(z)
            tps = (distance**2 * torch.log(distance + _TPS_EPS) * params).sum(-1)  # (B, N)
            warped = warped + tps.unsqueeze(-1)
        return warped

    def jacobian(self, coordinates: torch.Tensor) -> torch.Tensor:
        """dT/dz at `coordinates` (b, N, 2) -> (B, N, 2, 2), row i = d T_i / d (x, y). Closed form.

        Affine part A plus, for the TPS, g = sum_j p_j (2 d_j log(d_j + eps) + d_j**2/(d_j + eps))
        * sign(z - c_j) in both rows (sign(0) = 0, as autograd's derivative of |.| at 0).
        Differentiable with respect to `coordinates`.
        """
        self._check_coordinates(coordinates)
        z = coordinates.to(self._work_dtype(coordinates))
        n = z.shape[1]
        jac = self.theta.to(z)[:, :, :2].unsqueeze(1).expand(self.batch_size, n, 2, 2)
        if self.control_params is not None:
            distance, offsets, params = self._tps_terms(z)
            radial = 2 * distance * torch.log(distance + _TPS_EPS) + distance**2 / (distance + _TPS_EPS)
            grad = ((radial * params).unsqueeze(-1) * torch.sign(offsets)).sum(2)  # (B, N, 2)
            jac = jac + grad.unsqueeze(2)  # same gradient row for T_x and T_y
        return jac

    def transform_frame(self, frame: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
        """Sample `frame` (B, C, H, W) at T(grid) with bilinear, reflection padding -> (B, C, H, W).

        The coordinate grid is in float32 (float64 for a float64 frame); the frame is
        sampled in float32 at least and returned in its own dtype. align_corners=False is
        the official behaviour (see the module docstring).
        """
        if not isinstance(frame, torch.Tensor) or frame.dim() != 4 or not frame.is_floating_point():
            raise ValueError(f"frame must be a floating (B, C, H, W) tensor, got {getattr(frame, 'shape', type(frame))}")
        if frame.shape[0] != self.batch_size:
            raise ValueError(f"frame batch {frame.shape[0]} must equal the transform's batch {self.batch_size}")
        b, _, h, w = frame.shape
        work = frame.to(self._work_dtype(frame))
        grid = make_coordinate_grid(h, w, work.dtype, work.device).view(1, h * w, 2)
        grid = self.warp_coordinates(grid).view(b, h, w, 2)
        out = F.grid_sample(work, grid, mode="bilinear", padding_mode="reflection", align_corners=align_corners)
        return out.to(frame.dtype)


def keypoint_parts(kp: Any, name: str, need_jacobian: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(value (B, K, 2), jacobian (B, K, 2, 2) or None) from a tensor, a {'value', 'jacobian'}
    mapping or an object with `.value` / `.jacobian` (our `Keypoints`). ValueError naming `name`."""
    if isinstance(kp, torch.Tensor):
        value, jac = kp, None
    elif isinstance(kp, Mapping):
        if "value" not in kp:
            raise ValueError(f"{name} must have a 'value' entry")
        value, jac = kp["value"], kp.get("jacobian")
    elif hasattr(kp, "value"):
        value, jac = kp.value, getattr(kp, "jacobian", None)
    else:
        raise ValueError(f"{name} must be a (B, K, 2) tensor, a mapping or Keypoints, got {type(kp).__name__}")
    if not isinstance(value, torch.Tensor) or value.dim() != 3 or value.shape[-1] != 2 or not value.is_floating_point():
        raise ValueError(f"{name} value must be a floating (B, K, 2) tensor, got {getattr(value, 'shape', type(value))}")
    if need_jacobian:
        if jac is None:
            raise ValueError(f"{name} has no jacobian (needed for the jacobian equivariance loss)")
        if not isinstance(jac, torch.Tensor) or tuple(jac.shape) != (*value.shape[:2], 2, 2):
            raise ValueError(
                f"{name} jacobian must have shape {(*value.shape[:2], 2, 2)}, got {getattr(jac, 'shape', type(jac))}"
            )
    return value, jac


def equivariance_value_loss(kp_driving: Any, kp_transformed: Any, transform: RandomTransform) -> torch.Tensor:
    """mean |kp_d - T(kp_t)| over (B, K, 2) -> () float32 (or float64 for float64 input).

    kp_driving: keypoints of the driving frame; kp_transformed: keypoints of
    ``transform.transform_frame(driving)``; each a (B, K, 2) tensor, mapping or Keypoints.
    """
    kp_d, _ = keypoint_parts(kp_driving, "kp_driving")
    kp_t, _ = keypoint_parts(kp_transformed, "kp_transformed")
    if kp_d.shape != kp_t.shape:
        raise ValueError(f"kp_driving {tuple(kp_d.shape)} and kp_transformed {tuple(kp_t.shape)} must match")
    warped = transform.warp_coordinates(kp_t)
    return (kp_d.to(warped.dtype) - warped).abs().mean()


def equivariance_jacobian_loss(kp_driving: Any, kp_transformed: Any, transform: RandomTransform) -> torch.Tensor:
    """mean |I - J_d^-1 J_T(kp_t) J_t| over (B, K, 2, 2) -> () float32 (float64 for float64 input).

    Both keypoint arguments need jacobians (mappings with 'jacobian' or Keypoints). J_d^-1 is
    the closed-form 2x2 inverse (a singular J_d gives inf/nan, as the division would).
    """
    kp_d, jac_d = keypoint_parts(kp_driving, "kp_driving", need_jacobian=True)
    kp_t, jac_t = keypoint_parts(kp_transformed, "kp_transformed", need_jacobian=True)
    if kp_d.shape != kp_t.shape:
        raise ValueError(f"kp_driving {tuple(kp_d.shape)} and kp_transformed {tuple(kp_t.shape)} must match")
    jac_transform = transform.jacobian(kp_t)
    dtype = jac_transform.dtype
    transformed = jac_transform @ jac_t.to(dtype)
    value = inverse_2x2(jac_d.to(dtype)) @ transformed
    eye = torch.eye(2, dtype=dtype, device=value.device)
    return (eye - value).abs().mean()


def equivariance_losses(
    kp_driving: Any, kp_transformed: Any, transform: RandomTransform, with_jacobian: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(value loss, jacobian loss or None) — the official ``EquivarianceLoss`` before its weights."""
    value = equivariance_value_loss(kp_driving, kp_transformed, transform)
    jac = equivariance_jacobian_loss(kp_driving, kp_transformed, transform) if with_jacobian else None
    return value, jac
