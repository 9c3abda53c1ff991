"""The whole model's configuration: motion estimator + generator, kept consistent."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .generator.config import GeneratorConfig
from .motion.config import MotionEstimatorConfig


def _check_small(image_size: Any, num_kp: Any, width: Any) -> None:
    """ValueError naming the argument of ModelConfig.small that it cannot build."""
    for name, value in (("image_size", image_size), ("num_kp", num_kp), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"ModelConfig.small: {name} must be a positive int, got {value!r}")
    # 3 levels (<= 64): flow = S/2, whose hourglass halves it 3 times; 4 levels: flow = S/4
    if image_size % (16 if image_size <= 64 else 32):
        raise ValueError("ModelConfig.small: image_size must be a multiple of 16 up to 64, or of 32 above, "
                         f"got {image_size}")
    if width % 8:
        raise ValueError(f"ModelConfig.small: width must be a multiple of 8 (its 8 GroupNorm groups), got {width}")


#: Largest image side a model may declare: above it one frame's activations alone outgrow any
#: machine's memory (a checkpoint's config is read from the file, and only the position embeddings
#: grow with the image size over the token grid: a tiny file could otherwise declare 65536).
MAX_IMAGE_SIZE = 4096


@dataclass(frozen=True)
class ModelConfig:
    """Configuration of `mcc_fast.Model`. The default is the paper's model (82.17M parameters)."""

    motion: MotionEstimatorConfig = field(default_factory=MotionEstimatorConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)

    def __post_init__(self) -> None:
        for name, klass in (("motion", MotionEstimatorConfig), ("generator", GeneratorConfig)):
            if not isinstance(getattr(self, name), klass):
                raise TypeError(f"ModelConfig: {name} must be a {klass.__name__}, got "
                                f"{type(getattr(self, name)).__name__} (ModelConfig.from_dict reads dicts)")
        m, g = self.motion, self.generator
        pairs = [
            ("image_size", m.image_size, g.image_size),
            ("num_kp / num_keypoints", m.num_kp, g.num_keypoints),
            ("num_channels / image_channels", m.num_channels, g.image_channels),
            ("dense-motion size / flow_size", m.dm_size, g.flow_size),
        ]
        for what, a, b in pairs:
            if a != b:
                raise ValueError(f"ModelConfig: motion and generator disagree on {what}: {a} != {b}")
        if g.image_size > MAX_IMAGE_SIZE:
            raise ValueError(f"ModelConfig: image_size {g.image_size} is too large: at most {MAX_IMAGE_SIZE}")
        if not m.dm_estimate_occlusion:
            raise ValueError("ModelConfig: motion.dm_estimate_occlusion must be True: the generator warps with "
                             "the dense motion network's occlusion map")

    @property
    def image_size(self) -> int:
        """Side of the square images the model takes and makes."""
        return self.generator.image_size

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        def plain(part) -> dict[str, Any]:
            return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(part).items()}

        return {"motion": plain(self.motion), "generator": plain(self.generator)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Inverse of `to_dict`; unknown fields are a clear error."""
        if not isinstance(data, dict):
            raise ValueError("ModelConfig.from_dict: expected a dict with keys 'motion' and 'generator', got "
                             f"{type(data).__name__}")
        if set(data) - {"motion", "generator"}:
            raise ValueError(f"ModelConfig.from_dict: expected keys 'motion' and 'generator', got {list(data)!r}")
        parts = {}
        for key, klass in (("motion", MotionEstimatorConfig), ("generator", GeneratorConfig)):
            values = data.get(key, {})
            if not isinstance(values, dict):
                raise ValueError(f"ModelConfig.from_dict: {key} must be a dict of {klass.__name__} fields, got "
                                 f"{type(values).__name__}")
            values = dict(values)
            names = {f.name for f in dataclasses.fields(klass)}
            unknown = set(values) - names
            if unknown:
                raise ValueError(f"ModelConfig.from_dict: unknown {key} fields {sorted(map(str, unknown))}")
            for name, value in values.items():
                if isinstance(value, list):
                    values[name] = tuple(value)
            parts[key] = klass(**values)
        return cls(**parts)

    def differences(self, other: "ModelConfig", mine: str = "this", theirs: str = "other") -> list[str]:
        """The fields that differ from `other`, each as "part.field: <mine> (mine) vs <theirs> (theirs)"
        (e.g. "generator.num_keypoints: 10 (file) vs 5 (given)"); [] when equal."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{part}.{name}: {a[part][name]!r} ({mine}) vs {b[part][name]!r} ({theirs})"
                for part in ("motion", "generator") for name in a[part] if a[part][name] != b[part][name]]

    def to_json(self) -> str:
        """The config as a JSON string (sorted keys; what our checkpoints store)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        """The config of a `to_json` string (unknown fields are a ValueError)."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def small(cls, image_size: int = 64, num_kp: int = 10, width: int = 32) -> "ModelConfig":
        """A narrow model for tests and demos: three levels up to image_size 64 (a multiple of 16),
        a fourth above (a multiple of 32, e.g. 128); width: a multiple of 8 (its GroupNorm groups).
        ValueError naming the argument otherwise."""
        _check_small(image_size, num_kp, width)
        generator = GeneratorConfig(
            image_size=image_size, base_channels=width,
            channel_multipliers=(1, 2, 2) if image_size <= 64 else (1, 2, 2, 4), num_keypoints=num_kp,
            motion_codebook_size=96, motion_dim=16, appearance_codebook_size=96, appearance_dim=32,
            num_heads=4, updater_width=16, norm_groups=8,
        )
        scale = generator.flow_size / image_size  # the motion estimator works at the flow size
        motion = MotionEstimatorConfig(
            num_kp=num_kp, image_size=image_size,
            kp_block_expansion=8, kp_max_features=64, kp_num_blocks=3, kp_scale_factor=scale,
            dm_block_expansion=8, dm_max_features=64, dm_num_blocks=3, dm_scale_factor=scale,
        )
        return cls(motion=motion, generator=generator)
