"""`LossWeights`: every loss weight and start iteration of the training objective, in one place.

Defaults are the official ``options/train.yml``. Iterations are 1-based (the first training
step is iteration 1, as basicsr counts) and a term is active when ``iteration > start`` (the
official ``current_iter > net_d_start_iter``): the GAN (generator term and discriminator
updates) starts at 5001, so its first step is iteration 5002.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

__all__ = ["LOSS_TERMS", "LossWeights"]

# Names of the weighted terms (each is a float field of LossWeights).
LOSS_TERMS = (
    "l1",
    "perceptual",
    "low_res",
    "gan",
    "motion_vq",
    "appearance_vq",
    "motion_recon",
    "equivariance_value",
    "equivariance_jacobian",
    "keypoint_distance",
)


def _default_start_iters() -> dict[str, int]:
    return {"gan": 5001}


def _check_start_iters(value: Any) -> None:
    if not isinstance(value, Mapping):
        raise ValueError(f"LossWeights.start_iters must be a mapping term -> iteration, e.g. {{gan: 5001}}, "
                         f"got {value!r}")


@dataclass
class LossWeights:
    """Loss weights (official defaults) and per-term start iterations.

    l1, perceptual: main output. low_res: factor on (l1 * L1 + perceptual * P) of the
    low-resolution branch. gan: the adaptive weight's scale (0.8) when ``adaptive_gan``,
    else the fixed GAN weight; gan_max_ratio: the clamp of the gradient-norm ratio (1.0).
    motion_vq, appearance_vq: per-scale VQ losses. motion_recon: 32. equivariance_value,
    equivariance_jacobian, keypoint_distance: 1 each. perceptual_layer_weights: relu1_1 ..
    relu5_1 (1 each). start_iters: term -> start iteration (missing terms start at 0).
    """

    l1: float = 1.0
    perceptual: float = 1.0
    low_res: float = 0.5
    gan: float = 0.8
    adaptive_gan: bool = True
    gan_max_ratio: float = 1.0
    motion_vq: float = 1.0
    appearance_vq: float = 1.0
    motion_recon: float = 32.0
    equivariance_value: float = 1.0
    equivariance_jacobian: float = 1.0
    keypoint_distance: float = 1.0
    perceptual_layer_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)
    start_iters: dict[str, int] = field(default_factory=_default_start_iters)

    def __post_init__(self) -> None:
        for name in LOSS_TERMS + ("gan_max_ratio",):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"LossWeights.{name} must be a finite number >= 0, got {value!r}")
            setattr(self, name, float(value))
        if not isinstance(self.adaptive_gan, bool):
            raise ValueError(f"LossWeights.adaptive_gan must be a bool, got {self.adaptive_gan!r}")
        layer_weights = self.perceptual_layer_weights
        if not isinstance(layer_weights, (list, tuple)) or len(layer_weights) != 5 or any(
                isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w < math.inf for w in layer_weights):
            raise ValueError(
                f"LossWeights.perceptual_layer_weights must be 5 numbers >= 0, got {self.perceptual_layer_weights!r}"
            )
        self.perceptual_layer_weights = tuple(float(w) for w in layer_weights)
        _check_start_iters(self.start_iters)
        starts = {}
        for term, start in self.start_iters.items():
            if term not in LOSS_TERMS:
                raise ValueError(f"LossWeights.start_iters: unknown term {term!r}; terms are {LOSS_TERMS}")
            if isinstance(start, bool) or not isinstance(start, int) or start < 0:
                raise ValueError(f"LossWeights.start_iters[{term!r}] must be an int >= 0, got {start!r}")
            starts[term] = start
        self.start_iters = starts

    def start_iter(self, term: str) -> int:
        """The start iteration of `term` (0 when not listed)."""
        if term not in LOSS_TERMS:
            raise ValueError(f"unknown loss term {term!r}; terms are {LOSS_TERMS}")
        return self.start_iters.get(term, 0)

    def is_active(self, term: str, iteration: int) -> bool:
        """True when `term` has a non-zero weight and the 1-based `iteration` > its start."""
        return getattr(self, term) != 0 and iteration > self.start_iter(term)

    def weight_at(self, term: str, iteration: int) -> float:
        """The weight of `term` at `iteration`: its weight when active, else 0.0."""
        return getattr(self, term) if self.is_active(term, iteration) else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON friendly: lists for tuples)."""
        out = asdict(self)
        out["perceptual_layer_weights"] = list(self.perceptual_layer_weights)
        out["start_iters"] = dict(self.start_iters)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LossWeights":
        """Build from a mapping (e.g. a YAML section); ValueError naming unknown keys."""
        if not isinstance(data, Mapping):
            raise ValueError(f"loss weights must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown loss weight keys {unknown}; known keys are {sorted(known)}")
        kwargs = dict(data)
        if "start_iters" in kwargs:
            _check_start_iters(kwargs["start_iters"])
            kwargs["start_iters"] = {**_default_start_iters(), **dict(kwargs["start_iters"])}
        return cls(**kwargs)
