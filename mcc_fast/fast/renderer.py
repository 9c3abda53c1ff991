"""The fast per-frame step: driving keypoints -> dense motion -> compensation cascade -> frame.

For one frame batch (B samples, source-only work taken from a SourceCache):

    flow, occ, heatmaps = dense motion (fused input + flow composition), float32
    hf = heatmap features (once for every scale)
    for scale k:
        q      = warp(feature_k, flow)                       fused resize + sample
        tokens = motion transformer(q, hf, (flow - grid) (F-1)/2)
        flow  += d_flow / ((F-1)/2);  occ = sigmoid(occ + d_occ)     (float32)
        comp_k = appearance transformer(warp(feature_k, flow, occ), out-of-frame mask)
    frame = decoder(comp) with fusion

Differences from the reference generator: no detached duplicate warp; the occlusion is
multiplied inside the warp; flows, occlusions, masks and displacements are float32 while
features run in the compute dtype (channels-last); a sample whose appearance tokens are all
out of frame attends to all of them (attention.py) instead of producing NaN.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .. import ops
from ..model.generator.warping import identity_grid, out_of_frame_tokens
from ..model.model import Model
from ..model.motion.keypoint_detector import Keypoints
from ..model.summary import summary_repr
from .codec import FastDecoder
from .compensation import FastAppearanceCompensation, FastFlowUpdater, FastMotionCompensation
from .motion import FastDenseMotion, FastKeypointDetector
from .runtime import Runtime


@dataclass
class FastFrame:
    """Per-frame outputs with `return_all=True` (float32 geometry, like GeneratorOutput).

    frame: (B, 3, S, S) in the compute dtype, channels-last.
    flows: n + 1 flows (B, F, F, 2): the dense-motion flow, then the flow after each scale.
    occlusions: n occlusions (B, 1, F, F) used at each scale.
    appearance_token_masks: n (B, T*T) bool, True = out of frame (ignored as a key; see
        attention.keep_mask for samples where all are).
    """

    __repr__ = summary_repr

    frame: torch.Tensor
    flows: list[torch.Tensor]
    occlusions: list[torch.Tensor]
    appearance_token_masks: list[torch.Tensor]


class FastRenderer(nn.Module):
    """The per-frame modules of the fast path (module docstring)."""

    def __init__(self, rt: Runtime, model: Model) -> None:
        super().__init__()
        self.rt = rt
        cfg = model.config.generator
        self.config = cfg
        self.pixels = cfg.displacement_scale
        self.detector = FastKeypointDetector(rt, model.motion_estimator.keypoint_detector)
        self.dense_motion = FastDenseMotion(rt, model.motion_estimator.dense_motion_net)
        gen = model.generator
        self.motion = FastMotionCompensation(rt, gen.motion, cfg)
        self.updater = FastFlowUpdater(rt, gen.flow_updater)
        self.appearance = FastAppearanceCompensation(rt, gen.appearance, cfg)
        self.decoder = FastDecoder(rt, gen.decoder, gen.fusions, cfg.fusion_weight)
        rt.derive(self, "grid", lambda: identity_grid(cfg.flow_size, rt.device))

    def generate(self, features: tuple[torch.Tensor, ...], flow: torch.Tensor, occlusion: torch.Tensor,
                 heatmaps: torch.Tensor, return_all: bool = False) -> torch.Tensor | FastFrame:
        """The generator part. features: per-scale source features (compute dtype); flow
        (B, F, F, 2), occlusion (B, 1, F, F) (after its sigmoid), heatmaps (B, K, h, w): float32.
        Returns the frame (B, 3, S, S) in the compute dtype (or a FastFrame)."""
        rt, backend, pixels = self.rt, self.rt.options.backend, self.pixels
        flow, occlusion = flow.float(), occlusion.float()
        heatmap_features = self.motion.heatmap_features(heatmaps.float())
        flows, occlusions, masks, compensated = [flow], [], [], []
        for k, feature in enumerate(features):
            warped_for_query = rt.feature(ops.warp(feature, flow, backend=backend))
            displacement = (flow - self.grid) * pixels
            tokens = self.motion(k, warped_for_query, heatmap_features, displacement)
            delta_flow, delta_occlusion = self.updater(k, displacement.permute(0, 3, 1, 2), tokens, warped_for_query)
            flow = flow + delta_flow / pixels
            occlusion = torch.sigmoid(occlusion + delta_occlusion)
            warped = rt.feature(ops.warp(feature, flow, occlusion, backend=backend))
            ignored = out_of_frame_tokens(flow, self.config.token_grid)
            compensated.append(self.appearance(k, warped, ignored))
            if return_all:
                flows.append(flow)
                occlusions.append(occlusion)
                masks.append(ignored)
        frame = self.decoder(compensated)
        if not return_all:
            return frame
        return FastFrame(frame=frame, flows=flows, occlusions=occlusions, appearance_token_masks=masks)

    def forward(self, features: tuple[torch.Tensor, ...], small_source: torch.Tensor, kp_source: Keypoints,
                kp_driving: Keypoints, return_all: bool = False) -> torch.Tensor | FastFrame:
        """One frame batch from source-only tensors (batch B each) and the driving keypoints."""
        flow, occlusion, heatmaps = self.dense_motion(small_source, kp_source, kp_driving)
        return self.generate(features, flow, occlusion, heatmaps, return_all=return_all)
