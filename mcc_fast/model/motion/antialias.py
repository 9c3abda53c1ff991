"""Band-limited (Gaussian) downsampling used in front of both motion networks."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gaussian_downsample_kernel(channels: int, scale: float) -> torch.Tensor:
    """The official anti-aliasing kernel for downsampling by ``scale``: (channels, 1, k, k) float32.

    sigma = (1/scale - 1) / 2, k = 2 * round(4 sigma) + 1 (Python's round, as the official),
    a normalised separable Gaussian centred at (k-1)/2. scale 0.25 gives sigma 1.5, k 13.
    """
    sigma = (1.0 / scale - 1.0) / 2.0
    size = 2 * round(sigma * 4) + 1
    t = torch.arange(size, dtype=torch.float64)
    g = torch.exp(-((t - (size - 1) / 2) ** 2) / (2 * sigma**2))
    kernel = torch.outer(g, g)
    kernel = kernel / kernel.sum()
    return kernel.to(torch.float32).expand(channels, 1, size, size).contiguous()


class AntiAliasDownsample(nn.Module):
    """Gaussian blur (depthwise, zero padding keeping the size) then every n-th pixel, n = 1/scale.

    (B, C, H, W) -> (B, C, ceil(H/n), ceil(W/n)), same dtype. The kernel is a persistent buffer
    (it is in the official state dict). The blur is evaluated only at the kept pixels (a
    strided convolution), which is the same arithmetic as blurring everything and slicing.
    """

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        if not 0 < scale < 1:
            raise ValueError(f"scale must be in (0, 1) for a downsample, got {scale!r}")
        self.channels = channels
        self.stride = int(round(1.0 / scale))
        self.register_buffer("kernel", gaussian_downsample_kernel(channels, scale))
        self.pad = self.kernel.shape[-1] // 2

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        padded = F.pad(image, (self.pad, self.pad, self.pad, self.pad))
        return F.conv2d(padded, self.kernel.to(image.dtype), stride=self.stride, groups=self.channels)
