"""Pyramid perceptual loss (FOMM Sec. 3.3, MCC's ``MultiScalePyramidPerceptualLoss``).

For every scale s of an anti-aliased image pyramid (official: 1, 0.5, 0.25, 0.125) and every
VGG19 layer l (relu1_1 ... relu5_1, weights w_l, official all 1):

    loss = sum_s sum_l w_l * mean(|vgg_l(pyramid_s(prediction)) - sg(vgg_l(pyramid_s(target)))|)

a plain sum over scales and layers (no averaging over them), with the target's features
detached, exactly as the official. The target branch runs under ``torch.no_grad`` (same value
and gradients as detaching, less memory).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mcc_fast.model.motion.antialias import AntiAliasDownsample

from .vgg19 import Vgg19

__all__ = ["OFFICIAL_PYRAMID_SCALES", "OFFICIAL_LAYER_WEIGHTS", "ImagePyramid", "PyramidPerceptualLoss"]

OFFICIAL_PYRAMID_SCALES = (1.0, 0.5, 0.25, 0.125)
OFFICIAL_LAYER_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0)


class ImagePyramid(nn.Module):
    """Anti-aliased image pyramid (FOMM ``ImagePyramide``): image -> one image per scale.

    Scale 1 returns the input itself; scale s < 1 is a Gaussian blur with sigma = (1/s - 1)/2,
    kernel 2*round(4 sigma)+1, zero padding, then every (1/s)-th pixel (FOMM
    ``AntiAliasInterpolation2d``). 1/s must be an integer. (B, C, H, W) -> list of
    (B, C, ceil(H s), ceil(W s)) in the input's dtype, in the order of `scales`.
    """

    def __init__(self, scales: Sequence[float] = OFFICIAL_PYRAMID_SCALES, channels: int = 3) -> None:
        super().__init__()
        scales = tuple(float(s) for s in scales)
        if not scales:
            raise ValueError("scales must not be empty")
        for s in scales:
            if not 0 < s <= 1 or abs(1 / s - round(1 / s)) > 1e-9:
                raise ValueError(f"every scale must be 1/n for an integer n >= 1, got {s}")
        self.scales = scales
        self.channels = int(channels)
        self.downsamplers = nn.ModuleList(
            nn.Identity() if s == 1 else AntiAliasDownsample(self.channels, s) for s in scales
        )

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """image (B, channels, H, W) float -> [image at each scale]."""
        if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[1] != self.channels:
            raise ValueError(
                f"image must be a (B, {self.channels}, H, W) tensor, got {getattr(image, 'shape', type(image))}"
            )
        return [down(image) for down in self.downsamplers]


class PyramidPerceptualLoss(nn.Module):
    """Pyramid perceptual loss between a prediction and a target, both (B, 3, H, W) float.

    vgg: a `Vgg19` (frozen; load real weights with `load_vgg19`, or `Vgg19(random_init_ok=True)`
    for smoke runs). Returns a () tensor in float32 (the per-term means are accumulated in
    float32 even under autocast). The smallest pyramid level must be at least 16x16 (VGG's
    four pools): 128x128 images for the official scales.
    """

    def __init__(
        self,
        vgg: Vgg19,
        scales: Sequence[float] = OFFICIAL_PYRAMID_SCALES,
        layer_weights: Sequence[float] = OFFICIAL_LAYER_WEIGHTS,
        channels: int = 3,
    ) -> None:
        super().__init__()
        if not isinstance(vgg, Vgg19):
            raise TypeError(f"vgg must be a Vgg19, got {type(vgg).__name__}")
        layer_weights = tuple(float(w) for w in layer_weights)
        if len(layer_weights) != 5:
            raise ValueError(f"layer_weights must have 5 entries (relu1_1..relu5_1), got {len(layer_weights)}")
        self.vgg = vgg
        self.pyramid = ImagePyramid(scales, channels)
        self.layer_weights = layer_weights

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """prediction, target: (B, 3, H, W) -> () loss (gradient flows to `prediction` only)."""
        if not isinstance(prediction, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise TypeError("prediction and target must be tensors")
        if prediction.shape != target.shape:
            raise ValueError(
                f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} must have the same shape"
            )
        predicted_levels = self.pyramid(prediction)
        with torch.no_grad():
            target_levels = self.pyramid(target.detach())
        total = prediction.new_zeros((), dtype=torch.float32)
        for predicted_image, target_image in zip(predicted_levels, target_levels):
            predicted_features = self.vgg(predicted_image)
            with torch.no_grad():
                target_features = self.vgg(target_image)
            for weight, p, t in zip(self.layer_weights, predicted_features, target_features):
                if weight == 0:
                    continue
                total = total + weight * (p.float() - t.float()).abs().mean()
        return total
