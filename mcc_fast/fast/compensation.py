"""Fast motion and appearance codebook compensation and the MRFA flow updater (one scale each).

Same functions as the reference modules (mcc_fast.model.generator.*), computed on
channels-last maps in the compute dtype with batch-first tokens that are free views of
them. Inputs and outputs that are geometry (displacements, flow and occlusion residuals)
are float32. Merged convolutions: the updater's flow and occlusion hidden convs (one conv
of 2W outputs) and its two output convs (one block-diagonal conv of 3 outputs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model.generator.appearance_compensation import AppearanceCompensation
from ..model.generator.config import GeneratorConfig
from ..model.generator.flow_updater import FlowUpdater
from ..model.generator.motion_compensation import MotionCompensation
from .attention import FastCodebookLayer
from .layers import BlockDiagonalConv, Conv, FastDownsample, FastResBlock
from .runtime import Runtime


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear, align_corners=True resize of (B, C, h, w) to (size, size); no-op when equal."""
    if x.shape[-2] == size and x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=True)


class FastMotionCompensation(nn.Module):
    """Query encoder, displacement embedding, token fusion and the motion transformer layers."""

    def __init__(self, rt: Runtime, motion: MotionCompensation, config: GeneratorConfig) -> None:
        super().__init__()
        self.rt = rt
        self.grid, self.dim = config.token_grid, config.motion_dim
        query = motion.query
        self.source_projections = nn.ModuleList(Conv(rt, c) for c in query.source_projections)
        self.heatmap_projection = Conv(rt, query.heatmap_projection)
        self.query_fuse = Conv(rt, query.fuse)
        embed = motion.displacement_embedding
        self.embed_conv, self.embed_down, self.embed_res = Conv(rt, embed[0]), FastDownsample(rt, embed[1]), \
            FastResBlock(rt, embed[2])
        self.token_fuse = Conv(rt, motion.token_fuse)
        self.layers = nn.ModuleList(
            FastCodebookLayer(rt, layer, lambda: motion.position_embedding, motion.codebook, config.token_grid)
            for layer in motion.layers)

    def heatmap_features(self, heatmaps: torch.Tensor) -> torch.Tensor:
        """Driving heatmaps (B, K, h, w) float32 -> (B, md, T, T), once per frame for every scale."""
        resized = resize(heatmaps, self.grid)
        return F.relu(self.heatmap_projection(self.rt.feature(resized)))

    def forward(self, scale: int, warped_source: torch.Tensor, heatmap_features: torch.Tensor,
                displacement: torch.Tensor) -> torch.Tensor:
        """warped_source (B, C_k, R, R); displacement (B, F, F, 2) float32 flow pixels -> tokens (B, md, T, T)."""
        source = F.relu(self.source_projections[scale](resize(warped_source, self.grid)))
        query = self.query_fuse(torch.cat((source, heatmap_features), dim=1))
        embedded = self.embed_conv(self.rt.feature(displacement.permute(0, 3, 1, 2)))
        embedded = self.embed_res(self.embed_down(embedded))
        tokens = self.token_fuse(torch.cat((embedded, resize(query, embedded.shape[-1])), dim=1))
        b, md = tokens.shape[:2]
        seq = tokens.permute(0, 2, 3, 1).reshape(b, self.grid * self.grid, md)
        for layer in self.layers:
            seq = layer(seq, scale)
        return seq.view(b, self.grid, self.grid, md).permute(0, 3, 1, 2)


class FastFlowUpdater(nn.Module):
    """(scale, displacement (B,2,F,F) float32, tokens (B,md,T,T), warped source (B,C_k,R,R)) ->
    (flow residual (B,F,F,2) float32 in flow pixels, occlusion logit residual (B,1,F,F) float32)."""

    def __init__(self, rt: Runtime, updater: FlowUpdater) -> None:
        super().__init__()
        self.rt = rt
        self.flow_size = updater.flow_size
        u = updater
        self.token_conv1, self.token_conv2 = Conv(rt, u.token_conv1), Conv(rt, u.token_conv2)
        self.flow_conv1, self.flow_conv2 = Conv(rt, u.flow_conv1), Conv(rt, u.flow_conv2)
        self.motion_fuse = Conv(rt, u.motion_fuse)
        self.context_projections = nn.ModuleList(Conv(rt, c) for c in u.context_projections)
        self.context_conv = Conv(rt, u.context_conv)
        self.hidden = Conv(rt, [u.flow_hidden, u.occlusion_hidden])
        self.heads = BlockDiagonalConv(rt, [u.flow_out, u.occlusion_out])

    def forward(self, scale: int, displacement: torch.Tensor, tokens: torch.Tensor,
                warped_source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        disp = self.rt.feature(displacement)
        t = F.relu(self.token_conv2(F.relu(self.token_conv1(resize(tokens, self.flow_size)))))
        f = F.relu(self.flow_conv2(F.relu(self.flow_conv1(disp))))
        motion = torch.cat((F.relu(self.motion_fuse(torch.cat((t, f), dim=1))), disp), dim=1)
        context = resize(F.relu(self.context_projections[scale](warped_source)), self.flow_size)
        features = torch.cat((motion, F.relu(self.context_conv(context))), dim=1)
        out = self.heads(F.relu(self.hidden(features))).float()  # (B, 3, F, F): flow x, y; occlusion
        return out[:, :2].permute(0, 2, 3, 1), out[:, 2:]


class PatchTokens(nn.Module):
    """Reference PatchTokenizer + PatchUntokenizer of one scale on channels-last maps.

    tokenize (B, C, T p, T p) -> (B, T*T, d); untokenize (B, T*T, d) -> (B, C, T p, T p).
    """

    def __init__(self, rt: Runtime, tokenizer, untokenizer) -> None:
        super().__init__()
        self.rt = rt
        self.patch, self.grid, self.dim, self.channels = tokenizer.patch, tokenizer.grid, tokenizer.dim, \
            untokenizer.channels
        if self.patch == 1:
            self.tok, self.untok = Conv(rt, tokenizer.proj), Conv(rt, untokenizer.proj)
        else:
            # tokenizer features are flattened (p_y, p_x, c) like the reference's permute
            rt.derive(self, "w_tok", lambda: rt.weight(tokenizer.proj.weight))
            rt.derive(self, "b_tok", lambda: rt.weight(tokenizer.proj.bias))
            rt.derive(self, "w_untok", lambda: rt.weight(untokenizer.proj.weight))
            rt.derive(self, "b_untok", lambda: rt.weight(untokenizer.proj.bias))

    def tokenize(self, feature: torch.Tensor) -> torch.Tensor:
        b, c = feature.shape[:2]
        g, p = self.grid, self.patch
        if p == 1:
            return self.tok(feature).permute(0, 2, 3, 1).reshape(b, g * g, self.dim)
        nhwc = feature.permute(0, 2, 3, 1)  # (B, T p, T p, C), a view when channels-last
        patches = nhwc.reshape(b, g, p, g, p, c).permute(0, 1, 3, 2, 4, 5).reshape(b, g * g, p * p * c)
        return F.linear(patches, self.w_tok, self.b_tok)

    def untokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        b = tokens.shape[0]
        g, p, c = self.grid, self.patch, self.channels
        if p == 1:
            return self.untok(tokens.view(b, g, g, self.dim).permute(0, 3, 1, 2))
        patches = F.linear(tokens, self.w_untok, self.b_untok).view(b, g, g, p, p, c)
        nhwc = patches.permute(0, 1, 3, 2, 4, 5).reshape(b, g * p, g * p, c)
        return nhwc.permute(0, 3, 1, 2)


class FastAppearanceCompensation(nn.Module):
    """Per-scale tokenisers, the appearance transformer layers and the un-tokenisers."""

    def __init__(self, rt: Runtime, appearance: AppearanceCompensation, config: GeneratorConfig) -> None:
        super().__init__()
        self.patches = nn.ModuleList(PatchTokens(rt, t, u) for t, u in
                                     zip(appearance.tokenizers, appearance.untokenizers))
        self.layers = nn.ModuleList(
            FastCodebookLayer(rt, layer, lambda: appearance.position_embedding, appearance.codebook,
                              config.token_grid)
            for layer in appearance.layers)

    def forward(self, scale: int, feature: torch.Tensor, ignored: torch.Tensor) -> torch.Tensor:
        """feature (B, C_k, R, R), ignored (B, T*T) bool (first layer's key mask) -> (B, C_k, R, R)."""
        tokens = self.patches[scale].tokenize(feature)
        for i, layer in enumerate(self.layers):
            tokens = layer(tokens, scale, ignored if i == 0 else None)
        return self.patches[scale].untokenize(tokens)
