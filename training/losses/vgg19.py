"""Our VGG19 feature extractor for the perceptual loss (relu1_1 ... relu5_1).

The network is torchvision's VGG19 ``features`` up to relu5_1 (13 convolutions, 4 max-pools),
frozen. Weights come from a local torchvision-format file (``vgg19-dcbb9e9d.pth``: a state
dict with keys ``features.N.weight`` / ``features.N.bias``; other keys such as the
classifier's are ignored) or a safetensors file with the same keys. Nothing is downloaded.

Input normalisation, as the official code does it (FOMM's ``Vgg19`` used by MCC's
``MultiScalePyramidPerceptualLoss``): ``(x - imagenet_mean) / imagenet_std`` applied to the
image *as given*. MCC's images are in [-1, 1] and the official code does NOT map them to
[0, 1] first (FOMM's own images were in [0, 1]). ``signed_input=True`` adds that ``(x+1)/2``
mapping for users who want the textbook normalisation; the default reproduces the official.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "VGG19_STAGE_CHANNELS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Vgg19",
    "load_vgg19",
    "read_vgg19_weights",
    "convert_torchvision_vgg19_state",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Output channels of the five stages (conv1_x ... conv5_x) of the standard VGG19.
VGG19_STAGE_CHANNELS = (64, 128, 256, 512, 512)
# Convolutions per stage used up to relu5_1 (conv5_1 only in the last stage).
_CONVS_PER_STAGE = (2, 2, 4, 4, 1)


def _conv_plan(stage_channels: Sequence[int]) -> list[tuple[int, int, int, bool, bool]]:
    """(in, out, torchvision feature index, max-pool before, tap after relu) per conv."""
    plan = []
    feature_index = 0
    in_ch = 3
    for stage, (out_ch, n_convs) in enumerate(zip(stage_channels, _CONVS_PER_STAGE)):
        for j in range(n_convs):
            pool_before = stage > 0 and j == 0
            if pool_before:
                feature_index += 1  # the MaxPool2d slot in torchvision's `features`
            plan.append((in_ch, out_ch, feature_index, pool_before, j == 0))
            feature_index += 2  # Conv2d + ReLU
            in_ch = out_ch
    return plan


_STANDARD_PLAN = _conv_plan(VGG19_STAGE_CHANNELS)
# torchvision `features` indices of the 13 convolutions: 0 2 5 7 10 12 14 16 19 21 23 25 28.
TORCHVISION_CONV_INDICES = tuple(p[2] for p in _STANDARD_PLAN)


def read_vgg19_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a torchvision-format VGG19 state dict from `path` into our key names ``convs.N.*``.

    Accepts a ``torch.save`` file (loaded with ``weights_only=True``) or a ``.safetensors``
    file whose keys are ``features.N.weight/bias`` (an optional ``module.`` prefix is
    stripped; keys we do not use are ignored). Returns float tensors keyed ``convs.i.weight``
    / ``convs.i.bias`` for the 13 convolutions up to conv5_1.

    Raises FileNotFoundError naming the file when it does not exist (nothing is downloaded),
    and ValueError naming the file and the keys when it is not a VGG19 state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"VGG19 weights file not found: '{path}'. Pass the path of a torchvision-format VGG19 "
            "state dict (e.g. vgg19-dcbb9e9d.pth) that you keep locally; mcc_fast never downloads it."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path), device="cpu")
        else:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated / foreign files
        from mcc_fast.model.checkpoint import torch_load_error

        raise ValueError(f"could not read VGG19 weights from '{path}': not a readable "
                         f"{'safetensors' if path.suffix == '.safetensors' else 'PyTorch'} file (truncated or "
                         f"foreign?): {torch_load_error(exc)}") from None
    if not isinstance(raw, Mapping):
        raise ValueError(f"VGG19 weights file '{path}' holds a {type(raw).__name__}, expected a state dict")
    return convert_torchvision_vgg19_state(raw, source=f"'{path}'")


def convert_torchvision_vgg19_state(
    state: Mapping[str, torch.Tensor], source: str = "the state dict"
) -> dict[str, torch.Tensor]:
    """torchvision VGG19 keys ``features.N.weight/bias`` -> our ``convs.i.weight/bias`` (float32).

    An optional ``module.`` prefix is stripped and unused keys are ignored. ValueError naming
    `source` and the missing or mis-shaped keys.
    """
    state = {(k[len("module."):] if isinstance(k, str) and k.startswith("module.") else k): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    missing, bad_shape = [], []
    for i, (in_ch, out_ch, feature_index, _, _) in enumerate(_STANDARD_PLAN):
        for suffix, shape in (("weight", (out_ch, in_ch, 3, 3)), ("bias", (out_ch,))):
            key = f"features.{feature_index}.{suffix}"
            value = state.get(key)
            if not isinstance(value, torch.Tensor):
                missing.append(key)
            elif tuple(value.shape) != shape:
                bad_shape.append(f"{key} {tuple(value.shape)} (expected {shape})")
            else:
                out[f"convs.{i}.{suffix}"] = value.float()
    if missing or bad_shape:
        problems = []
        if missing:
            problems.append(f"missing keys {missing}")
        if bad_shape:
            problems.append(f"wrong shapes {bad_shape}")
        raise ValueError(f"{source} is not a torchvision-format VGG19 state dict: " + "; ".join(problems))
    return out


class Vgg19(nn.Module):
    """Frozen VGG19 features: image (B, 3, H, W) -> [relu1_1, relu2_1, relu3_1, relu4_1, relu5_1].

    Outputs have shapes (B, c_k, H / 2**k, W / 2**k) for k = 0..4 (floor division at each
    pool) and the input's dtype (or autocast's). H and W must be at least 16.

    weights: a path to a torchvision-format file (see `read_vgg19_weights`), a state dict
        (torchvision ``features.N.*`` keys or ours, ``convs.N.*``), or None. None raises ValueError unless
        ``random_init_ok=True`` (random weights: only for smoke runs and tests).
    signed_input: map x from [-1, 1] to [0, 1] before the ImageNet normalisation. False
        (default) reproduces the official code, which normalises the [-1, 1] image directly.
    stage_channels: channels of the five stages; only the standard (64, 128, 256, 512, 512)
        can load weights. Smaller values make tiny random networks for tests.
    All parameters have requires_grad=False; gradients still flow to the input.
    """

    def __init__(
        self,
        weights: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
        random_init_ok: bool = False,
        *,
        signed_input: bool = False,
        stage_channels: Sequence[int] = VGG19_STAGE_CHANNELS,
    ) -> None:
        super().__init__()
        stage_channels = tuple(int(c) for c in stage_channels)
        if len(stage_channels) != 5 or min(stage_channels) < 1:
            raise ValueError(f"stage_channels must be 5 positive ints, got {stage_channels}")
        if weights is None and not random_init_ok:
            raise ValueError(
                "Vgg19 needs weights: pass the path of a local torchvision-format VGG19 file "
                "(e.g. vgg19-dcbb9e9d.pth), or random_init_ok=True for a smoke run with random weights"
            )
        if weights is not None and stage_channels != VGG19_STAGE_CHANNELS:
            raise ValueError(
                f"weights can only be loaded into the standard VGG19 (stage_channels={VGG19_STAGE_CHANNELS}), "
                f"got stage_channels={stage_channels}"
            )
        self.signed_input = bool(signed_input)
        self.stage_channels = stage_channels
        plan = _conv_plan(stage_channels)
        self.convs = nn.ModuleList(nn.Conv2d(i, o, kernel_size=3, padding=1) for i, o, *_ in plan)
        self._pool_before = tuple(p[3] for p in plan)
        # taps: relu{k}_1 is after the first conv of stage k (convs 0, 2, 4, 8, 12).
        self._taps = frozenset(i for i, p in enumerate(plan) if p[4])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if weights is not None:
            if isinstance(weights, (str, os.PathLike)):
                state = read_vgg19_weights(weights)
            elif isinstance(weights, Mapping):
                is_ours = all(isinstance(k, str) and k.startswith("convs.") for k in weights)
                state = dict(weights) if is_ours else convert_torchvision_vgg19_state(weights, "weights")
            else:
                raise TypeError(f"weights must be a path, a state dict or None, got {type(weights).__name__}")
            self.load_state_dict(state, strict=True)
        self.requires_grad_(False)
        self.eval()

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """image (B, 3, H, W) float -> the five relu{k}_1 feature maps (see class docstring)."""
        if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be a (B, 3, H, W) tensor, got {getattr(image, 'shape', type(image))}")
        if not image.is_floating_point():
            raise ValueError(f"image must be floating point, got {image.dtype}")
        if min(image.shape[-2:]) < 16:
            raise ValueError(f"image must be at least 16x16 (4 max-pools before relu5_1), got {tuple(image.shape[-2:])}")
        x = (image + 1) / 2 if self.signed_input else image
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        features = []
        for i, conv in enumerate(self.convs):
            if self._pool_before[i]:
                x = F.max_pool2d(x, kernel_size=2, stride=2)
            x = F.relu(conv(x))
            if i in self._taps:
                features.append(x)
        return features


def load_vgg19(path: str | os.PathLike, *, signed_input: bool = False, device: torch.device | str | None = None) -> Vgg19:
    """A frozen `Vgg19` with the torchvision-format weights in `path` (FileNotFoundError if absent)."""
    model = Vgg19(read_vgg19_weights(path), signed_input=signed_input)
    return model if device is None else model.to(device)
