"""The MCC generator (official `AppMotionCompFormer`), reference path.

Data flow for one frame (B samples; n scales coarse to fine; F flow size; T token grid):

    source --encoder--> per-scale features (once per source: `encode_source`)
    flow_0 = dm deformation, occ_0 = dm occlusion (already a sigmoid)
    for scale k = 0 .. n-1:
        warped   = warp(feature_k, flow_k)                          (query warp, no occlusion)
        tokens   = motion transformer(query(warped, heatmaps), (flow_k - grid) (F-1)/2)
        d, d_occ = flow updater(tokens, displacement, warped)
        flow_k+1 = flow_k + d / ((F-1)/2);  occ_k+1 = sigmoid(occ_k + d_occ)
        comp_k   = appearance transformer(warp(feature_k, flow_k+1) * occ_k+1,
                                          mask = flow_k+1 out of frame at T x T)
    frame = decoder(comp_0), fusing comp_k after the first ResBlock of decoder level k >= 1

The sigmoid is applied again at every scale, the first included (whose input occlusion is
already a sigmoid), exactly like the official. This reference follows the official op for
op (separate grid_sample calls, sequence-first nn.MultiheadAttention, the redundant detached
warp per scale when `config.redundant_detached_warp`), so its cost stands for the official's.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .appearance_compensation import AppearanceCompensation
from .config import GeneratorConfig
from .decoder import Decoder
from .encoder import Encoder
from .flow_updater import FlowUpdater
from .fusion import FusionBlock
from .motion_compensation import MotionCompensation
from .outputs import GeneratorOutput, SourceFeatures, TrainingOutputs, check_image, read_dense_motion
from ..fused import FusedOps
from .warping import identity_grid, occlude, out_of_frame_tokens, warp, warp_occluded


class Generator(nn.Module):
    """MCC generator: `generator(source, dm)` -> frame (B, image_channels, S, S).

    Parameters are float32; inputs are float images in [-1, 1] (B, image_channels, S, S)
    and the motion estimator's output `dm` (see `outputs.read_dense_motion`).
    `fused`: run the warps on mcc_fast.ops (set by `Model.use_fused_ops`; None: reference).
    """

    fused: FusedOps | None = None

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        super().__init__()
        self.config = config = GeneratorConfig() if config is None else config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.motion = MotionCompensation(config)
        self.flow_updater = FlowUpdater(config)
        self.appearance = AppearanceCompensation(config)
        self.fusions = nn.ModuleDict(
            {str(k): FusionBlock(c, config.norm_groups)
             for k, c in enumerate(config.scale_channels) if k >= 1})

    # ---- source-only part --------------------------------------------------------------

    def encode_source(self, source: torch.Tensor) -> SourceFeatures:
        """source (B, image_channels, S, S) -> the per-scale encoder features (cacheable)."""
        check_image(source, "source", self.config)
        return SourceFeatures(per_scale=tuple(self.encoder(source)))

    # ---- per-frame part ----------------------------------------------------------------

    def forward(self, source: torch.Tensor, dm: Any, *, return_all: bool = False,
                driving: torch.Tensor | None = None) -> torch.Tensor | GeneratorOutput:
        """Generate the frame for `source` moved by `dm` (the motion estimator's output).

        Returns the frame (B, image_channels, S, S), or with `return_all` a GeneratorOutput
        (flows, residuals, occlusions, token masks; plus the training outputs when
        `driving`, the ground-truth frame (B, image_channels, S, S), is given).
        """
        return self.render(self.encode_source(source), dm, return_all=return_all, driving=driving)

    def render(self, features: SourceFeatures, dm: Any, *, return_all: bool = False,
               driving: torch.Tensor | None = None) -> torch.Tensor | GeneratorOutput:
        """The per-frame part of `forward`, from cached `encode_source` features."""
        cfg = self.config
        batch = features.batch_size
        motion_in = read_dense_motion(dm, cfg, batch)
        training = driving is not None
        if training:
            if not return_all:
                raise ValueError("driving is given (training outputs requested): pass return_all=True")
            check_image(driving, "driving", cfg)
            if driving.shape[0] != batch:
                raise ValueError(f"driving has batch {driving.shape[0]} but the source has batch {batch}")

        pixels = cfg.displacement_scale
        grid = identity_grid(cfg.flow_size, motion_in.deformation.device)
        heatmap_features = self.motion.query.heatmap_features(motion_in.heatmaps)

        flow, occlusion = motion_in.deformation, motion_in.occlusion
        flows, residuals, occlusions, masks, compensated = [flow], [], [], [], []
        motion_vq, motion_recon = [], []
        for k, feature in enumerate(features.per_scale):
            # Motion codebook compensation and the MRFA update of flow and occlusion.
            warped_for_query = warp(feature, flow, self.fused)
            query = self.motion.query(k, warped_for_query, heatmap_features)
            # Flows stay fp32; a half-precision model reads the displacement in its own dtype.
            displacement = ((flow - grid) * pixels).to(feature.dtype)
            motion = self.motion(k, displacement, query, quantize=training)
            delta_flow, delta_occlusion = self.flow_updater(
                k, displacement.permute(0, 3, 1, 2), motion.tokens, warped_for_query)
            if motion.vq is not None:
                motion_vq.append(motion.vq)
                motion_recon.append(self.motion.decode_displacement(motion.vq.quantized) / pixels)
            residual = delta_flow / pixels
            flow = flow + residual
            occlusion = torch.sigmoid(occlusion + delta_occlusion)

            # Appearance codebook compensation of the warped, occluded feature.
            warped = warp_occluded(feature, flow, occlusion, self.fused)
            if cfg.redundant_detached_warp and self.fused is None:  # the official's unused detached copy
                occlude(warp(feature.detach(), flow), occlusion.detach())
            mask = out_of_frame_tokens(flow, cfg.token_grid)
            compensated.append(self.appearance(k, warped, mask))

            flows.append(flow)
            residuals.append(residual)
            occlusions.append(occlusion)
            masks.append(mask)

        def fuse(k: int, x: torch.Tensor) -> torch.Tensor:
            if k >= len(compensated):
                return x
            return self.fusions[str(k)](compensated[k], x, cfg.fusion_weight)

        frame = self.decoder(compensated[0], fuse)
        if not return_all:
            return frame

        training_outputs = None
        if training:
            targets = self.encoder.appearance_targets(driving)
            app_vq = [self.appearance.quantize_target(k, t) for k, t in enumerate(targets)]
            training_outputs = TrainingOutputs(
                motion_vq_losses=[q.loss for q in motion_vq],
                motion_code_indices=[q.indices for q in motion_vq],
                motion_reconstructions=motion_recon,
                appearance_vq_losses=[q.loss for q in app_vq],
                appearance_code_indices=[q.indices for q in app_vq],
                low_res_frame=self.decoder(compensated[0]),
            )
        return GeneratorOutput(frame=frame, flows=flows, flow_residuals=residuals, occlusions=occlusions,
                               appearance_token_masks=masks, training=training_outputs)
