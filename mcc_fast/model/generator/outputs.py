"""Input/output containers of the generator and the checks on its inputs.

Shapes: B batch, S image size, F flow size, T token grid, n scales, K keypoints.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from ..summary import summary_repr
from .config import GeneratorConfig


@dataclass
class SourceFeatures:
    """Source-only encoder features, computed once per source image and reused per frame.

    per_scale[k]: (B, scale_channels[k], T 2**k, T 2**k) float; k = 0 is the latent.
    """

    __repr__ = summary_repr

    per_scale: tuple[torch.Tensor, ...]

    @property
    def batch_size(self) -> int:
        """B."""
        return self.per_scale[0].shape[0]


@dataclass
class DenseMotion:
    """What the generator reads from the motion estimator's output.

    deformation: (B, F, F, 2) flow (grid_sample grid, (x, y)).
    occlusion: (B, 1, F, F) occlusion, already after its sigmoid.
    heatmaps: (B, K, h, w) driving-keypoint Gaussians (any h, w; resized to T x T).
    """

    __repr__ = summary_repr

    deformation: torch.Tensor
    occlusion: torch.Tensor
    heatmaps: torch.Tensor


@dataclass
class TrainingOutputs:
    """Training-only outputs (computed only when the driving image is given); lists per scale.

    motion_vq_losses, appearance_vq_losses: () VQ losses.
    motion_code_indices, appearance_code_indices: (B, T, T) int64 chosen codebook rows
        (indexing the whole codebook; for "prefix" allocation that is also the index into
        the searched prefix, as the official records it).
    motion_reconstructions: (B, F, F, 2) displacement decoded from the quantised motion
        embedding, divided by (F-1)/2 (compare with sg(flows[k] - grid)).
    low_res_frame: (B, image_channels, S, S) the scale-0 compensated feature decoded
        without fusion (official `out_lr[0]`).
    """

    __repr__ = summary_repr

    motion_vq_losses: list[torch.Tensor]
    motion_code_indices: list[torch.Tensor]
    motion_reconstructions: list[torch.Tensor]
    appearance_vq_losses: list[torch.Tensor]
    appearance_code_indices: list[torch.Tensor]
    low_res_frame: torch.Tensor


@dataclass
class GeneratorOutput:
    """Everything `Generator.forward(..., return_all=True)` returns.

    frame: (B, image_channels, S, S), no output activation (official `out`).
    flows: n + 1 flows (B, F, F, 2): the input flow, then the flow after each scale
        (official `deformation_list`).
    flow_residuals: n residuals (B, F, F, 2) in [-1, 1] units (official `res_deform_list`).
    occlusions: n occlusions (B, 1, F, F) used at each scale (official `out_occ`).
    appearance_token_masks: n (B, T*T) bool, True = token ignored as a key by the first
        appearance layer (its flow leaves [-1, 1]).
    training: the training outputs, or None when no driving image was given.
    """

    __repr__ = summary_repr

    frame: torch.Tensor
    flows: list[torch.Tensor]
    flow_residuals: list[torch.Tensor]
    occlusions: list[torch.Tensor]
    appearance_token_masks: list[torch.Tensor]
    training: TrainingOutputs | None = None


def _field(dm: Any, name: str) -> torch.Tensor:
    if isinstance(dm, Mapping):
        if name not in dm:
            raise KeyError(f"dm: missing {name!r} (needs 'deformation', 'occlusion_map', 'driving_kp_heatmap')")
        value = dm[name]
    elif hasattr(dm, name):
        value = getattr(dm, name)
    else:
        raise KeyError(f"dm: missing {name!r} (needs 'deformation', 'occlusion_map', 'driving_kp_heatmap')")
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"dm[{name!r}] must be a tensor, got {type(value).__name__}")
    return value


def check_image(image: torch.Tensor, name: str, config: GeneratorConfig) -> None:
    """Raise naming `name` unless `image` is a (B, image_channels, S, S) (ValueError) floating point
    (TypeError) tensor."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(image).__name__}")
    expected = (config.image_channels, config.image_size, config.image_size)
    if image.dim() != 4 or tuple(image.shape[1:]) != expected:
        raise ValueError(f"{name} must have shape (B, {', '.join(map(str, expected))}) for this "
                         f"config, got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {image.dtype}")


def read_dense_motion(dm: Any, config: GeneratorConfig, batch: int) -> DenseMotion:
    """Extract and check the generator's inputs from the motion estimator's output `dm`.

    `dm` is a mapping (the official dict) or an object with attributes 'deformation',
    'occlusion_map' and 'driving_kp_heatmap'. Raises ValueError naming the offending field.
    """
    deformation = _field(dm, "deformation")
    occlusion = _field(dm, "occlusion_map")
    heatmaps = _field(dm, "driving_kp_heatmap")
    f, k = config.flow_size, config.num_keypoints
    if deformation.dim() != 4 or tuple(deformation.shape[1:]) != (f, f, 2):
        raise ValueError(f"dm['deformation'] must have shape (B, {f}, {f}, 2), got {tuple(deformation.shape)}")
    if occlusion.dim() != 4 or tuple(occlusion.shape[1:]) != (1, f, f):
        raise ValueError(f"dm['occlusion_map'] must have shape (B, 1, {f}, {f}), got {tuple(occlusion.shape)}")
    if heatmaps.dim() != 4 or heatmaps.shape[1] != k:
        raise ValueError(f"dm['driving_kp_heatmap'] must have shape (B, {k}, h, w), got {tuple(heatmaps.shape)}")
    for name, value in (("deformation", deformation), ("occlusion_map", occlusion), ("driving_kp_heatmap", heatmaps)):
        if value.shape[0] != batch:
            raise ValueError(f"dm[{name!r}] has batch {value.shape[0]} but the source has batch {batch}")
    return DenseMotion(deformation=deformation, occlusion=occlusion, heatmaps=heatmaps)
