"""Official motion-estimator state-dict names -> ours, and the converter.

The official names (`Motion_Estimator_keypoint_aware.state_dict()`) appear only in this table.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from mcc_fast.model.motion.config import MotionEstimatorConfig

# (official prefix, our prefix); the first matching prefix wins, the rest of the key is kept
# (e.g. `<block>.conv.weight`, `<block>.norm.running_var` are named alike in both).
OFFICIAL_TO_OURS_PREFIXES: tuple[tuple[str, str], ...] = (
    ("kp_detector.predictor.encoder.down_blocks.", "keypoint_detector.hourglass.encoder.blocks."),
    ("kp_detector.predictor.decoder.up_blocks.", "keypoint_detector.hourglass.decoder.blocks."),
    ("kp_detector.kp.", "keypoint_detector.heatmap_head."),
    ("kp_detector.jacobian.", "keypoint_detector.jacobian_head."),
    ("kp_detector.down.weight", "keypoint_detector.downsample.kernel"),
    ("dense_motion_network.hourglass.encoder.down_blocks.", "dense_motion_net.hourglass.encoder.blocks."),
    ("dense_motion_network.hourglass.decoder.up_blocks.", "dense_motion_net.hourglass.decoder.blocks."),
    ("dense_motion_network.mask.", "dense_motion_net.mask_head."),
    ("dense_motion_network.occlusion.", "dense_motion_net.occlusion_head."),
    ("dense_motion_network.down.weight", "dense_motion_net.downsample.kernel"),
)


class StateDictMismatchError(KeyError):
    """A converted state dict does not fit the model: lists missing, unexpected and misshapen keys."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def official_to_ours(name: str) -> str | None:
    """Our parameter/buffer name for an official motion-estimator key, or None if unknown."""
    for official, ours in OFFICIAL_TO_OURS_PREFIXES:
        if official.endswith("."):
            if name.startswith(official):
                return ours + name[len(official):]
        elif name == official:
            return ours
    return None


def ours_to_official(name: str) -> str | None:
    """The official key for one of our parameter/buffer names, or None if it has none."""
    for official, ours in OFFICIAL_TO_OURS_PREFIXES:
        if ours.endswith("."):
            if name.startswith(ours):
                return official + name[len(ours):]
        elif name == ours:
            return official
    return None


def motion_estimator_key_map(config: MotionEstimatorConfig | None = None) -> dict[str, str]:
    """{official key: our key} for every state-dict entry of `MotionEstimator(config)`."""
    expected = _expected_shapes(config if config is not None else MotionEstimatorConfig())
    return {ours_to_official(k): k for k in expected}


def _expected_shapes(config: MotionEstimatorConfig) -> dict[str, tuple[int, ...]]:
    from mcc_fast.model.motion.motion_estimator import MotionEstimator

    with torch.device("meta"):
        model = MotionEstimator(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _summary(title: str, names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
    return f"{title} ({len(names)}): {shown}"


def convert_motion_estimator_state_dict(
    official: Mapping[str, torch.Tensor], config: MotionEstimatorConfig | None = None
) -> dict[str, torch.Tensor]:
    """Rename an official motion-estimator state dict to `MotionEstimator`'s names.

    official: {official name: tensor} (a leading `module.` is stripped). config: the model it
    is for (default config if None), used to check the key set and shapes. Returns a new dict
    (tensors shared, not copied) for `MotionEstimator(config).load_state_dict(..., strict=True)`.
    Raises StateDictMismatchError listing missing, unexpected and misshapen keys (official
    names for unexpected keys, ours for missing ones).
    """
    if not isinstance(official, Mapping):
        raise TypeError(f"official must be a mapping of names to tensors, got {type(official).__name__}")
    expected = _expected_shapes(config if config is not None else MotionEstimatorConfig())
    converted: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    misshapen: list[str] = []
    misshapen_ours: set[str] = set()
    for raw_name, tensor in official.items():
        name = raw_name[len("module."):] if raw_name.startswith("module.") else raw_name
        ours = official_to_ours(name)
        if ours is None or ours not in expected:
            unexpected.append(raw_name)
            continue
        if tuple(tensor.shape) != expected[ours]:
            misshapen.append(f"{raw_name} {tuple(tensor.shape)} (expected {expected[ours]} for {ours})")
            misshapen_ours.add(ours)
            continue
        converted[ours] = tensor
    missing = [k for k in expected if k not in converted and k not in misshapen_ours]
    if missing or unexpected or misshapen:
        parts = []
        if missing:
            parts.append(_summary("missing keys", missing))
        if unexpected:
            parts.append(_summary("unexpected keys", unexpected))
        if misshapen:
            parts.append(_summary("shape mismatches", misshapen))
        raise StateDictMismatchError("motion estimator state dict does not match the model: " + "; ".join(parts))
    return converted
