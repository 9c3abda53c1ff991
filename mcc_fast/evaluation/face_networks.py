"""Adapter implementations for the usual face networks, loaded from local files.

- :class:`FanLandmarkDetector`: face_alignment's 2D-FAN-4 as the TorchScript file that
  face_alignment >= 1.3 downloads (``2DFAN4-<hash>.zip``); 68 landmarks decoded from its
  64x64 heatmaps as face_alignment does (arg-max, quarter-pixel shift towards the larger
  neighbour, -0.5). Deviation from the official pipeline: no S3FD face detector runs;
  the whole frame is the face crop (talking-head frames are face-centred crops), so
  absolute AKD values can differ from the paper's; landmarks stay sub-pixel floats (the
  official code truncates them to integers).
- :class:`ArcFaceEmbedder`: our definition of insightface's ``arcface_torch`` IResNet
  (18/34/50/100/200, depth and widths read from the state dict), 112x112 input,
  ``(x / 255 - 0.5) / 0.5``. Deviation: the official CSIM runs insightface's
  ``antelopev2`` pipeline (detector + 5-point alignment + glintr100 ONNX); here the
  whole frame is resized to 112x112, no alignment.
- ``TorchScript*``: any network exported to TorchScript (``torch.jit.save``) or with
  ``torch.export`` (a ``.pt2`` file), with the documented contract:
  input float32 (B, 3, H, W) RGB in [0, 1] at the frame's size; output landmarks
  (B, K, 2) pixels / embeddings (B, D) / (yaw, pitch, roll) degrees (B, 3). A tuple or
  list output uses its last element.
"""
from __future__ import annotations

import os
import re
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .frames import to_unit_float
from .weights import load_state_dict

__all__ = ["decode_fan_heatmaps", "FanLandmarkDetector", "IResNet", "ArcFaceEmbedder",
           "TorchScriptLandmarkDetector", "TorchScriptIdentityEmbedder", "TorchScriptHeadPoseEstimator"]


def _check_frames(frames: torch.Tensor) -> torch.Tensor:
    if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"frames must be a uint8 tensor (B, 3, H, W), got {shape}")
    return frames


def _load_torchscript(path: str | os.PathLike, device: torch.device) -> torch.nn.Module:
    """A TorchScript file (``torch.jit.save``; face_alignment ships these) or a
    ``torch.export`` program (``.pt2``), on ``device``, in eval mode."""
    try:
        if str(path).endswith(".pt2"):  # an exported program: no .eval(), export froze the mode
            return torch.export.load(str(path)).module().to(device)
        with warnings.catch_warnings():  # torch.jit is deprecated, but the upstream files are TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location=device).eval()
    except Exception as exc:
        raise ValueError(f"cannot load network file {str(path)!r}: {type(exc).__name__}: {exc}") from exc


def _last(output):
    return output[-1] if isinstance(output, (tuple, list)) else output


class _TorchScriptAdapter:
    """Shared part of the TorchScript adapters: [0, 1] float input, output shape check."""

    def __init__(self, module: torch.nn.Module, device: str | torch.device = "cpu"):
        self.module = module
        self.device = torch.device(device)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu"):
        """Load the TorchScript file at ``path`` onto ``device``."""
        device = torch.device(device)
        return cls(_load_torchscript(path, device), device)

    def _run(self, frames: torch.Tensor, what: str, tail: tuple[int | None, ...]) -> torch.Tensor:
        frames = _check_frames(frames).to(self.device)
        with torch.inference_mode():
            out = _last(self.module(to_unit_float(frames)))
        if not isinstance(out, torch.Tensor) or out.dim() != 1 + len(tail) or out.shape[0] != frames.shape[0] \
                or any(t is not None and s != t for s, t in zip(out.shape[1:], tail)):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            want = ", ".join("N" if t is None else str(t) for t in tail)
            raise ValueError(f"{type(self).__name__}: the network must return {what} (B, {want}), got {shape}")
        return out.float()


class TorchScriptLandmarkDetector(_TorchScriptAdapter):
    """Landmarks from a TorchScript network: ``detect(uint8 (B,3,H,W)) -> (B, K, 2)`` pixels."""

    def detect(self, frames: torch.Tensor) -> torch.Tensor:
        return self._run(frames, "landmarks", (None, 2))


class TorchScriptIdentityEmbedder(_TorchScriptAdapter):
    """Embeddings from a TorchScript network: ``embed(uint8 (B,3,H,W)) -> (B, D)``."""

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        return self._run(frames, "embeddings", (None,))


class TorchScriptHeadPoseEstimator(_TorchScriptAdapter):
    """Head pose from a TorchScript network: ``estimate(uint8 (B,3,H,W)) -> (B, 3)`` degrees."""

    def estimate(self, frames: torch.Tensor) -> torch.Tensor:
        return self._run(frames, "yaw/pitch/roll", (3,))


def decode_fan_heatmaps(heatmaps: torch.Tensor) -> torch.Tensor:
    """face_alignment's heatmap decoding: (B, K, h, w) -> float32 (B, K, 2) (x, y) in heatmap pixels.

    Arg-max position p (0-based); where p is not on the border, p += 0.25 * sign of the
    neighbour difference on each axis; result p + 0.5 (face_alignment: 1-based p, -0.5).
    """
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps must be (B, K, h, w), got shape {tuple(heatmaps.shape)}")
    b, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, k, h * w).float()
    index = flat.argmax(dim=2)
    px, py = index % w, index // w
    inner = (px > 0) & (px < w - 1) & (py > 0) & (py < h - 1)

    def at(x, y):
        return flat.gather(2, (y.clamp(0, h - 1) * w + x.clamp(0, w - 1)).unsqueeze(2)).squeeze(2)

    dx = torch.sign(at(px + 1, py) - at(px - 1, py))
    dy = torch.sign(at(px, py + 1) - at(px, py - 1))
    x = px.float() + torch.where(inner, 0.25 * dx, torch.zeros_like(dx)) + 0.5
    y = py.float() + torch.where(inner, 0.25 * dy, torch.zeros_like(dy)) + 0.5
    return torch.stack([x, y], dim=2)


class FanLandmarkDetector(_TorchScriptAdapter):
    """face_alignment's TorchScript 2D-FAN: the whole frame, resized to 256x256, is the face crop.

    ``detect(uint8 (B, 3, H, W)) -> float32 (B, 68, 2)`` in the frame's pixels.
    """

    input_size = 256

    def detect(self, frames: torch.Tensor) -> torch.Tensor:
        frames = _check_frames(frames).to(self.device)
        height, width = frames.shape[2:]
        x = to_unit_float(frames)
        if (height, width) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        with torch.inference_mode():
            heatmaps = _last(self.module(x))
        if not isinstance(heatmaps, torch.Tensor) or heatmaps.dim() != 4 or heatmaps.shape[0] != frames.shape[0]:
            shape = tuple(heatmaps.shape) if isinstance(heatmaps, torch.Tensor) else type(heatmaps).__name__
            raise ValueError(f"FanLandmarkDetector: the network must return heatmaps (B, K, h, w), got {shape}")
        points = decode_fan_heatmaps(heatmaps)
        scale = torch.tensor([width / heatmaps.shape[3], height / heatmaps.shape[2]], device=points.device)
        return points * scale


class _IBasicBlock(nn.Module):
    """arcface_torch IBasicBlock: BN, conv3x3, BN, PReLU, conv3x3 (stride), BN, + shortcut."""

    def __init__(self, in_ch: int, planes: int, stride: int, downsample: bool):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch, eps=1e-5)
        self.conv1 = nn.Conv2d(in_ch, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = (nn.Sequential(nn.Conv2d(in_ch, planes, 1, stride=stride, bias=False),
                                         nn.BatchNorm2d(planes, eps=1e-5)) if downsample else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (self.downsample(x) if self.downsample is not None else x)


class IResNet(nn.Module):
    """insightface ``arcface_torch`` IResNet: (B, 3, 112, 112) in [-1, 1] -> (B, num_features).

    ``blocks``: residual blocks per stage (iresnet100: 3, 13, 30, 3); ``widths``: stage
    widths (64, 128, 256, 512); ``stem``: stem width (64). Every stage halves the size.
    """

    def __init__(self, blocks=(3, 13, 30, 3), widths=(64, 128, 256, 512), stem: int = 64,
                 num_features: int = 512, input_size: int = 112):
        super().__init__()
        if len(blocks) != 4 or len(widths) != 4:
            raise ValueError(f"blocks and widths must have 4 stages, got {blocks} and {widths}")
        self.input_size = input_size
        self.conv1 = nn.Conv2d(3, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem, eps=1e-5)
        self.prelu = nn.PReLU(stem)
        in_ch = stem
        for stage, (count, width) in enumerate(zip(blocks, widths), start=1):
            layer = [_IBasicBlock(in_ch, width, 2, True)] + [_IBasicBlock(width, width, 1, False) for _ in range(count - 1)]
            setattr(self, f"layer{stage}", nn.Sequential(*layer))
            in_ch = width
        side = input_size // 16
        self.bn2 = nn.BatchNorm2d(in_ch, eps=1e-5)
        self.fc = nn.Linear(in_ch * side * side, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.features(self.fc(torch.flatten(self.bn2(x), 1)))


def _iresnet_from_state(state: dict[str, torch.Tensor], path: str) -> IResNet:
    try:
        blocks, widths = [], []
        for stage in range(1, 5):
            indices = {int(m.group(1)) for k in state if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
            if not indices:
                raise KeyError(f"layer{stage}.*")
            blocks.append(max(indices) + 1)
            widths.append(int(state[f"layer{stage}.0.conv1.weight"].shape[0]))
        stem = int(state["conv1.weight"].shape[0])
        num_features, fc_in = (int(s) for s in state["fc.weight"].shape)
    except KeyError as exc:
        raise ValueError(f"ArcFace weights {path!r}: no {exc.args[0]} (expected an arcface_torch IResNet state dict)") from exc
    side = round((fc_in / widths[-1]) ** 0.5)
    if side * side * widths[-1] != fc_in:
        raise ValueError(f"ArcFace weights {path!r}: fc.weight in_features {fc_in} is not {widths[-1]} x side^2")
    with torch.random.fork_rng(devices=[]):  # the random init (replaced below) leaves the global RNG alone
        model = IResNet(tuple(blocks), tuple(widths), stem, num_features, input_size=side * 16)
    wanted = model.state_dict()
    missing = sorted(k for k in wanted if k not in state and not k.endswith("num_batches_tracked"))
    extra = sorted(k for k in state if k not in wanted)
    if missing or extra:
        raise ValueError(f"ArcFace weights {path!r} do not match an IResNet: missing {missing[:5]}, unexpected {extra[:5]}")
    for key, value in wanted.items():
        if key not in state:
            state[key] = value
        elif tuple(state[key].shape) != tuple(value.shape):
            raise ValueError(f"ArcFace weights {path!r}: {key} has shape {tuple(state[key].shape)}, expected {tuple(value.shape)}")
    model.load_state_dict({k: state[k].float() for k in wanted})
    return model


class ArcFaceEmbedder:
    """ArcFace identity embeddings: ``embed(uint8 (B, 3, H, W)) -> float32 (B, num_features)``.

    The frame is resized to the network's input (112x112, bilinear, antialiased) and
    scaled ``(x / 255 - 0.5) / 0.5``, RGB order (arcface_torch's inference).
    """

    def __init__(self, network: IResNet, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "ArcFaceEmbedder":
        """Build the IResNet that the state dict at ``path`` describes and load it."""
        return cls(_iresnet_from_state(load_state_dict(path), str(path)), device)

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        frames = _check_frames(frames).to(self.device)
        size = self.network.input_size
        x = to_unit_float(frames)
        if tuple(x.shape[2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        with torch.inference_mode():
            return self.network((x - 0.5) / 0.5).float()
