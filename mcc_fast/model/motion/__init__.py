"""Motion estimator: FOMM-style keypoint detector + dense motion network (MCC's, K = 15)."""
from __future__ import annotations

from mcc_fast.model.motion.config import MotionEstimatorConfig
from mcc_fast.model.motion.dense_motion import DenseMotion, DenseMotionNetwork
from mcc_fast.model.motion.keypoint_detector import KeypointDetector, Keypoints
from mcc_fast.model.motion.keys import (
    StateDictMismatchError,
    convert_motion_estimator_state_dict,
    motion_estimator_key_map,
)
from mcc_fast.model.motion.motion_estimator import MotionEstimate, MotionEstimator

__all__ = [
    "DenseMotion",
    "DenseMotionNetwork",
    "KeypointDetector",
    "Keypoints",
    "MotionEstimate",
    "MotionEstimator",
    "MotionEstimatorConfig",
    "StateDictMismatchError",
    "convert_motion_estimator_state_dict",
    "motion_estimator_key_map",
]
