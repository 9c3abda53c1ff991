"""Fast motion estimator: keypoint detector and dense motion, eval semantics.

* BatchNorm uses its running statistics (eval), folded into the convolutions; the hourglass
  up-convolutions run on the low-resolution input (layers.UpsampleConv).
* The keypoint detector's heatmap and jacobian heads are one merged convolution.
* Dense motion: the hourglass input comes from the fused `ops.dense_motion_input` (sparse
  motions never stored), the mask and occlusion heads are one convolution, and the flow from
  the fused `ops.compose_flow` (softmax and the mask-weighted sum per pixel). The
  downsampled source and the source keypoints are computed once per source (SourceCache).
* Keypoints, jacobians, heatmap statistics, flows and occlusions are float32 whatever the
  compute dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..model.motion.dense_motion import DenseMotionNetwork
from ..model.motion.keypoint_detector import KeypointDetector, Keypoints
from ..reference.dense_motion import make_coordinate_grid
from .layers import Conv, FastHourglass
from .runtime import Runtime


class FastAntiAlias(nn.Module):
    """Reference AntiAliasDownsample: Gaussian blur evaluated at every n-th pixel (strided conv)."""

    def __init__(self, rt: Runtime, downsample) -> None:
        super().__init__()
        self.stride, self.pad, self.channels = downsample.stride, downsample.pad, downsample.channels
        rt.derive(self, "kernel", lambda: downsample.kernel.to(rt.dtype))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        padded = F.pad(image.to(self.kernel.dtype), (self.pad,) * 4)
        return F.conv2d(padded, self.kernel, stride=self.stride, groups=self.channels)


class FastKeypointDetector(nn.Module):
    """image (B, C, S, S) -> Keypoints (value (B, K, 2) float32, jacobian (B, K, 2, 2) float32 or None)."""

    def __init__(self, rt: Runtime, detector: KeypointDetector) -> None:
        super().__init__()
        self.rt = rt
        self.num_kp = detector.num_kp
        self.temperature = detector.temperature
        self.num_jacobian_maps = detector.num_jacobian_maps
        self.downsample = None if detector.downsample is None else FastAntiAlias(rt, detector.downsample)
        self.hourglass = FastHourglass(rt, detector.hourglass)
        heads = [detector.heatmap_head] + ([detector.jacobian_head] if detector.jacobian_head is not None else [])
        self.heads = Conv(rt, heads)

    def forward(self, image: torch.Tensor) -> Keypoints:
        x = self.downsample(image) if self.downsample is not None else image
        features = self.hourglass(self.rt.feature(x))
        maps = self.heads(features).float()  # (B, K [+ 4 J], h, w)
        bs, _, h, w = maps.shape
        k = self.num_kp
        heatmap = torch.softmax(maps[:, :k].reshape(bs, k, h * w) / self.temperature, dim=2)
        grid = make_coordinate_grid(h, w, torch.float32, maps.device).view(h * w, 2)
        value = heatmap @ grid
        jacobian = None
        if self.num_jacobian_maps:
            jacobian_map = maps[:, k:].reshape(bs, self.num_jacobian_maps, 4, h * w)
            jacobian = (jacobian_map @ heatmap.unsqueeze(-1)).view(bs, k, 2, 2)
        return Keypoints(value, jacobian)


class FastDenseMotion(nn.Module):
    """(downsampled source (B, C, h, w) float32, source and driving keypoints) ->
    (flow (B, h, w, 2), occlusion (B, 1, h, w), driving heatmaps (B, K, h, w)), all float32."""

    def __init__(self, rt: Runtime, network: DenseMotionNetwork) -> None:
        super().__init__()
        if network.occlusion_head is None:
            raise ValueError("the fast path needs a dense motion network with an occlusion head "
                             "(dm_estimate_occlusion=True), as the generator does")
        self.rt = rt
        self.num_kp, self.variance = network.num_kp, network.kp_variance
        self.hourglass = FastHourglass(rt, network.hourglass)
        self.heads = Conv(rt, [network.mask_head, network.occlusion_head])

    def forward(self, small_source: torch.Tensor, kp_source: Keypoints,
                kp_driving: Keypoints) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        backend = self.rt.options.backend
        h, w = small_source.shape[-2:]
        js, jd = kp_source.jacobian, kp_driving.jacobian
        hourglass_input = ops.dense_motion_input(small_source, kp_source.value, kp_driving.value, js, jd,
                                                 align_corners=False, variance=self.variance, backend=backend)
        logits = self.heads(self.hourglass(self.rt.feature(hourglass_input)))
        k = self.num_kp
        flow = ops.compose_flow(logits[:, :k + 1].float(), kp_source.value, kp_driving.value, js, jd, backend=backend)
        occlusion = torch.sigmoid(logits[:, k + 1:].float())
        heatmaps = ops.keypoint_heatmaps(kp_driving.value, (h, w), self.variance, backend=backend)
        return flow.float(), occlusion, heatmaps
