"""PatchGAN discriminator used by the official training (VQGAN's ``VQGANDiscriminator``).

Official config: nc 3, ndf 64, n_layers 4. Layers:

* stem: conv4x4 stride 2 pad 1 (with bias) 3 -> ndf, LeakyReLU(0.2);
* n_layers - 1 blocks: conv4x4 stride 2 pad 1 (no bias) -> ndf * min(2**n, 8), BatchNorm,
  LeakyReLU(0.2), for n = 1 .. n_layers - 1;
* one block: conv4x4 stride 1 pad 1 (no bias) -> ndf * min(2**n_layers, 8), BatchNorm,
  LeakyReLU(0.2);
* head: conv4x4 stride 1 pad 1 (with bias) -> 1 logit per patch.

Default PyTorch initialisation (the official does not re-initialise). 6,960,961 parameters
for the default config; a 256x256 image gives (B, 1, 14, 14) logits. Its BatchNorm is plain
(the official's ``nn.BatchNorm2d``): under DDP each process normalises its own batch; the
trainer's ``train.sync_bn`` leaves it so.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

__all__ = ["PatchDiscriminatorConfig", "PatchDiscriminator", "convert_official_discriminator_state_dict"]


@dataclass(frozen=True)
class PatchDiscriminatorConfig:
    """Discriminator sizes. Defaults are the official (nc 3, ndf 64, n_layers 4, max multiplier 8)."""

    in_channels: int = 3
    base_channels: int = 64
    num_layers: int = 4
    max_channel_multiplier: int = 8
    negative_slope: float = 0.2

    def __post_init__(self) -> None:
        for name in ("in_channels", "base_channels", "num_layers", "max_channel_multiplier"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"PatchDiscriminatorConfig.{name} must be a positive int, got {value!r}")

    def block_channels(self) -> list[tuple[int, int, int]]:
        """(in, out, stride) of the normalised blocks between the stem and the head."""
        blocks = []
        mult_prev = 1
        for n in range(1, self.num_layers):
            mult = min(2**n, self.max_channel_multiplier)
            blocks.append((self.base_channels * mult_prev, self.base_channels * mult, 2))
            mult_prev = mult
        mult = min(2**self.num_layers, self.max_channel_multiplier)
        blocks.append((self.base_channels * mult_prev, self.base_channels * mult, 1))
        return blocks

    def output_size(self, image_size: int) -> int:
        """Side of the logit map for a square image of side `image_size`."""
        size = image_size
        for _ in range(self.num_layers):  # stem + (num_layers - 1) stride-2 blocks
            size = (size + 2 - 4) // 2 + 1
        return size - 2  # two stride-1 4x4 convs with padding 1


class _NormalisedConv(nn.Module):
    """conv4x4 (no bias) -> BatchNorm -> LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, negative_slope: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=stride, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.LeakyReLU(negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class PatchDiscriminator(nn.Module):
    """Image (B, in_channels, H, W) -> patch logits (B, 1, h, w) (h = config.output_size(H))."""

    def __init__(self, config: PatchDiscriminatorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or PatchDiscriminatorConfig()
        self.stem = nn.Conv2d(config.in_channels, config.base_channels, kernel_size=4, stride=2, padding=1)
        self.stem_act = nn.LeakyReLU(config.negative_slope)
        self.blocks = nn.ModuleList(
            _NormalisedConv(i, o, s, config.negative_slope) for i, o, s in config.block_channels()
        )
        self.head = nn.Conv2d(config.block_channels()[-1][1], 1, kernel_size=4, stride=1, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, C, H, W) float -> logits (B, 1, h, w) in the input's dtype (or autocast's)."""
        if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[1] != self.config.in_channels:
            raise ValueError(
                f"image must be a (B, {self.config.in_channels}, H, W) tensor, got {getattr(image, 'shape', type(image))}"
            )
        if self.config.output_size(min(image.shape[-2:])) < 1:
            raise ValueError(f"image {tuple(image.shape[-2:])} is too small for {self.config.num_layers} layers")
        x = self.stem_act(self.stem(image))
        for block in self.blocks:
            x = block(x)
        return self.head(x)


_OFFICIAL_KEY = re.compile(r"^(?:module\.)?main\.(\d+)\.(.+)$")


def convert_official_discriminator_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: PatchDiscriminatorConfig | None = None
) -> dict[str, torch.Tensor]:
    """Map an official ``VQGANDiscriminator`` state dict (``main.N.*`` keys, optional ``module.``
    prefix) to `PatchDiscriminator` keys. ValueError naming the keys it cannot place."""
    config = config or PatchDiscriminatorConfig()
    n_blocks = len(config.block_channels())
    places = {0: "stem", 2 + 3 * n_blocks: "head"}
    for i in range(n_blocks):
        places[2 + 3 * i] = f"blocks.{i}.conv"
        places[3 + 3 * i] = f"blocks.{i}.norm"
    out, unknown = {}, []
    for key, value in state_dict.items():
        match = _OFFICIAL_KEY.match(key)
        if match is None or int(match.group(1)) not in places:
            unknown.append(key)
            continue
        out[f"{places[int(match.group(1))]}.{match.group(2)}"] = value
    if unknown:
        raise ValueError(f"not keys of an official VQGANDiscriminator with {config.num_layers} layers: {unknown}")
    return out
