"""The MRFA flow updater: motion tokens + displacement + warped context -> flow/occlusion residuals.

Widths for updater_width W (official W = 128): motion encoder 1x1 md -> W, 3x3 W -> 3W/4
on the tokens (resized T -> F); 7x7 2 -> W, 3x3 W -> W/2 on the displacement; 3x3 -> W-2,
concatenated with the displacement (W channels). Context: ReLU(1x1 C_k -> 3W/2) of the
scale's warped source feature (at the feature resolution, then resized to F), 3x3 -> W +
ReLU. Heads on [motion, context] (2W): 3x3 -> W, ReLU, 3x3 -> 2 (flow, in flow pixels) and
3x3 -> W, ReLU, 3x3 -> 1 (occlusion logit residual). All ReLU. Resizes: bilinear,
align_corners=True, only when sizes differ.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import GeneratorConfig
from .warping import resize_map


class FlowUpdater(nn.Module):
    """(scale, displacement (B,2,F,F), tokens (B,md,T,T), warped source (B,C_k,R,R)) ->
    (flow residual (B,F,F,2) in flow pixels, occlusion logit residual (B,1,F,F))."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.flow_size = config.flow_size
        w = config.updater_width
        token_mid, flow_mid, context = 3 * w // 4, w // 2, 3 * w // 2
        self.token_conv1 = nn.Conv2d(config.motion_dim, w, 1)
        self.token_conv2 = nn.Conv2d(w, token_mid, 3, padding=1)
        self.flow_conv1 = nn.Conv2d(2, w, 7, padding=3)
        self.flow_conv2 = nn.Conv2d(w, flow_mid, 3, padding=1)
        self.motion_fuse = nn.Conv2d(token_mid + flow_mid, w - 2, 3, padding=1)
        self.context_projections = nn.ModuleList(nn.Conv2d(c, context, 1) for c in config.scale_channels)
        self.context_conv = nn.Conv2d(context, w, 3, padding=1)
        self.flow_hidden = nn.Conv2d(2 * w, w, 3, padding=1)
        self.flow_out = nn.Conv2d(w, 2, 3, padding=1)
        self.occlusion_hidden = nn.Conv2d(2 * w, w, 3, padding=1)
        self.occlusion_out = nn.Conv2d(w, 1, 3, padding=1)

    def encode_motion(self, displacement: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 2, F, F), (B, md, T, T) -> (B, W, F, F)."""
        tokens = resize_map(tokens, self.flow_size)
        t = F.relu(self.token_conv2(F.relu(self.token_conv1(tokens))))
        f = F.relu(self.flow_conv2(F.relu(self.flow_conv1(displacement))))
        fused = F.relu(self.motion_fuse(torch.cat((t, f), dim=1)))
        return torch.cat((fused, displacement), dim=1)

    def forward(self, scale: int, displacement: torch.Tensor, tokens: torch.Tensor,
                warped_source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        motion = self.encode_motion(displacement, tokens)
        context = resize_map(F.relu(self.context_projections[scale](warped_source)), self.flow_size)
        features = torch.cat((motion, F.relu(self.context_conv(context))), dim=1)
        delta_flow = self.flow_out(F.relu(self.flow_hidden(features)))
        delta_occlusion = self.occlusion_out(F.relu(self.occlusion_hidden(features)))
        return delta_flow.permute(0, 2, 3, 1), delta_occlusion
