"""Training configuration: dataclasses, YAML loading and ``--set key=value`` overrides.

The YAML mirrors the authors' ``options/train.yml`` (see ``configs/official.yaml``), grouped
into sections:

    name, seed
    model:         preset (official | small), image_size, num_kp, width, motion/generator overrides
    discriminator: base_channels (ndf), num_layers
    data:          root, id_sampling, hflip, time_flip, repeats (dataset_enlarge_ratio),
                   batch_size (per process), num_workers, cache_mb
    optim:         lr, betas, weight_decay, milestones, gamma (three Adam optimisers)
    train:         total_iter, ema_decay, accumulate, precision, sync_bn, find_unused_parameters, device
    loss:          every `LossWeights` field, perceptual_scales, vgg_weights, random_vgg,
                   vgg_stage_channels, equivariance (sigma_affine, sigma_tps, points_tps, align_corners)
    log:           print_every, progress, tensorboard, image_every, val_every, val_videos, val_frames
    checkpoint:    every, keep_last

Unknown keys and ill-typed values are errors naming the dotted key (``optim.lrr``).
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from mcc_fast.model.config import ModelConfig
from mcc_fast.model.generator.config import GeneratorConfig
from mcc_fast.model.motion.config import MotionEstimatorConfig

from .losses.weights import LossWeights

__all__ = [
    "ConfigError",
    "ModelSection",
    "DiscriminatorSection",
    "DataSection",
    "OptimSection",
    "TrainSection",
    "EquivarianceSection",
    "LossSection",
    "LogSection",
    "CheckpointSection",
    "TrainConfig",
    "load_config",
    "apply_overrides",
    "parse_override",
    "CONFIG_DIR",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PRECISIONS = ("fp32", "bf16", "fp16")
MAX_IMAGE_SIZE = 1024  # model.image_size (pixels): larger runs out of memory long before a step
MAX_NUM_WORKERS = 64  # data.num_workers (loader processes per training process)


class ConfigError(ValueError):
    """A training configuration value that cannot be used (names the dotted key)."""


# ---- typed field checks ----------------------------------------------------------------------

def _fail(key: str, expected: str, value: Any) -> None:
    raise ConfigError(f"config {key}: expected {expected}, got {value!r}")


def _number_from_text(text: str) -> float | None:
    """The float a text spells (YAML 1.1 reads `8e-5` and `5e3` as strings), or None."""
    try:
        return float(text)
    except ValueError:
        return None


def _int(key: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, str) and "e" in value.lower() and _number_from_text(value) is not None:
        value = _number_from_text(value)  # `5e3`; a quoted '8' stays refused
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # YAML `5.0e+3` is a float
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum) \
            or (maximum is not None and value > maximum):
        expected = (f"an integer in [{minimum}, {maximum}]" if maximum is not None else
                    f"an integer >= {minimum}" if minimum is not None else "an integer")
        _fail(key, expected, value)
    return value


def _float(key: str, value: Any, minimum: float | None = None, maximum: float | None = None) -> float:
    if isinstance(value, str):
        if _number_from_text(value) is None:
            _fail(key, "a number", value)
        value = _number_from_text(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(key, "a finite number", value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        expected = (f"a number in [{minimum:g}, {maximum:g}]" if minimum is not None and maximum is not None else
                    f"a number >= {minimum:g}" if minimum is not None else f"a number <= {maximum:g}")
        _fail(key, expected, value)
    return float(value)


def _check_keys(key: str, values: Mapping) -> None:
    """ConfigError unless every key of the mapping at `key` is a name (text)."""
    for name in values:
        if not isinstance(name, str):
            where = f"config {key}" if key else "config"
            raise ConfigError(f"{where}: key {name!r} ({type(name).__name__}) is not a field name: "
                              f"expected text keys")


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        _fail(key, "true or false", value)
    return value


def _optional_path(key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        _fail(key, "a path or null", value)
    return os.fspath(value)


# ---- sections ---------------------------------------------------------------------------------

@dataclass
class ModelSection:
    """Which model to train.

    preset: "official" (the paper's 82M model, ModelConfig()) or "small"
    (ModelConfig.small(image_size, num_kp, width); with "official" these three keep their
    defaults, other values are a ConfigError). motion / generator: field overrides of
    MotionEstimatorConfig / GeneratorConfig applied on top of the preset.
    """

    preset: str = "official"
    image_size: int = 256
    num_kp: int = 15
    width: int = 32
    motion: dict = field(default_factory=dict)
    generator: dict = field(default_factory=dict)

    def check(self, key: str = "model") -> None:
        """Validate (and normalise) this section in place; ConfigError naming `key.field`."""
        if self.preset not in ("official", "small"):
            _fail(f"{key}.preset", "'official' or 'small'", self.preset)
        self.image_size = _int(f"{key}.image_size", self.image_size, 16, MAX_IMAGE_SIZE)
        self.num_kp = _int(f"{key}.num_kp", self.num_kp, 1)
        self.width = _int(f"{key}.width", self.width, 1)
        if self.preset == "official":
            self._refuse_small_sizes(key)
        for part in ("motion", "generator"):
            if not isinstance(getattr(self, part), Mapping):
                _fail(f"{key}.{part}", "a mapping of field overrides", getattr(self, part))
            _check_keys(f"{key}.{part}", getattr(self, part))
        self.build()  # surfaces inconsistent sizes now, naming the section

    def _refuse_small_sizes(self, key: str) -> None:
        """ConfigError naming image_size / num_kp / width when they differ from their defaults under
        preset official, which they do not size (they would be ignored without a word)."""
        for name in ("image_size", "num_kp", "width"):
            default = next(f.default for f in dataclasses.fields(self) if f.name == name)
            if getattr(self, name) != default:
                raise ConfigError(f"config {key}.{name}: sizes preset 'small' only (preset 'official' is the "
                                  f"paper's model, ModelConfig()); remove it (a config.yaml of an earlier "
                                  f"official run records it unused), set {key}.preset: small, or override "
                                  f"{key}.generator / {key}.motion fields, got {getattr(self, name)!r}")

    def build(self) -> ModelConfig:
        """The ModelConfig this section describes (ConfigError naming the bad field)."""
        if self.preset == "official":
            base = ModelConfig()
        else:
            try:
                base = ModelConfig.small(self.image_size, self.num_kp, self.width)
            except ValueError as exc:
                raise ConfigError(f"config model (preset small, image_size {self.image_size}, width "
                                  f"{self.width}): {exc}") from None
        parts = {}
        for part, klass, current in (("motion", MotionEstimatorConfig, base.motion),
                                     ("generator", GeneratorConfig, base.generator)):
            overrides = dict(getattr(self, part))
            names = {f.name for f in dataclasses.fields(klass)}
            unknown = sorted(set(overrides) - names)
            if unknown:
                raise ConfigError(f"config model.{part}: unknown fields {unknown}; known: {sorted(names)}")
            overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
            overrides = _yaml_floats(klass, overrides)
            try:
                parts[part] = dataclasses.replace(current, **overrides)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"config model.{part}: {exc}") from None
        try:
            return ModelConfig(**parts)
        except ValueError as exc:
            raise ConfigError(f"config model: {exc}") from None


def _yaml_floats(klass, overrides: dict) -> dict:
    """`overrides` with the text of a number turned into that float for `klass`'s float fields
    (YAML 1.1 reads `1e-2` as a string, as `_float` allows elsewhere); other values unchanged."""
    floats = {f.name for f in dataclasses.fields(klass) if f.type in ("float", float)}
    out = dict(overrides)
    for name, value in overrides.items():
        if name in floats and isinstance(value, str) and _number_from_text(value) is not None:
            out[name] = _number_from_text(value)  # otherwise the config class names the field and value
    return out


@dataclass
class DiscriminatorSection:
    """PatchGAN discriminator (official VQGANDiscriminator: ndf 64, n_layers 4)."""

    base_channels: int = 64
    num_layers: int = 4

    def check(self, key: str = "discriminator") -> None:
        """Validate (and normalise) this section in place; ConfigError naming `key.field`."""
        self.base_channels = _int(f"{key}.base_channels", self.base_channels, 1)
        self.num_layers = _int(f"{key}.num_layers", self.num_layers, 1)


@dataclass
class DataSection:
    """FOMM-layout data (root/train, root/test) and its loader. batch_size is per process;
    cache_mb: the resized-frame cache of each loader worker, used for frame-folder videos
    (video files are decoded for each item)."""

    root: str | None = None
    id_sampling: bool = True
    hflip: bool = True
    time_flip: bool = True
    repeats: int = 100
    batch_size: int = 4
    num_workers: int = 4
    cache_mb: int = 256

    def check(self, key: str = "data") -> None:
        """Validate (and normalise) this section in place; ConfigError naming `key.field`."""
        self.root = _optional_path(f"{key}.root", self.root)
        for name in ("id_sampling", "hflip", "time_flip"):
            setattr(self, name, _bool(f"{key}.{name}", getattr(self, name)))
        self.repeats = _int(f"{key}.repeats", self.repeats, 1)
        self.batch_size = _int(f"{key}.batch_size", self.batch_size, 1)
        self.num_workers = _int(f"{key}.num_workers", self.num_workers, 0, MAX_NUM_WORKERS)
        self.cache_mb = _int(f"{key}.cache_mb", self.cache_mb, 0)


@dataclass
class OptimSection:
    """Three Adam optimisers (generator, motion estimator, discriminator) and MultiStepLR."""

    lr: float = 8e-5
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = (200000, 225000)
    gamma: float = 0.5

    def check(self, key: str = "optim") -> None:
        """Validate (and normalise) this section in place; ConfigError naming `key.field`."""
        self.lr = _float(f"{key}.lr", self.lr, 0.0)
        if not isinstance(self.betas, (list, tuple)) or len(self.betas) != 2:
            _fail(f"{key}.betas", "two numbers in [0, 1)", self.betas)
        self.betas = tuple(_float(f"{key}.betas", b, 0.0, 0.999999) for b in self.betas)
        self.weight_decay = _float(f"{key}.weight_decay", self.weight_decay, 0.0)
        if not isinstance(self.milestones, (list, tuple)):
            _fail(f"{key}.milestones", "a list of iterations", self.milestones)
        self.milestones = tuple(_int(f"{key}.milestones", m, 1) for m in self.milestones)
        if list(self.milestones) != sorted(self.milestones):
            _fail(f"{key}.milestones", "increasing iterations", self.milestones)
        self.gamma = _float(f"{key}.gamma", self.gamma, 0.0)


@dataclass
class TrainSection:
    """Loop settings.

    total_iter: iterations (optimiser steps). accumulate: micro-batches per step.
    precision: fp32 | bf16 (autocast) | fp16 (autocast + gradient scaler); flows and VQ
    distances stay fp32. sync_bn: SyncBatchNorm in the motion estimator when running on
    several CUDA processes (the official declares SynchronizedBatchNorm2d there); the
    discriminator's BatchNorm always normalises per process, as the official's plain
    nn.BatchNorm2d under DDP. find_unused_parameters: "auto" (on when a loss
    term is off) or a bool. device: "auto" (CUDA when available), "cpu" or "cuda".
    fused_ops: run the model's warps, codebook searches and dense-motion geometry on
    mcc_fast.ops' fused kernels (`Model.use_fused_ops`): "auto" (on when training on CUDA)
    or a bool.
    """

    total_iter: int = 250000
    ema_decay: float = 0.995
    accumulate: int = 1
    precision: str = "fp32"
    sync_bn: bool = True
    find_unused_parameters: Any = "auto"
    device: str = "auto"
    fused_ops: Any = "auto"

    def check(self, key: str = "train") -> None:
        """Validate (and normalise) this section in place; ConfigError naming `key.field`."""
        self.total_iter = _int(f"{key}.total_iter", self.total_iter, 1)
        self.ema_decay = _float(f"{key}.ema_decay", self.ema_decay, 0.0, 1.0)
        self.accumulate = _int(f"{key}.accumulate", self.accumulate, 1)
        if self.precision not in PRECISIONS:
            _fail(f"{key}.precision", f"one of {PRECISIONS}", self.precision)
        self.sync_bn = _bool(f"{key}.sync_bn", self.sync_bn)
        if self.find_unused_parameters != "auto" and not isinstance(self.find_unused_parameters, bool):
            _fail(f"{key}.find_unused_parameters", "'auto', true or false", self.find_unused_parameters)
        if self.device not in ("auto", "cpu", "cuda"):
            _fail(f"{key}.device", "'auto', 'cpu' or 'cuda'", self.device)
        if self.fused_ops != "auto" and not isinstance(self.fused_ops, bool):
            _fail(f"{key}.fused_ops", "'auto', true or false", self.fused_ops)


@dataclass
class EquivarianceSection:
    """FOMM random transform (official sigma_affine 0.05, sigma_tps 0.005, points_tps 5)."""

    sigma_affine: float = 0.05
    sigma_tps: float = 0.005
    points_tps: int = 5
    align_corners: bool = False

    def check(self, key: str = "loss.equivariance") -> None:
        self.sigma_affine = _float(f"{key}.sigma_affine", self.sigma_affine, 0.0)
        self.sigma_tps = _float(f"{key}.sigma_tps", self.sigma_tps, 0.0)
        self.points_tps = _int(f"{key}.points_tps", self.points_tps, 0)
        if self.points_tps == 1:
            _fail(f"{key}.points_tps", "0 (no TPS) or an integer >= 2", 1)
        self.align_corners = _bool(f"{key}.align_corners", self.align_corners)


@dataclass
class LossSection(LossWeights):
    """Loss weights and start iterations (the `LossWeights` fields, declared there once)
    plus the perceptual network.

    perceptual_scales: pyramid scales (official 1, .5, .25, .125; the smallest level must be
    >= 16 px). vgg_weights: local torchvision-format VGG19 file; random_vgg: allow random
    weights (smoke runs only). vgg_stage_channels: VGG widths (only the standard loads weights).
    Values are checked by `check` (ConfigError naming the key), not on construction.
    """

    perceptual_scales: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125)
    vgg_weights: str | None = None
    random_vgg: bool = False
    vgg_stage_channels: tuple[int, ...] = (64, 128, 256, 512, 512)
    equivariance: EquivarianceSection = field(default_factory=EquivarianceSection)

    def check(self, key: str = "loss") -> None:
        """Validate (and normalise) this section in place; ConfigError naming `key.field`."""
        if not isinstance(self.start_iters, Mapping):
            _fail(f"{key}.start_iters", "a mapping term -> iteration, e.g. {gan: 5001}", self.start_iters)
        try:
            self.weights()
        except ValueError as exc:
            raise ConfigError(f"config {key}: {exc}") from None
        if not isinstance(self.perceptual_scales, (list, tuple)) or not self.perceptual_scales:
            _fail(f"{key}.perceptual_scales", "a non-empty list of scales 1/n", self.perceptual_scales)
        self.perceptual_scales = tuple(_float(f"{key}.perceptual_scales", s, 1e-6, 1.0) for s in self.perceptual_scales)
        self.perceptual_layer_weights = tuple(self.perceptual_layer_weights)
        self.vgg_weights = _optional_path(f"{key}.vgg_weights", self.vgg_weights)
        self.random_vgg = _bool(f"{key}.random_vgg", self.random_vgg)
        if not isinstance(self.vgg_stage_channels, (list, tuple)) or len(self.vgg_stage_channels) != 5:
            _fail(f"{key}.vgg_stage_channels", "5 positive integers", self.vgg_stage_channels)
        self.vgg_stage_channels = tuple(_int(f"{key}.vgg_stage_channels", c, 1) for c in self.vgg_stage_channels)
        self.equivariance.check(f"{key}.equivariance")

    def __post_init__(self) -> None:
        """Construction takes the raw config values; `check` validates them."""

    def weights(self) -> LossWeights:
        """The validated `LossWeights` of this section."""
        return LossWeights.from_dict({f.name: getattr(self, f.name) for f in dataclasses.fields(LossWeights)})


@dataclass
class LogSection:
    """Console, TensorBoard and validation cadence (in iterations; 0 turns a thing off).

    Validation reconstructs the first `val_videos` test videos (0: all) from their first frame,
    over their first `val_frames` frames (0: all; at least 2, frame 0 being the source itself)."""

    print_every: int = 50
    progress: bool = True
    tensorboard: bool = True
    image_every: int = 1000
    val_every: int = 5000
    val_videos: int = 8
    val_frames: int = 32

    def check(self, key: str = "log") -> None:
        """Validate (and normalise) this section in place; ConfigError naming `key.field`."""
        for name in ("print_every", "image_every", "val_every", "val_videos", "val_frames"):
            setattr(self, name, _int(f"{key}.{name}", getattr(self, name), 0))
        if self.val_frames == 1:
            _fail(f"{key}.val_frames", "0 (all frames) or at least 2 (frame 0 is the source itself)", self.val_frames)
        self.progress = _bool(f"{key}.progress", self.progress)
        self.tensorboard = _bool(f"{key}.tensorboard", self.tensorboard)


@dataclass
class CheckpointSection:
    """Checkpoint every `every` iterations (and at the end); keep the last `keep_last`."""

    every: int = 5000
    keep_last: int = 3

    def check(self, key: str = "checkpoint") -> None:
        """Validate (and normalise) this section in place; ConfigError naming `key.field`."""
        self.every = _int(f"{key}.every", self.every, 0)
        self.keep_last = _int(f"{key}.keep_last", self.keep_last, 1)


_SECTIONS = {
    "model": ModelSection,
    "discriminator": DiscriminatorSection,
    "data": DataSection,
    "optim": OptimSection,
    "train": TrainSection,
    "loss": LossSection,
    "log": LogSection,
    "checkpoint": CheckpointSection,
}


@dataclass
class TrainConfig:
    """The whole training configuration (see the module docstring)."""

    name: str = "mcc"
    seed: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    discriminator: DiscriminatorSection = field(default_factory=DiscriminatorSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    loss: LossSection = field(default_factory=LossSection)
    log: LogSection = field(default_factory=LogSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)

    def check(self) -> "TrainConfig":
        """Validate and normalise every field in place; ConfigError naming the dotted key."""
        if not isinstance(self.name, str) or not self.name:
            _fail("name", "a non-empty string", self.name)
        self.seed = _int("seed", self.seed, 0)
        for section in _SECTIONS:
            getattr(self, section).check(section)
        self._check_jacobian_loss()
        return self

    def _check_jacobian_loss(self) -> None:
        """ConfigError when the jacobian equivariance term is on for a model predicting no jacobians
        (it failed at the first training step otherwise)."""
        weight = self.loss.equivariance_jacobian
        if weight > 0 and not self.model_config.motion.kp_estimate_jacobian:
            raise ConfigError("config loss.equivariance_jacobian: expected 0 with model.motion.kp_estimate_jacobian "
                              f"false (the keypoint detector predicts no jacobians), got {weight!r}")

    @property
    def model_config(self) -> ModelConfig:
        """The ModelConfig to train."""
        return self.model.build()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """Build and validate from nested mappings (unknown keys are a ConfigError)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"config: expected a mapping at the top level, got {type(data).__name__}")
        _check_keys("", data)
        top = {"name", "seed", *_SECTIONS}
        unknown = sorted(set(data) - top)
        if unknown:
            raise ConfigError(f"config: unknown top-level keys {unknown}; known: {sorted(top)}")
        kwargs: dict[str, Any] = {k: data[k] for k in ("name", "seed") if k in data}
        for section, klass in _SECTIONS.items():
            kwargs[section] = _section_from_dict(klass, data.get(section) or {}, section)
        return cls(**kwargs).check()

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists for tuples), YAML-serialisable; from_dict(to_dict()) == self."""
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        """The config as YAML text."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _section_from_dict(klass, values: Any, key: str):
    if not isinstance(values, Mapping):
        raise ConfigError(f"config {key}: expected a mapping, got {values!r}")
    _check_keys(key, values)
    names = {f.name for f in dataclasses.fields(klass)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"config {key}: unknown keys {unknown}; known: {sorted(names)}")
    values = dict(values)
    if klass is LossSection and "equivariance" in values:
        values["equivariance"] = _section_from_dict(EquivarianceSection, values["equivariance"] or {},
                                                    f"{key}.equivariance")
    return klass(**values)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---- loading and overrides -------------------------------------------------------------------

def yaml_error_line(exc: yaml.YAMLError) -> str:
    """A PyYAML error on one line: "line L, column C: <problem> (<context>)" (its own text is
    several lines, with the offending line quoted and a caret under it)."""
    problem = getattr(exc, "problem", None)
    if not problem:
        return " ".join(str(exc).split())
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context = getattr(exc, "context", None)
    return f"{where}{problem}" + (f" ({context})" if context else "")


#: Values (scalars, lists, mappings) a YAML document may expand to, its aliases followed: a config
#: holds a few hundred; 9 nested anchors of 9 aliases each expand to 387 million (messages that
#: print a bad value, or a comparison with a saved config, then never finish).
MAX_YAML_VALUES = 100_000


def _too_many_values(data: Any, limit: int = MAX_YAML_VALUES) -> bool:
    """Whether `data` (as safe_load built it) has more than `limit` values, shared lists and
    mappings (YAML aliases) counted each time they appear; stops counting at `limit`."""
    stack, count = [data], 0
    while stack:
        value = stack.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
    return False


def safe_yaml(text: str, what: str) -> Any:
    """yaml.safe_load of `text` (invalid YAML: its yaml.YAMLError); ConfigError naming `what` for
    nesting deeper than Python's recursion limit, or aliases expanding to more than MAX_YAML_VALUES
    values."""
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"{what}: its lists or mappings are nested too deeply to read") from None
    if _too_many_values(data):
        raise ConfigError(f"{what}: its aliases (*name) expand to more than {MAX_YAML_VALUES} values; "
                          "not a training config")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """"optim.lr=1e-4" -> (["optim", "lr"], 1e-4): the value is read as YAML (lists, bools, null)."""
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. optim.lr=1e-4")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(f"--set {text!r}: the key {key!r} has an empty part")
    try:
        value = safe_yaml(raw, f"--set {text!r}: the value") if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({yaml_error_line(exc)})") from None
    return path, value


def _override(item: str | tuple[str, Any]) -> tuple[list[str], Any, str]:
    """(key path, value, how to name it in errors) of a "key=value" text (value read as
    YAML) or of a ("key", value) pair (value used as it is: no YAML, e.g. a path)."""
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
        path = item[0].strip().split(".")
        if not all(path):
            raise ConfigError(f"config key {item[0]!r}: it has an empty part")
        return path, item[1], f"config key {item[0]!r}"
    path, value = parse_override(item)
    return path, value, f"--set {item!r}"


def apply_overrides(data: dict, overrides: Sequence[str | tuple[str, Any]]) -> dict:
    """Apply ``key.sub=value`` overrides to nested dict `data` (a copy is returned), in order.

    An override is a "key.sub=value" text (the value read as YAML) or a ("key.sub", value)
    pair (the value set as it is). The key must name a known field (checked when the result
    is validated); missing intermediate sections are created.
    """
    import copy

    data = copy.deepcopy(dict(data))
    for item in overrides:
        path, value, text = _override(item)
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{text}: {'.'.join(path[:i + 1])} is not a section")
            node = child
        if _names_a_section(path) and not isinstance(value, Mapping):
            raise ConfigError(f"{text}: {'.'.join(path)} is a section, expected a mapping of its fields, got "
                              f"{value!r} (set one field, e.g. {'.'.join(path)}.<field>=...)")
        node[path[-1]] = value
    return data


def _names_a_section(path: Sequence[str]) -> bool:
    """Whether the key path names a whole section (a section left empty in a YAML file reads
    as its defaults; an override of it to null or a number would silently do the same)."""
    return (len(path) == 1 and path[0] in _SECTIONS) or list(path) == ["loss", "equivariance"]


def load_config(path: str | os.PathLike | None = None,
                overrides: Sequence[str | tuple[str, Any]] = ()) -> TrainConfig:
    """Read a YAML config (a path, or a name of a shipped config: 'official', 'smoke', 'demo'),
    apply `overrides` ("key=value" strings, or ("key", value) pairs set without YAML parsing)
    and validate. None: the official defaults."""
    data: dict = {}
    if path is not None:
        file = Path(path)
        # A bare name of a shipped config wins over a folder of that name (e.g. a run folder
        # `smoke/` in the working directory); a local *file* of that name is read instead.
        if not file.is_file() and not file.suffix and (CONFIG_DIR / f"{path}.yaml").is_file():
            file = CONFIG_DIR / f"{path}.yaml"
        if not file.is_file():
            shipped = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
            raise FileNotFoundError(f"--config {os.fspath(path)!r}: no such file (shipped configs: {shipped})")
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"--config {str(file)!r}: not a text (UTF-8) YAML file: byte {exc.start} "
                              f"cannot be decoded") from None
        try:
            data = safe_yaml(text, f"--config {str(file)!r}")
        except yaml.YAMLError as exc:
            raise ConfigError(f"--config {str(file)!r}: not valid YAML ({yaml_error_line(exc)})") from None
        if data is None:  # (an empty file is more likely a mistake than a wish for the 82M-parameter defaults)
            raise ConfigError(f"--config {str(file)!r}: the file holds no settings; leave out --config for the "
                              "official defaults")
        if not isinstance(data, dict):
            raise ConfigError(f"--config {str(file)!r}: expected a mapping at the top level")
    return TrainConfig.from_dict(apply_overrides(data, overrides))
