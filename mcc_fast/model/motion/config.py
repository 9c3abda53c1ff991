"""Configuration of the motion estimator (keypoint detector + dense motion network)."""
from __future__ import annotations

import math
from dataclasses import dataclass


def _inverse_scale(name: str, scale: float) -> int:
    """1/scale as an int, or a ValueError naming the field when it is not one."""
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not 0 < scale <= 1:
        raise ValueError(f"{name} must be a number in (0, 1], got {scale!r}")
    inverse = 1.0 / scale
    if abs(inverse - round(inverse)) > 1e-6:
        raise ValueError(f"{name} must be 1/n for an integer n (the downsample keeps every n-th pixel), got {scale!r}")
    return int(round(inverse))


@dataclass(frozen=True)
class MotionEstimatorConfig:
    """Hyper-parameters of `MotionEstimator`; the defaults are the official MCC model.

    ``kp_*`` configure the keypoint detector, ``dm_*`` the dense motion network. Both work on
    the image downsampled by their ``*_scale_factor`` (256 -> 64 by default), whose side must
    be divisible by ``2 ** *_num_blocks`` (the hourglass halves it that many times).
    ``kp_head_padding`` is the official ``pad`` of the 7x7 keypoint/jacobian heads (0: the
    64x64 hourglass output gives 58x58 heatmaps).
    """

    num_kp: int = 15
    num_channels: int = 3
    image_size: int = 256
    kp_variance: float = 0.01
    # keypoint detector
    kp_block_expansion: int = 32
    kp_max_features: int = 1024
    kp_num_blocks: int = 5
    kp_temperature: float = 0.1
    kp_scale_factor: float = 0.25
    kp_estimate_jacobian: bool = True
    kp_single_jacobian_map: bool = False
    kp_head_padding: int = 0
    # dense motion network
    dm_block_expansion: int = 64
    dm_max_features: int = 1024
    dm_num_blocks: int = 5
    dm_scale_factor: float = 0.25
    dm_estimate_occlusion: bool = True

    def __post_init__(self) -> None:
        for name in (
            "num_kp",
            "num_channels",
            "image_size",
            "kp_block_expansion",
            "kp_max_features",
            "kp_num_blocks",
            "dm_block_expansion",
            "dm_max_features",
            "dm_num_blocks",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.kp_head_padding, int) or isinstance(self.kp_head_padding, bool) or not 0 <= self.kp_head_padding <= 3:
            raise ValueError(f"kp_head_padding must be an int in [0, 3], got {self.kp_head_padding!r}")
        for name in ("kp_variance", "kp_temperature"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        for name in ("kp_estimate_jacobian", "kp_single_jacobian_map", "dm_estimate_occlusion"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        for prefix in ("kp", "dm"):
            scale_name = f"{prefix}_scale_factor"
            inverse = _inverse_scale(scale_name, getattr(self, scale_name))
            if self.image_size % inverse:
                raise ValueError(f"image_size {self.image_size} must be divisible by 1/{scale_name} = {inverse}")
            side = self.image_size // inverse
            blocks = getattr(self, f"{prefix}_num_blocks")
            if side % (2**blocks):
                raise ValueError(
                    f"{prefix}_num_blocks = {blocks} halves the {side}x{side} working resolution "
                    f"(image_size * {scale_name}) {blocks} times: it must be divisible by {2**blocks}"
                )
        if self.heatmap_size < 1:
            raise ValueError(
                f"kp_head_padding {self.kp_head_padding}: the 7x7 keypoint head on a {self.kp_feature_size}x"
                f"{self.kp_feature_size} map leaves no heatmap (image_size or kp_scale_factor too small)"
            )
        if self.dm_size < 2:
            raise ValueError(f"image_size * dm_scale_factor must be at least 2, got {self.dm_size}")

    @property
    def kp_feature_size(self) -> int:
        """Side of the keypoint detector's working resolution (64 by default)."""
        return self.image_size // _inverse_scale("kp_scale_factor", self.kp_scale_factor)

    @property
    def heatmap_size(self) -> int:
        """Side of the keypoint heatmaps (58 by default: 7x7 head, padding 0, on 64x64)."""
        return self.kp_feature_size - 6 + 2 * self.kp_head_padding

    @property
    def dm_size(self) -> int:
        """Side of the dense motion outputs: flow, mask, occlusion, heatmaps (64 by default)."""
        return self.image_size // _inverse_scale("dm_scale_factor", self.dm_scale_factor)

    @property
    def dm_in_channels(self) -> int:
        """Channels of the dense motion hourglass input, (K+1)*(C+1) (64 by default)."""
        return (self.num_kp + 1) * (self.num_channels + 1)
