"""The MCC motion estimator: keypoints of both frames, then dense motion from the source."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mcc_fast.model.motion.config import MotionEstimatorConfig
from mcc_fast.model.motion.dense_motion import DenseMotion, DenseMotionNetwork
from mcc_fast.model.motion.keypoint_detector import KeypointDetector, Keypoints
from mcc_fast.model.summary import summary_repr


@dataclass
class MotionEstimate:
    """What the motion estimator hands to the generator (shapes at the defaults, S = 64).

    kp_source, kp_driving: Keypoints (value (B, K, 2), jacobian (B, K, 2, 2) or None);
    deformation (B, S, S, 2); occlusion_map (B, 1, S, S) or None; mask (B, K+1, S, S);
    driving_kp_heatmap (B, K, S, S); sparse_motion (B, K+1, S, S, 2) only when asked.
    """

    __repr__ = summary_repr

    kp_source: Keypoints
    kp_driving: Keypoints
    deformation: torch.Tensor
    occlusion_map: torch.Tensor | None
    mask: torch.Tensor
    driving_kp_heatmap: torch.Tensor
    sparse_motion: torch.Tensor | None = None

    def as_dict(self) -> dict:
        """The official output dict's keys (those this implementation produces)."""
        out = {
            "kp_source": self.kp_source.as_dict(),
            "kp_driving": self.kp_driving.as_dict(),
            "deformation": self.deformation,
            "mask": self.mask,
            "driving_kp_heatmap": self.driving_kp_heatmap,
        }
        if self.occlusion_map is not None:
            out["occlusion_map"] = self.occlusion_map
        if self.sparse_motion is not None:
            out["sparse_motion"] = self.sparse_motion
        return out


class MotionEstimator(nn.Module):
    """Keypoint detector + dense motion network (official `Motion_Estimator_keypoint_aware`).

    ``forward(driving, source)`` (driving first, like the official) takes two (B, C, S0, S0)
    image batches in [-1, 1] (S0 = config.image_size) and returns a `MotionEstimate`.
    ``keypoints(image)`` and ``dense_motion(source, kp_source, kp_driving)`` split the work so
    a caller can detect the source keypoints once per video.

    Inputs are validated by shape only; NaN/inf pixels are not checked (that would force a
    device sync) and propagate to NaN keypoints and flows.
    """

    def __init__(self, config: MotionEstimatorConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else MotionEstimatorConfig()
        self.keypoint_detector = KeypointDetector(self.config)
        self.dense_motion_net = DenseMotionNetwork(self.config)

    def _check_image(self, name: str, image: torch.Tensor) -> None:
        cfg = self.config
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(image).__name__}")
        if not image.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {image.dtype}")
        expected = (cfg.num_channels, cfg.image_size, cfg.image_size)
        if image.dim() != 4 or tuple(image.shape[1:]) != expected:
            raise ValueError(f"{name} must have shape (B, {', '.join(map(str, expected))}), got {tuple(image.shape)}")

    def _check_keypoints(self, name: str, kp: Keypoints, batch: int) -> None:
        cfg = self.config
        if not isinstance(kp, Keypoints):
            raise TypeError(f"{name} must be a Keypoints, got {type(kp).__name__}")
        if tuple(kp.value.shape) != (batch, cfg.num_kp, 2):
            raise ValueError(f"{name}.value must have shape {(batch, cfg.num_kp, 2)}, got {tuple(kp.value.shape)}")
        if cfg.kp_estimate_jacobian:
            if kp.jacobian is None or tuple(kp.jacobian.shape) != (batch, cfg.num_kp, 2, 2):
                got = None if kp.jacobian is None else tuple(kp.jacobian.shape)
                raise ValueError(f"{name}.jacobian must have shape {(batch, cfg.num_kp, 2, 2)}, got {got}")

    def keypoints(self, image: torch.Tensor) -> Keypoints:
        """Keypoints of a (B, C, S0, S0) batch: value (B, K, 2), jacobian (B, K, 2, 2) or None."""
        self._check_image("image", image)
        return self.keypoint_detector(image)

    def dense_motion(
        self,
        source: torch.Tensor,
        kp_source: Keypoints,
        kp_driving: Keypoints,
        *,
        return_sparse_motion: bool = False,
    ) -> MotionEstimate:
        """Dense motion from precomputed keypoints (source (B, C, S0, S0); Keypoints of batch B)."""
        self._check_image("source", source)
        self._check_keypoints("kp_source", kp_source, source.shape[0])
        self._check_keypoints("kp_driving", kp_driving, source.shape[0])
        dense: DenseMotion = self.dense_motion_net(
            source, kp_source, kp_driving, return_sparse_motion=return_sparse_motion
        )
        return MotionEstimate(
            kp_source=kp_source,
            kp_driving=kp_driving,
            deformation=dense.deformation,
            occlusion_map=dense.occlusion_map,
            mask=dense.mask,
            driving_kp_heatmap=dense.driving_kp_heatmap,
            sparse_motion=dense.sparse_motion,
        )

    def forward(
        self, driving: torch.Tensor, source: torch.Tensor, *, return_sparse_motion: bool = False
    ) -> MotionEstimate:
        """Motion from `source` to `driving` (both (B, C, S0, S0), same batch, dtype and device)."""
        self._check_image("driving", driving)
        self._check_image("source", source)
        if driving.shape[0] != source.shape[0]:
            raise ValueError(f"driving batch {driving.shape[0]} != source batch {source.shape[0]}")
        if self.training:
            # Separate calls: in training BatchNorm normalises each call by its own batch
            # statistics, as the official does (driving first, then source).
            kp_driving = self.keypoint_detector(driving)
            kp_source = self.keypoint_detector(source)
        else:
            # Eval BatchNorm is per-sample, so one call over both batches is the same function.
            both = self.keypoint_detector(torch.cat([driving, source], dim=0))
            bs = driving.shape[0]
            kp_driving, kp_source = both[:bs], both[bs:]
        return self.dense_motion(source, kp_source, kp_driving, return_sparse_motion=return_sparse_motion)
