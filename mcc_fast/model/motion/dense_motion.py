"""Dense motion network: keypoints + source -> mask-composed flow and occlusion at 64x64."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mcc_fast import ops
from mcc_fast.model.fused import FusedOps
from mcc_fast.model.motion.antialias import AntiAliasDownsample
from mcc_fast.model.motion.config import MotionEstimatorConfig
from mcc_fast.model.motion.hourglass import Hourglass
from mcc_fast.model.motion.keypoint_detector import Keypoints
from mcc_fast.model.summary import summary_repr
from mcc_fast.reference import dense_motion as ref


@dataclass
class DenseMotion:
    """Outputs of `DenseMotionNetwork` at the working resolution S (64 by default).

    deformation: (B, S, S, 2) backward flow (grid_sample grid, (x, y) in [-1, 1]);
    occlusion_map: (B, 1, S, S) after its sigmoid, or None without an occlusion head;
    mask: (B, K+1, S, S) softmax weights, background first;
    driving_kp_heatmap: (B, K, S, S) Gaussians at the driving keypoints;
    sparse_motion: (B, K+1, S, S, 2) identity then per-keypoint motions, only when asked.
    All in the geometry dtype (float32 for float32/bfloat16/float16 models).
    """

    __repr__ = summary_repr

    deformation: torch.Tensor
    occlusion_map: torch.Tensor | None
    mask: torch.Tensor
    driving_kp_heatmap: torch.Tensor
    sparse_motion: torch.Tensor | None = None


class DenseMotionNetwork(nn.Module):
    """(source image (B, C, S0, S0), Keypoints source, Keypoints driving) -> DenseMotion.

    Downsample the source, build the (K+1)*(C+1)-channel input (per group: heatmap difference
    G(kp_d) - G(kp_s), source deformed by that group's sparse motion with grid_sample
    align_corners=False), hourglass, 7x7 mask head (softmax over K+1) and 7x7 occlusion head
    (sigmoid). Flow = sum_g mask_g * T_g. The geometry (heatmaps, motions, softmax, flow) runs
    in at least float32; the hourglass runs in its weights' dtype. `fused` (set by
    `Model.use_fused_ops`): the input, heatmaps and flow from mcc_fast.ops' fused kernels.
    """

    fused: FusedOps | None = None

    def __init__(self, config: MotionEstimatorConfig) -> None:
        super().__init__()
        self.num_kp = config.num_kp
        self.kp_variance = config.kp_variance
        self.downsample = (
            AntiAliasDownsample(config.num_channels, config.dm_scale_factor) if config.dm_scale_factor != 1 else None
        )
        self.hourglass = Hourglass(
            config.dm_in_channels, config.dm_block_expansion, config.dm_max_features, config.dm_num_blocks
        )
        features = self.hourglass.out_channels
        self.mask_head = nn.Conv2d(features, config.num_kp + 1, kernel_size=7, padding=3)
        self.occlusion_head = (
            nn.Conv2d(features, 1, kernel_size=7, padding=3) if config.dm_estimate_occlusion else None
        )

    def forward(
        self,
        source: torch.Tensor,
        kp_source: Keypoints,
        kp_driving: Keypoints,
        *,
        return_sparse_motion: bool = False,
    ) -> DenseMotion:
        small = self.downsample(source) if self.downsample is not None else source
        bs, _, h, w = small.shape
        geometry_dtype = torch.promote_types(small.dtype, torch.float32)
        kp_s, kp_d = kp_source.value.to(geometry_dtype), kp_driving.value.to(geometry_dtype)
        jac_s = None if kp_source.jacobian is None else kp_source.jacobian.to(geometry_dtype)
        jac_d = None if kp_driving.jacobian is None else kp_driving.jacobian.to(geometry_dtype)

        backend = None if self.fused is None else self.fused.backend
        if self.fused is None:
            driving_heatmap = ref.keypoint_heatmaps(kp_d, (h, w), self.kp_variance)
            hourglass_input = ref.dense_motion_input(
                small.to(geometry_dtype), kp_s, kp_d, jac_s, jac_d, align_corners=False,
                variance=self.kp_variance, driving_heatmaps=driving_heatmap,
            )
        else:
            driving_heatmap = ops.keypoint_heatmaps(kp_d, (h, w), self.kp_variance, backend=backend)
            hourglass_input = ops.dense_motion_input(small.to(geometry_dtype), kp_s, kp_d, jac_s, jac_d,
                                                     align_corners=False, variance=self.kp_variance, backend=backend)
        features = self.hourglass(hourglass_input.to(self.mask_head.weight.dtype))

        logits = self.mask_head(features).to(geometry_dtype)
        mask = torch.softmax(logits, dim=1)
        if self.fused is None:
            deformation = ref.blend_motions(mask, kp_s, kp_d, jac_s, jac_d)
        else:
            deformation = ops.compose_flow(logits, kp_s, kp_d, jac_s, jac_d, backend=backend)
        occlusion = None
        if self.occlusion_head is not None:
            occlusion = torch.sigmoid(self.occlusion_head(features).to(geometry_dtype))
        sparse = ref.sparse_motions(kp_s, kp_d, jac_s, jac_d, size=(h, w)) if return_sparse_motion else None
        return DenseMotion(deformation, occlusion, mask, driving_heatmap, sparse)
