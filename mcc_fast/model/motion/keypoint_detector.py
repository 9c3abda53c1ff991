"""Keypoint detector: hourglass, softmax heatmaps, keypoints and jacobians as expectations."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mcc_fast.model.motion.antialias import AntiAliasDownsample
from mcc_fast.model.motion.config import MotionEstimatorConfig
from mcc_fast.model.motion.hourglass import Hourglass
from mcc_fast.model.summary import summary_repr
from mcc_fast.reference.dense_motion import make_coordinate_grid


@dataclass
class Keypoints:
    """Keypoints of a batch of images.

    value: (B, K, 2) float, (x, y) in [-1, 1]; jacobian: (B, K, 2, 2) float, or None when the
    detector estimates no jacobians.
    """

    __repr__ = summary_repr

    value: torch.Tensor
    jacobian: torch.Tensor | None = None

    def __getitem__(self, index) -> "Keypoints":
        """The keypoints of the samples selected by `index` (a slice or index tensor on the batch)."""
        return Keypoints(self.value[index], None if self.jacobian is None else self.jacobian[index])

    def as_dict(self) -> dict:
        """The official `{'value': ..., 'jacobian': ...}` form."""
        out = {"value": self.value}
        if self.jacobian is not None:
            out["jacobian"] = self.jacobian
        return out


class KeypointDetector(nn.Module):
    """Image (B, C, S, S) -> Keypoints (value (B, K, 2), jacobian (B, K, 2, 2) or None).

    Anti-aliased downsample to the working resolution, hourglass, 7x7 heads without padding
    (58x58 maps at the defaults), softmax of logits/temperature over all positions, keypoint =
    expectation of the heatmap's coordinate grid, jacobian = heatmap-weighted sum of the
    jacobian head. The heatmap statistics are computed in at least float32.
    """

    def __init__(self, config: MotionEstimatorConfig) -> None:
        super().__init__()
        self.num_kp = config.num_kp
        self.temperature = config.kp_temperature
        self.downsample = (
            AntiAliasDownsample(config.num_channels, config.kp_scale_factor) if config.kp_scale_factor != 1 else None
        )
        self.hourglass = Hourglass(
            config.num_channels, config.kp_block_expansion, config.kp_max_features, config.kp_num_blocks
        )
        features = self.hourglass.out_channels
        pad = config.kp_head_padding
        self.heatmap_head = nn.Conv2d(features, config.num_kp, kernel_size=7, padding=pad)
        if config.kp_estimate_jacobian:
            self.num_jacobian_maps = 1 if config.kp_single_jacobian_map else config.num_kp
            self.jacobian_head = nn.Conv2d(features, 4 * self.num_jacobian_maps, kernel_size=7, padding=pad)
            with torch.no_grad():  # official init: every jacobian starts at the identity
                self.jacobian_head.weight.zero_()
                self.jacobian_head.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]).repeat(self.num_jacobian_maps))
        else:
            self.num_jacobian_maps = 0
            self.jacobian_head = None

    def forward(self, image: torch.Tensor) -> Keypoints:
        x = self.downsample(image) if self.downsample is not None else image
        features = self.hourglass(x)
        logits = self.heatmap_head(features)
        bs, num_kp, h, w = logits.shape
        stat_dtype = torch.promote_types(logits.dtype, torch.float32)
        heatmap = torch.softmax(logits.to(stat_dtype).view(bs, num_kp, h * w) / self.temperature, dim=2)
        grid = make_coordinate_grid(h, w, stat_dtype, logits.device).view(h * w, 2)
        value = heatmap @ grid  # (B, K, 2)
        jacobian = None
        if self.jacobian_head is not None:
            jacobian_map = self.jacobian_head(features).to(stat_dtype).view(bs, self.num_jacobian_maps, 4, h * w)
            # (B, K|1, 4, HW) @ (B, K, HW, 1): heatmap-weighted sum of each jacobian entry.
            jacobian = (jacobian_map @ heatmap.unsqueeze(-1)).view(bs, num_kp, 2, 2)
        return Keypoints(value, jacobian)
