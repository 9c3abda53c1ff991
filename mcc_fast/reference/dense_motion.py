"""Plain-PyTorch reference for the motion estimator's geometry (FOMM-style dense motion).

These functions are what the model computes on its reference path and the specification
that later fused kernels are tested against. Conventions (see SPEC "Conventions"):

* keypoints are (x, y) in [-1, 1], shape (B, K, 2); jacobians are (B, K, 2, 2);
* a coordinate grid has shape (H, W, 2), x over the width: ``2 * (i / (n - 1)) - 1``;
* a flow / sparse motion is a ``grid_sample`` grid in that same convention;
* group 0 of every (K+1)-group tensor is the background (identity motion, zero heatmap),
  groups 1..K follow the keypoints.

All functions are differentiable, work for any floating dtype (float32 and float64 are
tested) and validate only shapes (no data-dependent checks, so no device syncs).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "make_coordinate_grid",
    "inverse_2x2",
    "keypoint_heatmaps",
    "sparse_motions",
    "deform_source",
    "dense_motion_input",
    "blend_motions",
    "compose_flow",
]


# --------------------------------------------------------------------------- validation
def _check_keypoints(name: str, kp: torch.Tensor) -> None:
    if not isinstance(kp, torch.Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(kp).__name__}")
    if kp.dim() != 3 or kp.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (B, K, 2), got {tuple(kp.shape)}")
    if not kp.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got {kp.dtype}")


def _check_jacobians(name: str, jac: torch.Tensor, kp_name: str, kp: torch.Tensor) -> None:
    if not isinstance(jac, torch.Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(jac).__name__}")
    if tuple(jac.shape) != (*kp.shape[:2], 2, 2):
        raise ValueError(
            f"{name} must have shape (B, K, 2, 2) = {(*kp.shape[:2], 2, 2)} to match {kp_name}, "
            f"got {tuple(jac.shape)}"
        )


def _check_pair(kp_source: torch.Tensor, kp_driving: torch.Tensor, jac_source, jac_driving) -> None:
    _check_keypoints("kp_source", kp_source)
    _check_keypoints("kp_driving", kp_driving)
    if kp_source.shape != kp_driving.shape:
        raise ValueError(
            f"kp_source {tuple(kp_source.shape)} and kp_driving {tuple(kp_driving.shape)} must have the same shape"
        )
    if (jac_source is None) != (jac_driving is None):
        raise ValueError("jac_source and jac_driving must both be given or both be None")
    if jac_source is not None:
        _check_jacobians("jac_source", jac_source, "kp_source", kp_source)
        _check_jacobians("jac_driving", jac_driving, "kp_driving", kp_driving)


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (s if isinstance(s, torch.SymInt) else int(s) for s in size)  # SymInt: no specialisation
    except (TypeError, ValueError):
        raise ValueError(f"size must be a pair (H, W) of ints, got {size!r}") from None
    if h < 2 or w < 2:
        raise ValueError(f"size must be at least (2, 2) (the grid divides by n - 1), got {(h, w)}")
    return h, w


# --------------------------------------------------------------------------- functions
def make_coordinate_grid(h: int, w: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The (h, w, 2) grid of (x, y) pixel-centre coordinates in [-1, 1] (align_corners=True style).

    ``grid[i, j] = (2 * (j / (w - 1)) - 1, 2 * (i / (h - 1)) - 1)``, in ``dtype`` on ``device``,
    with the official operation order (divide, then scale by 2, then shift).
    """
    h, w = _check_size((h, w))
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    x = 2 * (torch.arange(w, dtype=dtype, device=device) / (w - 1)) - 1
    y = 2 * (torch.arange(h, dtype=dtype, device=device) / (h - 1)) - 1
    return torch.stack([x.view(1, w).expand(h, w), y.view(h, 1).expand(h, w)], dim=-1)


def inverse_2x2(m: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse of a batch of 2x2 matrices: adjugate / determinant.

    m: (..., 2, 2) floating. Returns (..., 2, 2) of the same dtype. Unlike ``torch.inverse``
    it never raises and needs no LAPACK/cuSOLVER call (CUDA-graph friendly): a singular
    matrix (det exactly 0) gives inf/nan entries, exactly as the division by 0 gives, and a
    nearly singular one gives huge entries. Callers decide what to do with them.
    """
    if not isinstance(m, torch.Tensor) or m.dim() < 2 or tuple(m.shape[-2:]) != (2, 2):
        raise ValueError(f"m must be a tensor of shape (..., 2, 2), got {getattr(m, 'shape', type(m))}")
    if not m.is_floating_point():
        raise ValueError(f"m must be a floating tensor, got {m.dtype}")
    a, b = m[..., 0, 0], m[..., 0, 1]
    c, d = m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    adjugate = torch.stack([torch.stack([d, -b], dim=-1), torch.stack([-c, a], dim=-1)], dim=-2)
    return adjugate / det[..., None, None]


def keypoint_heatmaps(kp: torch.Tensor, size: Sequence[int], variance: float = 0.01) -> torch.Tensor:
    """Unnormalised Gaussians at the keypoints: exp(-0.5 |z - kp|^2 / variance).

    kp: (B, K, 2) floating, (x, y) in [-1, 1]. size: (H, W). Returns (B, K, H, W) in kp's dtype.
    """
    _check_keypoints("kp", kp)
    h, w = _check_size(size)
    if not variance > 0:
        raise ValueError(f"variance must be > 0, got {variance}")
    grid = make_coordinate_grid(h, w, kp.dtype, kp.device)
    diff = grid.view(1, 1, h, w, 2) - kp.view(*kp.shape[:2], 1, 1, 2)
    return torch.exp(-0.5 * (diff**2).sum(-1) / variance)


def sparse_motions(
    kp_source: torch.Tensor,
    kp_driving: torch.Tensor,
    jac_source: torch.Tensor | None = None,
    jac_driving: torch.Tensor | None = None,
    *,
    size: Sequence[int],
) -> torch.Tensor:
    """Per-keypoint backward motions T_k(z) = kp_s,k + J_s,k J_d,k^-1 (z - kp_d,k), identity first.

    kp_*: (B, K, 2); jac_*: (B, K, 2, 2) or both None (then T_k is a pure translation).
    size: (H, W). Returns (B, K+1, H, W, 2) in kp_source's dtype; [:, 0] is the identity grid.
    The jacobian product is J_s @ inverse_2x2(J_d) (singular J_d -> inf/nan, never raises), in
    the promoted dtype of the two jacobians.
    """
    _check_pair(kp_source, kp_driving, jac_source, jac_driving)
    h, w = _check_size(size)
    bs, num_kp = kp_source.shape[:2]
    grid = make_coordinate_grid(h, w, kp_source.dtype, kp_source.device)
    offset = grid.view(1, 1, h, w, 2) - kp_driving.view(bs, num_kp, 1, 1, 2)
    if jac_source is not None:
        jac_dtype = torch.promote_types(jac_source.dtype, jac_driving.dtype)  # matmul needs one dtype
        affine = jac_source.to(jac_dtype) @ inverse_2x2(jac_driving.to(jac_dtype))  # (B, K, 2, 2)
        a = affine.view(bs, num_kp, 1, 1, 2, 2)
        offset = torch.stack(
            [
                a[..., 0, 0] * offset[..., 0] + a[..., 0, 1] * offset[..., 1],
                a[..., 1, 0] * offset[..., 0] + a[..., 1, 1] * offset[..., 1],
            ],
            dim=-1,
        )
    keypoint_motions = offset + kp_source.view(bs, num_kp, 1, 1, 2)
    identity = grid.view(1, 1, h, w, 2).expand(bs, 1, h, w, 2)
    return torch.cat([identity, keypoint_motions], dim=1)


def deform_source(source: torch.Tensor, motions: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """The source sampled by each of G motions: bilinear ``grid_sample``, zeros padding.

    source: (B, C, H, W); motions: (B, G, Ho, Wo, 2), same dtype. Returns (B, G, C, Ho, Wo).
    The official dense motion uses align_corners=False (the torch default) here. The source
    is read once for all G motions (the grids are stacked along the height), which gives
    the same per-pixel arithmetic as repeating the source G times.
    """
    if not isinstance(source, torch.Tensor) or source.dim() != 4:
        raise ValueError(f"source must have shape (B, C, H, W), got {getattr(source, 'shape', type(source))}")
    if not isinstance(motions, torch.Tensor) or motions.dim() != 5 or motions.shape[-1] != 2:
        raise ValueError(f"motions must have shape (B, G, H, W, 2), got {getattr(motions, 'shape', type(motions))}")
    if motions.shape[0] != source.shape[0]:
        raise ValueError(f"motions batch {motions.shape[0]} != source batch {source.shape[0]}")
    if motions.dtype != source.dtype:
        raise ValueError(f"motions dtype {motions.dtype} != source dtype {source.dtype}")
    bs, groups, h, w, _ = motions.shape
    sampled = F.grid_sample(
        source,
        motions.reshape(bs, groups * h, w, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=align_corners,
    )  # (B, C, G*H, W)
    return sampled.view(bs, source.shape[1], groups, h, w).transpose(1, 2)


def dense_motion_input(
    source: torch.Tensor,
    kp_source: torch.Tensor,
    kp_driving: torch.Tensor,
    jac_source: torch.Tensor | None = None,
    jac_driving: torch.Tensor | None = None,
    align_corners: bool = False,
    *,
    variance: float = 0.01,
    driving_heatmaps: torch.Tensor | None = None,
) -> torch.Tensor:
    """The dense-motion hourglass input: per group [heatmap difference, deformed source].

    source: (B, C, H, W), the already downsampled source (64x64 in MCC). kp_*: (B, K, 2),
    jac_*: (B, K, 2, 2) or both None, same dtype as source. Returns (B, (K+1)*(C+1), H, W):
    channel ``g*(C+1)`` is G(kp_d,g) - G(kp_s,g) (zeros for the background group g = 0) and
    channels ``g*(C+1)+1 .. g*(C+1)+C`` are the source sampled by sparse motion g
    (``grid_sample``, zeros padding, ``align_corners`` as given; the official is False).
    ``driving_heatmaps`` (B, K, H, W) may be passed to reuse G(kp_d) already computed.
    """
    if not isinstance(source, torch.Tensor) or source.dim() != 4:
        raise ValueError(f"source must have shape (B, C, H, W), got {getattr(source, 'shape', type(source))}")
    _check_pair(kp_source, kp_driving, jac_source, jac_driving)
    if kp_source.shape[0] != source.shape[0]:
        raise ValueError(f"kp_source batch {kp_source.shape[0]} != source batch {source.shape[0]}")
    bs, channels, h, w = source.shape
    num_kp = kp_source.shape[1]
    if driving_heatmaps is None:
        driving_heatmaps = keypoint_heatmaps(kp_driving, (h, w), variance)
    elif tuple(driving_heatmaps.shape) != (bs, num_kp, h, w):
        raise ValueError(
            f"driving_heatmaps must have shape {(bs, num_kp, h, w)}, got {tuple(driving_heatmaps.shape)}"
        )
    heatmap_diff = driving_heatmaps - keypoint_heatmaps(kp_source, (h, w), variance)
    background = heatmap_diff.new_zeros(bs, 1, h, w)
    heatmap_diff = torch.cat([background, heatmap_diff], dim=1).unsqueeze(2)  # (B, K+1, 1, H, W)
    motions = sparse_motions(kp_source, kp_driving, jac_source, jac_driving, size=(h, w))
    deformed = deform_source(source, motions.to(source.dtype), align_corners=align_corners)
    return torch.cat([heatmap_diff.to(source.dtype), deformed], dim=2).view(bs, (num_kp + 1) * (channels + 1), h, w)


def blend_motions(
    mask: torch.Tensor,
    kp_source: torch.Tensor,
    kp_driving: torch.Tensor,
    jac_source: torch.Tensor | None = None,
    jac_driving: torch.Tensor | None = None,
) -> torch.Tensor:
    """Flow = sum_g mask_g * T_g, given the mask already normalised over its K+1 groups.

    mask: (B, K+1, H, W); kp_*: (B, K, 2); jac_*: (B, K, 2, 2) or both None.
    Returns (B, H, W, 2) in the dtype of the product (official order: mask times the
    sparse motions, then the sum over groups).
    """
    _check_pair(kp_source, kp_driving, jac_source, jac_driving)
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
        raise ValueError(f"mask must have shape (B, K+1, H, W), got {getattr(mask, 'shape', type(mask))}")
    bs, num_kp = kp_source.shape[:2]
    if mask.shape[0] != bs or mask.shape[1] != num_kp + 1:
        raise ValueError(f"mask must have shape (B, K+1, H, W) = ({bs}, {num_kp + 1}, H, W), got {tuple(mask.shape)}")
    motions = sparse_motions(kp_source, kp_driving, jac_source, jac_driving, size=mask.shape[2:])
    return (motions * mask.unsqueeze(-1)).sum(dim=1)


def compose_flow(
    mask_logits: torch.Tensor,
    kp_source: torch.Tensor,
    kp_driving: torch.Tensor,
    jac_source: torch.Tensor | None = None,
    jac_driving: torch.Tensor | None = None,
) -> torch.Tensor:
    """Deformable flow composition: softmax over the K+1 groups, then sum_g M_g T_g.

    mask_logits: (B, K+1, H, W) (the dense-motion mask head's output); kp_*: (B, K, 2);
    jac_*: (B, K, 2, 2) or both None. Returns the (B, H, W, 2) backward flow (grid_sample grid).
    """
    if not isinstance(mask_logits, torch.Tensor) or mask_logits.dim() != 4:
        raise ValueError(
            f"mask_logits must have shape (B, K+1, H, W), got {getattr(mask_logits, 'shape', type(mask_logits))}"
        )
    return blend_motions(torch.softmax(mask_logits, dim=1), kp_source, kp_driving, jac_source, jac_driving)
