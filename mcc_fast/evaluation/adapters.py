"""Motion and identity metrics through a small adapter interface.

Three kinds of network feed AKD, AED, CSIM and ARD; each is an *adapter* with a
``load(path, device)`` class method and one call on uint8 frames (B, 3, H, W):

- :class:`LandmarkDetector` ``.detect(frames) -> (B, K, 2)`` float pixel (x, y) in the
  frame's own pixel grid (AKD; the paper uses face_alignment's 68 landmarks);
- :class:`IdentityEmbedder` ``.embed(frames) -> (B, D)`` float (AED, CSIM);
- :class:`HeadPoseEstimator` ``.estimate(frames) -> (B, 3)`` float (yaw, pitch, roll) in
  degrees (ARD).

A frame an adapter cannot handle (no face found, unknown frame) is a row of NaN; every
metric skips such frames, as the official code skips frames without a detection.

Metric definitions (per frame; a dataset value is the mean over the valid frames):

- **AKD** ``norm="l1"`` (default): ``mean(|lm_gen - lm_ref|)`` over landmarks and both
  coordinates, in pixels: the official MCC ``cmp_face_akd`` (and FOMM's
  pose-evaluation) formula. ``norm="l2"``: mean Euclidean distance per landmark.
- **AED** ``distance="squared_l2"`` (default): ``sum((e_gen - e_ref)^2)`` of unit-length
  embeddings: the official ``cmp_face_aed`` on OpenFace's (unit-norm) embeddings.
  ``"l2"``: the Euclidean distance; ``"mean_abs"``: FOMM's ``cmp.py``
  (``mean(|e_gen - e_ref|)``). Embeddings are L2-normalised first (``normalize=True``).
- **CSIM**: cosine similarity of the two embeddings (official: ArcFace/antelopev2,
  normalised embeddings, dot product).
- **ARD**: ``mean(|angle_gen - angle_ref|)`` over yaw, pitch, roll in degrees, each
  difference wrapped to [-180, 180] (the official code does not wrap; the two agree
  whenever the difference is under 180 degrees).

Implementations: :mod:`mcc_fast.evaluation.face_networks` (FAN, ArcFace, TorchScript)
and :mod:`mcc_fast.evaluation.synthetic_pose` (head pose from our synthetic data).
"""
from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .weights import find_weight_file

__all__ = [
    "LandmarkDetector", "IdentityEmbedder", "HeadPoseEstimator",
    "akd_per_frame", "aed_per_frame", "csim_per_frame", "ard_per_frame", "akd", "aed", "csim", "ard",
    "load_landmark_detector", "load_identity_embedder", "load_head_pose_estimator",
]


@runtime_checkable
class LandmarkDetector(Protocol):
    """uint8 frames (B, 3, H, W) -> landmarks float (B, K, 2), pixel (x, y); NaN rows: none found."""

    device: torch.device

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "LandmarkDetector":
        """The network with the weight file `path` (a clear error when absent), on `device`."""
        ...

    def detect(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (B, 3, H, W) -> landmarks (B, K, 2), float."""
        ...


@runtime_checkable
class IdentityEmbedder(Protocol):
    """uint8 frames (B, 3, H, W) -> identity embeddings float (B, D); NaN rows: no face."""

    device: torch.device

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "IdentityEmbedder":
        """The network with the weight file `path` (a clear error when absent), on `device`."""
        ...

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (B, 3, H, W) -> embeddings (B, D), float."""
        ...


@runtime_checkable
class HeadPoseEstimator(Protocol):
    """uint8 frames (B, 3, H, W) -> (yaw, pitch, roll) degrees float (B, 3); NaN rows: unknown."""

    device: torch.device

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "HeadPoseEstimator":
        """The network with the weight file `path` (a clear error when absent), on `device`."""
        ...

    def estimate(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (B, 3, H, W) -> (yaw, pitch, roll) degrees (B, 3), float."""
        ...


def _as_float64(values, name: str, ndim: int) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {array.shape}")
    return array


def _pair(gen, ref, names: tuple[str, str], ndim: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_float64(gen, names[0], ndim), _as_float64(ref, names[1], ndim)
    if b.shape[0] == 1 and a.shape[0] != 1:  # one reference (a source image) for every frame
        b = np.broadcast_to(b, (a.shape[0],) + b.shape[1:])
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got {a.shape} and {b.shape}")
    return a, b


def _valid_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    axes = tuple(range(1, a.ndim))
    return np.isfinite(a).all(axis=axes) & np.isfinite(b).all(axis=axes)


def akd_per_frame(landmarks_generated, landmarks_reference, norm: str = "l1") -> np.ndarray:
    """Per-frame keypoint distance, float64 (B,) in pixels; NaN where either frame has no landmarks.

    ``landmarks_*``: (B, K, 2); the reference may be (1, K, 2). ``norm``: "l1" | "l2".
    """
    a, b = _pair(landmarks_generated, landmarks_reference, ("landmarks_generated", "landmarks_reference"), 3)
    if a.shape[-1] != 2:
        raise ValueError(f"landmarks must be (B, K, 2), got shape {a.shape}")
    if norm == "l1":
        per_frame = np.abs(a - b).mean(axis=(1, 2))
    elif norm == "l2":
        per_frame = np.sqrt(((a - b) ** 2).sum(axis=2)).mean(axis=1)
    else:
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    return np.where(_valid_rows(a, b), per_frame, np.nan)


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def aed_per_frame(embeddings_generated, embeddings_reference, distance: str = "squared_l2",
                  normalize: bool = True) -> np.ndarray:
    """Per-frame identity embedding distance, float64 (B,); NaN where either row is NaN.

    ``embeddings_*``: (B, D); the reference may be (1, D) (one source image).
    ``distance``: "squared_l2" | "l2" | "mean_abs"; ``normalize``: L2-normalise rows first.
    """
    a, b = _pair(embeddings_generated, embeddings_reference, ("embeddings_generated", "embeddings_reference"), 2)
    if normalize:
        a, b = _unit(a), _unit(b)
    diff = a - b
    if distance == "squared_l2":
        per_frame = (diff ** 2).sum(axis=1)
    elif distance == "l2":
        per_frame = np.sqrt((diff ** 2).sum(axis=1))
    elif distance == "mean_abs":
        per_frame = np.abs(diff).mean(axis=1)
    else:
        raise ValueError(f"distance must be 'squared_l2', 'l2' or 'mean_abs', got {distance!r}")
    return np.where(_valid_rows(a, b), per_frame, np.nan)


def csim_per_frame(embeddings_generated, embeddings_reference) -> np.ndarray:
    """Per-frame cosine similarity of identity embeddings, float64 (B,) in [-1, 1]; NaN rows skipped."""
    a, b = _pair(embeddings_generated, embeddings_reference, ("embeddings_generated", "embeddings_reference"), 2)
    per_frame = (_unit(a) * _unit(b)).sum(axis=1)
    return np.where(_valid_rows(a, b), per_frame, np.nan)


def ard_per_frame(poses_generated, poses_reference) -> np.ndarray:
    """Per-frame mean absolute (yaw, pitch, roll) difference in degrees, wrapped to [0, 180]; float64 (B,)."""
    a, b = _pair(poses_generated, poses_reference, ("poses_generated", "poses_reference"), 2)
    if a.shape[1] != 3:
        raise ValueError(f"poses must be (B, 3) yaw/pitch/roll in degrees, got shape {a.shape}")
    diff = np.abs((a - b + 180.0) % 360.0 - 180.0)
    return np.where(_valid_rows(a, b), diff.mean(axis=1), np.nan)


def _nanmean(values: np.ndarray) -> float:
    valid = values[~np.isnan(values)]
    return float(valid.mean()) if valid.size else float("nan")


def akd(landmarks_generated, landmarks_reference, norm: str = "l1") -> float:
    """AKD over valid frames (see :func:`akd_per_frame`); NaN when no frame is valid."""
    return _nanmean(akd_per_frame(landmarks_generated, landmarks_reference, norm))


def aed(embeddings_generated, embeddings_reference, distance: str = "squared_l2", normalize: bool = True) -> float:
    """AED over valid frames (see :func:`aed_per_frame`); NaN when no frame is valid."""
    return _nanmean(aed_per_frame(embeddings_generated, embeddings_reference, distance, normalize))


def csim(embeddings_generated, embeddings_reference) -> float:
    """CSIM over valid frames (see :func:`csim_per_frame`); NaN when no frame is valid."""
    return _nanmean(csim_per_frame(embeddings_generated, embeddings_reference))


def ard(poses_generated, poses_reference) -> float:
    """ARD over valid frames (see :func:`ard_per_frame`); NaN when no frame is valid."""
    return _nanmean(ard_per_frame(poses_generated, poses_reference))


def load_landmark_detector(weights_dir: str | os.PathLike | None,
                           device: str | torch.device = "cpu") -> LandmarkDetector:
    """The landmark network found in ``weights_dir``: face_alignment's TorchScript FAN
    (``2DFAN4*.zip``), else ``landmarks.torchscript.pt``. Raises MissingWeightsError."""
    from .face_networks import FanLandmarkDetector, TorchScriptLandmarkDetector

    key, path = find_weight_file(weights_dir, "fan", "landmarks_ts")
    cls = FanLandmarkDetector if key == "fan" else TorchScriptLandmarkDetector
    return cls.load(path, device)


def load_identity_embedder(weights_dir: str | os.PathLike | None,
                           device: str | torch.device = "cpu") -> IdentityEmbedder:
    """The identity network found in ``weights_dir``: an arcface_torch IResNet state dict
    (``arcface*.pth``), else ``identity.torchscript.pt``. Raises MissingWeightsError."""
    from .face_networks import ArcFaceEmbedder, TorchScriptIdentityEmbedder

    key, path = find_weight_file(weights_dir, "arcface", "identity_ts")
    cls = ArcFaceEmbedder if key == "arcface" else TorchScriptIdentityEmbedder
    return cls.load(path, device)


def load_head_pose_estimator(weights_dir: str | os.PathLike | None,
                             device: str | torch.device = "cpu") -> HeadPoseEstimator:
    """The head-pose network in ``weights_dir``: ``head_pose.torchscript.pt`` (no built-in
    architecture: export yours to TorchScript). Raises MissingWeightsError."""
    from .face_networks import TorchScriptHeadPoseEstimator

    _, path = find_weight_file(weights_dir, "head_pose_ts")
    return TorchScriptHeadPoseEstimator.load(path, device)
