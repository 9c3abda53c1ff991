"""Face networks that know the answer: head pose and landmarks from our synthetic data.

The synthetic talking-head generator (:mod:`mcc_fast.training.synth`) records every
frame's head pose and landmark positions in ``meta/{split}/{name}.json``. Given those
frames and records, :class:`SyntheticPoseOracle` answers ``estimate(frames)`` (head pose,
for ARD) and ``detect(frames)`` (landmarks, for AKD) by looking each frame up by its
exact pixel content (a digest of the uint8 frame), so the motion metrics can be checked
offline with known answers; frames it has not seen get NaN (skipped by the metrics).

Accepted JSON (one video; angles in degrees unless ``"angle_unit": "radians"``; roll is
0 when absent):

- ``{"frames": [{"yaw": .., "pitch": .., "roll": .., "landmarks": {name: [x, y]}}, ...]}``
  (the generator's format; ``landmarks`` optional); an entry may instead hold
  ``"head_pose": {"yaw": .., ...}`` or ``"pose": [yaw, pitch, roll]``;
- ``{"yaw": [...], "pitch": [...], "roll": [...]}``, optionally under ``"head_pose"``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from .frames import as_uint8_frames

__all__ = ["parse_pose_json", "parse_landmarks_json", "SyntheticPoseOracle"]

_ANGLES = ("yaw", "pitch", "roll")


def _read_json(data, where: str = "pose JSON") -> tuple[dict, str]:
    if isinstance(data, dict):
        return data, where
    where = str(data)
    try:
        data = json.loads(Path(data).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read pose JSON {where!r}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
    return data, where


def _angles_from_mapping(entry: dict, where: str) -> list[float]:
    if "head_pose" in entry and isinstance(entry["head_pose"], dict):
        entry = entry["head_pose"]
    if "pose" in entry and isinstance(entry["pose"], (list, tuple)):
        values = [float(v) for v in entry["pose"]]
        if len(values) not in (2, 3):
            raise ValueError(f"{where}: 'pose' must be [yaw, pitch] or [yaw, pitch, roll], got {entry['pose']!r}")
        return values + [0.0] * (3 - len(values))
    if "yaw" not in entry or "pitch" not in entry:
        raise ValueError(f"{where}: needs 'yaw' and 'pitch' (degrees), got keys {sorted(entry)}")
    return [float(entry["yaw"]), float(entry["pitch"]), float(entry.get("roll", 0.0))]


def parse_pose_json(data: dict | str | os.PathLike) -> np.ndarray:
    """Per-frame head poses from the synthetic generator's JSON (a dict or a file path):
    float64 (F, 3) (yaw, pitch, roll) in degrees. Raises ValueError naming what is wrong."""
    data, where = _read_json(data)
    unit = data.get("angle_unit", data.get("units", "degrees"))
    if unit not in ("degrees", "radians"):
        raise ValueError(f"{where}: angle_unit must be 'degrees' or 'radians', got {unit!r}")
    if isinstance(data.get("frames"), list):
        poses = [_angles_from_mapping(f, f"{where} frame {i}") for i, f in enumerate(data["frames"])]
    else:
        table = data["head_pose"] if isinstance(data.get("head_pose"), dict) else data
        if not all(isinstance(table.get(a), list) for a in _ANGLES[:2]):
            raise ValueError(f"{where}: expected 'frames' (a list) or per-frame lists 'yaw' and 'pitch'")
        count = len(table["yaw"])
        roll = table.get("roll", [0.0] * count)
        if len(table["pitch"]) != count or len(roll) != count:
            raise ValueError(f"{where}: yaw, pitch and roll lists must have one length")
        poses = [[float(y), float(p), float(r)] for y, p, r in zip(table["yaw"], table["pitch"], roll)]
    array = np.asarray(poses, dtype=np.float64).reshape(-1, 3)
    if array.shape[0] == 0:
        raise ValueError(f"{where}: no frames")
    return np.degrees(array) if unit == "radians" else array


def parse_landmarks_json(data: dict | str | os.PathLike) -> np.ndarray | None:
    """Per-frame landmark pixels from the generator's JSON: float64 (F, K, 2) (x, y), the
    K names in the first frame's order; None when the frames carry no ``landmarks``."""
    data, where = _read_json(data)
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames or not isinstance(frames[0].get("landmarks"), dict):
        return None
    names = list(frames[0]["landmarks"])
    try:
        points = [[f["landmarks"][n] for n in names] for f in frames]
        array = np.asarray(points, dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: every frame needs landmarks {names} as [x, y]: {exc}") from exc
    if array.ndim != 3 or array.shape[2] != 2:
        raise ValueError(f"{where}: landmarks must be [x, y] pairs, got shape {array.shape}")
    return array


def _digest(frame: torch.Tensor) -> bytes:
    data = frame.contiguous().cpu().numpy()
    return hashlib.blake2b(data.tobytes(), digest_size=16).digest() + bytes(str(data.shape), "ascii")


def _video_of(sidecar: Path, record: dict) -> Path:
    """The frames of a pose JSON: its ``"video"`` entry (relative to the dataset root,
    the generator's ``meta/{split}/NAME.json`` layout) or the sibling ``NAME[.ext]``."""
    from mcc_fast.training.data import video_io

    candidates = []
    if isinstance(record.get("video"), str):
        candidates += [base / record["video"] for base in (sidecar.parent, *sidecar.parents[:3])]
    candidates.append(sidecar.with_suffix(""))
    candidates += sorted(p for p in sidecar.parent.glob(sidecar.stem + ".*") if video_io.is_video_file(p))
    for candidate in candidates:
        if candidate.is_dir() or (candidate.is_file() and video_io.is_video_file(candidate)):
            return candidate
    raise FileNotFoundError(f"no video or frame folder for {str(sidecar)!r} (tried {[str(c) for c in candidates[:4]]})")


class SyntheticPoseOracle:
    """Head pose (and landmarks) of synthetic frames, looked up by frame content.

    Implements :class:`~mcc_fast.evaluation.adapters.HeadPoseEstimator` and
    :class:`~mcc_fast.evaluation.adapters.LandmarkDetector`. ``add_video(frames, poses,
    landmarks)`` indexes frames (any form :func:`as_uint8_frames` takes) with their (F, 3)
    poses or pose JSON; ``estimate(uint8 (B, 3, H, W))`` -> float64 (B, 3) degrees and
    ``detect(...)`` -> float64 (B, K, 2) pixels, NaN rows for frames never added (or
    without landmarks).
    """

    def __init__(self):
        self.device = torch.device("cpu")
        self._records: dict[bytes, tuple[np.ndarray, np.ndarray | None]] = {}
        self._num_landmarks: int | None = None

    def __len__(self) -> int:
        return len(self._records)

    def add_video(self, frames, poses, landmarks=None) -> None:
        """Index ``frames`` (F frames) with ``poses`` ((F, 3) degrees, a JSON dict or path)
        and ``landmarks`` ((F, K, 2) pixels; read from the JSON when it has them)."""
        uint8 = as_uint8_frames(frames, "frames")
        if isinstance(poses, (dict, str, os.PathLike)):
            if landmarks is None:
                landmarks = parse_landmarks_json(poses)
            table = parse_pose_json(poses)
        else:
            table = np.asarray(poses, dtype=np.float64)
        if table.ndim != 2 or table.shape[1] != 3:
            raise ValueError(f"poses must be (F, 3) yaw/pitch/roll degrees, got shape {table.shape}")
        if table.shape[0] != uint8.shape[0]:
            raise ValueError(f"poses has {table.shape[0]} frames but frames has {uint8.shape[0]}")
        if landmarks is not None:
            landmarks = np.asarray(landmarks, dtype=np.float64)
            if landmarks.ndim != 3 or landmarks.shape[0] != uint8.shape[0] or landmarks.shape[2] != 2:
                raise ValueError(f"landmarks must be ({uint8.shape[0]}, K, 2), got shape {landmarks.shape}")
            if self._num_landmarks not in (None, landmarks.shape[1]):
                raise ValueError(f"landmarks has {landmarks.shape[1]} points, earlier videos {self._num_landmarks}")
            self._num_landmarks = landmarks.shape[1]
        for i, frame in enumerate(uint8):
            self._records[_digest(frame)] = (table[i].copy(), None if landmarks is None else landmarks[i].copy())

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
             size: int | tuple[int, int] | None = None) -> "SyntheticPoseOracle":
        """Index a pose JSON file and its video, every ``*.json`` in a folder, or a whole
        generated dataset (a folder with ``meta/``, as :func:`mcc_fast.training.synth.write_dataset`
        writes it). Frames are read with :mod:`mcc_fast.training.data.video_io` and resized
        to ``size`` as the datasets do; they must match the evaluated frames bit for bit.
        ``device`` is accepted for the adapter interface (lookups run on the CPU)."""
        from mcc_fast.training.data import video_io

        path = Path(path)
        if path.is_dir():
            sidecars = sorted((path / "meta").glob("*/*.json")) if (path / "meta").is_dir() else sorted(path.glob("*.json"))
            if not sidecars:
                raise FileNotFoundError(f"no pose JSON files in {str(path)!r}")
        elif path.is_file():
            sidecars = [path]
        else:
            raise FileNotFoundError(f"pose JSON {str(path)!r} does not exist")
        oracle = cls()
        for sidecar in sidecars:
            record, _ = _read_json(sidecar)
            video = _video_of(sidecar, record)
            if video.is_dir():
                frames = np.stack([video_io.read_image(f) for f in video_io.list_frame_files(video)])
            else:
                frames = video_io.read_video_frames(video)
            if size is not None:
                frames = video_io.resize_frames(frames, size)
            oracle.add_video(frames, record)
        return oracle

    def _lookup(self, frames) -> list[tuple[np.ndarray, np.ndarray | None] | None]:
        return [self._records.get(_digest(frame)) for frame in as_uint8_frames(frames, "frames")]

    def estimate(self, frames: torch.Tensor) -> torch.Tensor:
        """(yaw, pitch, roll) degrees float64 (B, 3) of indexed frames; NaN rows otherwise."""
        rows = [rec[0] if rec is not None else np.full(3, math.nan) for rec in self._lookup(frames)]
        return torch.from_numpy(np.stack(rows)) if rows else torch.zeros((0, 3), dtype=torch.float64)

    def detect(self, frames: torch.Tensor) -> torch.Tensor:
        """Landmarks float64 (B, K, 2) pixels of indexed frames; NaN rows otherwise."""
        k = self._num_landmarks or 1
        rows = [rec[1] if rec is not None and rec[1] is not None else np.full((k, 2), math.nan)
                for rec in self._lookup(frames)]
        return torch.from_numpy(np.stack(rows)) if rows else torch.zeros((0, k, 2), dtype=torch.float64)
