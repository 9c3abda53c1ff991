"""LPIPS (VGG, v0.1) through our own network definition; no torchvision, no lpips import.

The function is that of ``lpips.LPIPS(net="vgg", version="0.1")``:

1. inputs in [-1, 1] go through the scaling layer ``(x - shift) / scale`` with
   shift = (-0.030, -0.088, -0.188), scale = (0.458, 0.448, 0.450);
2. the VGG16 feature trunk (torchvision's ``vgg16().features`` layout: 3x3 convs with
   ReLU, 2x2 max pools) is tapped after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
   (``features`` indices 3, 8, 15, 22, 29);
3. each tap is unit-normalised over channels, ``x / (sqrt(sum_c x^2) + 1e-10)``;
4. the squared difference of the two images' normalised taps goes through that layer's
   linear 1x1 conv (C -> 1, no bias; the lpips package's ``linK.model.1.weight``), is
   averaged over space, and the five layers are summed.

Weights come from two local files: a torchvision-format VGG16 state dict
(``features.N.weight/bias``; the conv widths are read from it, so narrow test networks
load too) and the lpips package's ``weights/v0.1/vgg.pth`` (``lin0..lin4.model.1.weight``).
"""
from __future__ import annotations

import os

import torch
from torch import nn

from .weights import load_state_dict

__all__ = ["VGG16_CONV_INDICES", "VGG16_WIDTHS", "VGG16_TAP_INDICES", "LPIPS_SHIFT", "LPIPS_SCALE", "VGG16Features",
           "LPIPSVGG", "normalize_tensor", "spatial_average", "load_lpips_vgg"]

#: ``features`` indices of the 13 convolutions of torchvision's VGG16 (a ReLU follows each).
VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
#: Output channels of those convolutions in VGG16.
VGG16_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
#: ``features`` indices of the max pools before blocks 2..5.
VGG16_POOL_INDICES = (4, 9, 16, 23)
#: ``features`` indices whose outputs LPIPS uses: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
VGG16_TAP_INDICES = (3, 8, 15, 22, 29)
#: The LPIPS scaling layer constants (input in [-1, 1]).
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


def normalize_tensor(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit-normalise (B, C, H, W) features over channels: ``x / (||x||_2 + eps)``."""
    norm = torch.sqrt(torch.sum(features * features, dim=1, keepdim=True))
    return features / (norm + eps)


def spatial_average(values: torch.Tensor) -> torch.Tensor:
    """Mean over the spatial axes of (B, C, H, W), keeping them: (B, C, 1, 1)."""
    return values.mean(dim=(2, 3), keepdim=True)


class VGG16Features(nn.Module):
    """VGG16 ``features`` trunk up to relu5_3, module indices as torchvision's.

    ``widths``: output channels of the 13 convolutions (VGG16: 64, 64, 128, 128, 256 x3,
    512 x6). ``forward`` takes (B, 3, H, W) (H, W >= 16) and returns the five taps
    [relu1_2, relu2_2, relu3_3, relu4_3, relu5_3].
    """

    def __init__(self, widths: tuple[int, ...] = VGG16_WIDTHS):
        super().__init__()
        if len(widths) != len(VGG16_CONV_INDICES):
            raise ValueError(f"widths must list {len(VGG16_CONV_INDICES)} conv widths, got {len(widths)}")
        layers: list[nn.Module] = []
        in_ch, conv = 3, 0
        for index in range(VGG16_TAP_INDICES[-1] + 1):
            if index in VGG16_CONV_INDICES:
                layers.append(nn.Conv2d(in_ch, widths[conv], kernel_size=3, padding=1))
                in_ch = widths[conv]
                conv += 1
            elif index in VGG16_POOL_INDICES:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers.append(nn.ReLU(inplace=False))
        self.features = nn.Sequential(*layers)
        self.widths = tuple(widths)

    def tap_channels(self) -> tuple[int, ...]:
        """Channels of the five taps (the widths of convs 2, 4, 7, 10, 13)."""
        return tuple(self.widths[i] for i in (1, 3, 6, 9, 12))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, 3, H, W) normalised -> the five relu taps (B, C_i, H_i, W_i), float."""
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in VGG16_TAP_INDICES:
                taps.append(x)
        return taps


class LPIPSVGG(nn.Module):
    """LPIPS v0.1 with the VGG16 trunk. ``forward(a, b)`` -> float32 (B,) distances.

    ``a``, ``b``: (B, 3, H, W), float in [-1, 1] or uint8 (read as ``x / 127.5 - 1``,
    which is ``lpips.im2tensor``). Build with :func:`load_lpips_vgg`.
    """

    def __init__(self, widths: tuple[int, ...] = VGG16_WIDTHS):
        super().__init__()
        self.trunk = VGG16Features(widths)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in self.trunk.tap_channels())
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def _to_model_range(x: torch.Tensor, name: str) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{name} must be (B, 3, H, W), got shape {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            return x.to(torch.float32) / 127.5 - 1.0
        if not x.is_floating_point():
            raise TypeError(f"{name} must be uint8 or floating in [-1, 1], got {x.dtype}")
        return x.to(torch.float32)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Images a, b (B, 3, H, W), uint8 or float in [-1, 1] -> LPIPS distance float32 (B,)."""
        a = self._to_model_range(a, "a")
        b = self._to_model_range(b, "b")
        if a.shape != b.shape:
            raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        if min(a.shape[2:]) < 16:
            raise ValueError(f"LPIPS needs images of at least 16x16, got {tuple(a.shape[2:])}")
        both = torch.cat([a, b]).sub(self.shift).div(self.scale)
        total = torch.zeros(a.shape[0], device=a.device, dtype=torch.float32)
        for tap, lin in zip(self.trunk(both), self.lins):
            feat_a, feat_b = normalize_tensor(tap).chunk(2)
            total = total + spatial_average(lin((feat_a - feat_b) ** 2)).flatten()
        return total


def _vgg_widths(state: dict[str, torch.Tensor], path: str) -> tuple[int, ...]:
    widths, in_ch = [], 3
    for index in VGG16_CONV_INDICES:
        weight = state.get(f"features.{index}.weight")
        bias = state.get(f"features.{index}.bias")
        if weight is None or bias is None:
            raise ValueError(
                f"VGG16 weights {path!r}: no features.{index}.weight/bias (expected a torchvision VGG16 state dict)"
            )
        if weight.dim() != 4 or tuple(weight.shape[1:]) != (in_ch, 3, 3) or tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(
                f"VGG16 weights {path!r}: features.{index}.weight has shape {tuple(weight.shape)}, "
                f"expected (C, {in_ch}, 3, 3)"
            )
        widths.append(int(weight.shape[0]))
        in_ch = int(weight.shape[0])
    return tuple(widths)


def load_lpips_vgg(vgg16_path: str | os.PathLike, lin_path: str | os.PathLike,
                   device: str | torch.device = "cpu") -> LPIPSVGG:
    """Build :class:`LPIPSVGG` from a torchvision VGG16 state dict file and the lpips
    package's ``vgg.pth`` linear layers, on ``device``, in eval mode.

    The VGG file may also hold the trunk alone (``N.weight`` keys, as saved from
    ``vgg16().features``); extra keys (``classifier.*``) are ignored. Errors name the file.
    """
    vgg_path, lin_path = str(vgg16_path), str(lin_path)
    vgg_state = load_state_dict(vgg_path)
    if not any(k.startswith("features.") for k in vgg_state):
        vgg_state = {f"features.{k}": v for k, v in vgg_state.items()}
    widths = _vgg_widths(vgg_state, vgg_path)
    with torch.random.fork_rng(devices=[]):  # the random init (replaced below) leaves the global RNG alone
        model = LPIPSVGG(widths)
    trunk_state = {f"features.{i}.{p}": vgg_state[f"features.{i}.{p}"] for i in VGG16_CONV_INDICES for p in ("weight", "bias")}
    model.trunk.load_state_dict(trunk_state, strict=True)

    lin_state = load_state_dict(lin_path)
    for k, (lin, channels) in enumerate(zip(model.lins, model.trunk.tap_channels())):
        key = f"lin{k}.model.1.weight"
        weight = lin_state.get(key)
        if weight is None:
            raise ValueError(f"LPIPS linear weights {lin_path!r}: no {key} (expected the lpips package's vgg.pth)")
        if tuple(weight.shape) != (1, channels, 1, 1):
            raise ValueError(
                f"LPIPS linear weights {lin_path!r}: {key} has shape {tuple(weight.shape)}, expected (1, {channels}, 1, 1) "
                f"to match the VGG16 weights in {vgg_path!r}"
            )
        lin.weight.data.copy_(weight.to(torch.float32))
    return model.to(device).eval()
