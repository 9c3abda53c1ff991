"""Validation on the test split: same-identity reconstruction L1 and PSNR (0-255 images).

For each of the first `max_videos` test videos, frame 0 is the source and each of the first
`max_frames` frames the driving frame (absolute keypoints, SPEC "Inference"); the generated
frames are compared with the driving frames (`mcc_fast.evaluation.pixel`: L1 of [0, 1]
images, PSNR in dB). Also reported: the same metrics for the unchanged source ("no motion"
baseline), so a model that follows the motion shows l1 < l1_no_motion.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mcc_fast.model.modes import eval_mode

__all__ = ["ValidationResult", "validate"]


@dataclass
class ValidationResult:
    """Means over all validated frames; `videos`/`frames` counted, `unreadable` skipped."""

    l1: float
    psnr: float
    l1_no_motion: float
    psnr_no_motion: float
    videos: int
    frames: int
    unreadable: int

    def as_dict(self) -> dict[str, float]:
        """Scalars for logging."""
        return {"l1": self.l1, "psnr": self.psnr, "l1_no_motion": self.l1_no_motion,
                "psnr_no_motion": self.psnr_no_motion}


def _finite_mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


@torch.no_grad()
def validate(motion_estimator: nn.Module, generator: nn.Module, dataset, device: torch.device,
             max_videos: int = 8, max_frames: int = 32, batch_size: int = 8,
             autocast_dtype: torch.dtype | None = None) -> ValidationResult:
    """Run the networks (put in eval mode, restored after) over `dataset` (a
    `VideoSequenceDataset`); see the module docstring. PSNR averages finite per-frame values."""
    from mcc_fast.evaluation.pixel import l1_per_frame, psnr_per_frame

    l1s, psnrs, l1_base, psnr_base = [], [], [], []
    videos = unreadable = 0
    with eval_mode(motion_estimator, generator):
        for index in range(min(max_videos, len(dataset))):
            item = dataset[index]
            if not item["ok"] or item["video"].shape[0] == 0:
                unreadable += 1
                continue
            clip = item["video"][:max_frames].to(device)
            source_one = clip[:1]
            videos += 1
            for start in range(0, clip.shape[0], batch_size):
                driving = clip[start:start + batch_size]
                source = source_one.expand_as(driving)
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    motion = motion_estimator(driving, source)
                    frame = generator(source, motion)
                frame = frame.float().clamp(-1, 1)
                l1s += l1_per_frame(frame, driving).tolist()
                psnrs += psnr_per_frame(frame, driving).tolist()
                l1_base += l1_per_frame(source, driving).tolist()
                psnr_base += psnr_per_frame(source, driving).tolist()
    return ValidationResult(
        l1=_finite_mean(l1s), psnr=_finite_mean(psnrs), l1_no_motion=_finite_mean(l1_base),
        psnr_no_motion=_finite_mean(psnr_base), videos=videos, frames=len(l1s), unreadable=unreadable)
