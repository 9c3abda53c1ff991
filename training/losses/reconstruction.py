"""Pixel, low-resolution-branch and motion-reconstruction losses (official weights in `LossWeights`).

* L1: mean |prediction - target| (basicsr ``L1Loss``, reduction mean).
* Low-resolution branch: the decoder run on the compensated scale-32 feature without fusion
  (official ``out_lr[0]``) gets low_res * (l1 * L1 + perceptual * P) against the driving
  frame, official low_res = 0.5 (``lr_pixel_perceptual_opt``).
* Motion reconstruction per scale k: weight * mean |r_k - sg(flow_k - grid)|, where r_k is the
  displacement decoded from the quantised motion tokens divided by (F-1)/2 (our generator's
  ``TrainingOutputs.motion_reconstructions``; official ``motion_recon_list``) and flow_k the
  flow that entered scale k (``GeneratorOutput.flows[k]``, official ``deformation_list[k]``).
  Official weight 32, summed over the scales.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch

from mcc_fast.reference.dense_motion import make_coordinate_grid

__all__ = [
    "l1_loss",
    "LowResolutionLoss",
    "low_resolution_loss",
    "motion_reconstruction_loss",
    "motion_reconstruction_losses",
    "weighted_sum",
]


def _check_pair(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    for name, t in ((name_a, a), (name_b, b)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise ValueError(f"{name} must be a floating tensor, got {getattr(t, 'dtype', type(t))}")
    if a.shape != b.shape:
        raise ValueError(f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must have the same shape")


def l1_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean |prediction - target| over all elements: same-shape tensors -> () float32 (or float64)."""
    _check_pair("prediction", prediction, "target", target)
    dtype = torch.promote_types(torch.promote_types(prediction.dtype, target.dtype), torch.float32)
    return (prediction.to(dtype) - target.to(dtype)).abs().mean()


class LowResolutionLoss(NamedTuple):
    """The low-resolution branch's weighted terms (each () tensor) and their sum."""

    l1: torch.Tensor
    perceptual: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        """l1 + perceptual."""
        return self.l1 + self.perceptual


def low_resolution_loss(
    low_res_frame: torch.Tensor,
    target: torch.Tensor,
    perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
    weight: float = 0.5,
    l1_weight: float = 1.0,
    perceptual_weight: float = 1.0,
) -> LowResolutionLoss:
    """weight * l1_weight * L1 and weight * perceptual_weight * perceptual(low_res_frame, target).

    low_res_frame, target: (B, 3, H, W). perceptual: e.g. a `PyramidPerceptualLoss`, or None
    to skip that term (its entry is then 0).
    """
    l1 = weight * l1_weight * l1_loss(low_res_frame, target)
    if perceptual is None or perceptual_weight == 0 or weight == 0:
        p = l1.new_zeros(())
    else:
        p = weight * perceptual_weight * perceptual(low_res_frame, target)
    return LowResolutionLoss(l1, p)


def motion_reconstruction_loss(reconstruction: torch.Tensor, flow: torch.Tensor, weight: float = 32.0) -> torch.Tensor:
    """weight * mean |reconstruction - sg(flow - grid)| for one scale -> () float32.

    reconstruction: (B, F, F, 2) decoded displacement already divided by (F-1)/2; flow:
    (B, F, F, 2) grid_sample grid; grid: the (x, y) coordinate grid of the flow's size.
    The target is detached (no gradient reaches the flow).
    """
    _check_pair("reconstruction", reconstruction, "flow", flow)
    if flow.dim() != 4 or flow.shape[-1] != 2:
        raise ValueError(f"flow must have shape (B, H, W, 2), got {tuple(flow.shape)}")
    with torch.no_grad():
        grid = make_coordinate_grid(flow.shape[1], flow.shape[2], torch.float32, flow.device)
        target = flow.float() - grid
    return weight * (reconstruction.float() - target).abs().mean()


def motion_reconstruction_losses(
    reconstructions: Sequence[torch.Tensor], flows: Sequence[torch.Tensor], weight: float = 32.0
) -> torch.Tensor:
    """Sum over scales k of motion_reconstruction_loss(reconstructions[k], flows[k], weight).

    flows may hold one more entry than reconstructions (the generator's `flows` ends with the
    final flow, which no scale reconstructs); reconstructions[k] pairs with flows[k].
    """
    if len(reconstructions) == 0:
        raise ValueError("reconstructions must not be empty")
    if len(flows) not in (len(reconstructions), len(reconstructions) + 1):
        raise ValueError(
            f"flows must have len(reconstructions) or len(reconstructions) + 1 entries, got {len(flows)} "
            f"for {len(reconstructions)} reconstructions"
        )
    total = None
    for recon, flow in zip(reconstructions, flows):
        term = motion_reconstruction_loss(recon, flow, weight)
        total = term if total is None else total + term
    return total


def weighted_sum(losses: Sequence[torch.Tensor], weight: float = 1.0) -> torch.Tensor:
    """weight * sum(losses) for per-scale () losses (e.g. the motion and appearance VQ losses)."""
    if len(losses) == 0:
        raise ValueError("losses must not be empty")
    total = losses[0]
    for loss in losses[1:]:
        total = total + loss
    return weight * total
