"""Local weight files for the metric networks: where they are looked for, how they load.

Nothing is ever downloaded. Each network has a :class:`WeightFile` entry: the file name
the upstream project publishes (so a user can drop the downloaded file into the weights
folder unchanged) plus accepted glob patterns. A missing file raises
:class:`MissingWeightsError`, whose message is one line naming the file needed; the
evaluation runner prints that line and skips the metric.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["WeightFile", "WEIGHT_FILES", "MissingWeightsError", "find_weight_file", "describe_weight_file",
           "load_state_dict"]


class MissingWeightsError(FileNotFoundError):
    """A metric network's weights file is not there; ``str(err)`` is one line naming it."""


@dataclass(frozen=True)
class WeightFile:
    """One network's weights: the canonical file name, accepted globs, and what it is."""

    key: str
    canonical: str
    patterns: tuple[str, ...]
    description: str


WEIGHT_FILES: dict[str, WeightFile] = {
    w.key: w
    for w in (
        WeightFile("vgg16", "vgg16-397923af.pth", ("vgg16-397923af.pth", "vgg16*.pth", "vgg16*.safetensors"),
                   "torchvision VGG16 ImageNet state dict, keys features.N.weight/bias"),
        WeightFile("lpips_vgg", "vgg.pth", ("lpips_vgg*.pth", "vgg.pth"),
                   "LPIPS v0.1 linear layers for VGG, the lpips package's lpips/weights/v0.1/vgg.pth"),
        WeightFile("inception", "pt_inception-2015-12-05-6726825d.pth",
                   ("pt_inception-2015-12-05*.pth", "pt_inception*.pth"),
                   "pytorch-fid's FID InceptionV3 weights"),
        WeightFile("fan", "2DFAN4-*.zip", ("2DFAN4*.zip", "2DFAN4*.pt"),
                   "face_alignment's TorchScript 2D-FAN-4, 68 landmarks"),
        WeightFile("landmarks_ts", "landmarks.torchscript.pt", ("landmarks.torchscript.pt", "landmarks.pt2"),
                   "any TorchScript/torch.export landmark network, [0,1] RGB (B,3,H,W) -> pixel (B,K,2)"),
        WeightFile("arcface", "arcface_r100.pth", ("arcface*.pth", "arcface*.safetensors"),
                   "insightface arcface_torch IResNet state dict, e.g. ms1mv3_arcface_r100's backbone.pth renamed"),
        WeightFile("identity_ts", "identity.torchscript.pt", ("identity.torchscript.pt", "identity.pt2"),
                   "any TorchScript/torch.export identity embedder, [0,1] RGB (B,3,H,W) -> (B,D)"),
        WeightFile("head_pose_ts", "head_pose.torchscript.pt", ("head_pose.torchscript.pt", "head_pose.pt2"),
                   "any TorchScript/torch.export head-pose network, [0,1] RGB (B,3,H,W) -> (B,3) yaw/pitch/roll degrees"),
    )
}


def find_weight_file(weights_dir: str | os.PathLike | None, *keys: str) -> tuple[str, Path]:
    """First existing file for ``keys`` (tried in order) in ``weights_dir``: (key, path).

    Raises :class:`MissingWeightsError` naming the first key's canonical file (and the
    alternatives) when none exists or ``weights_dir`` is None.
    """
    if not keys:
        raise ValueError("find_weight_file needs at least one weights key")
    for key in keys:
        if key not in WEIGHT_FILES:
            raise ValueError(f"unknown weights key {key!r}; expected one of {sorted(WEIGHT_FILES)}")
    if weights_dir is not None:
        folder = Path(weights_dir)
        if not folder.is_dir():
            raise MissingWeightsError(f"weights folder {str(folder)!r} does not exist")
        for key in keys:
            for pattern in WEIGHT_FILES[key].patterns:
                matches = sorted(p for p in folder.glob(pattern) if p.is_file())
                if matches:
                    return key, matches[0]
    raise MissingWeightsError(f"needs {describe_weight_file(weights_dir, *keys)}")


def describe_weight_file(weights_dir: str | os.PathLike | None, *keys: str) -> str:
    """``DIR/canonical-name (what it is)[; or other-name (what it is)]`` for messages."""
    first = WEIGHT_FILES[keys[0]]
    where = str(Path(weights_dir) / first.canonical) if weights_dir is not None else f"--weights-dir with {first.canonical}"
    alternatives = "".join(f"; or {WEIGHT_FILES[k].canonical} ({WEIGHT_FILES[k].description})" for k in keys[1:])
    return f"{where} ({first.description}){alternatives}"


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a local ``.pth``/``.pt`` (``torch.load``, weights only) or
    ``.safetensors`` file, on CPU. A ``{"state_dict": ...}`` or ``{"params": ...}``
    wrapper and a ``module.`` prefix are removed. Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, not a state dict
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc):  # torch's advice to unpickle arbitrary code does not apply here
            reason = "it holds more than tensors (a pickled object), which is not loaded for safety"
        raise ValueError(f"cannot read weights file {str(path)!r} (truncated, corrupt or not a state dict): "
                         f"{reason}") from None
    if isinstance(state, dict):
        for wrapper in ("state_dict", "params_ema", "params", "model"):
            if wrapper in state and isinstance(state[wrapper], dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights file {str(path)!r} does not hold a state dict of tensors")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
