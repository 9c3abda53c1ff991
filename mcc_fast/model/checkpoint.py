"""Checkpoints: our safetensors format, and the authors' released pair through a key converter.

Our format: one safetensors file of the Model's state dict (keys `motion_estimator.*` and
`generator.*`) with metadata {"format": "mcc_fast", "format_version": "1", "mcc_fast_version",
"config": <ModelConfig JSON>}. Written atomically (temporary file in the same folder, fsync,
rename).

The authors' release: `net_g_latest.pth` ({"params", "params_ema"}: the generator; EMA
preferred) and `net_motion_estimator_latest.pth` ({"params"}), loaded with
`weights_only=True`. Their key names appear only in the converters' mapping tables
(`generator/keys.py`, `motion/keys.py`).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ..io.atomic import atomic_write_bytes
from ..io.safetensors_bytes import safetensors_chunks
from .config import ModelConfig
from .generator.keys import convert_generator_state_dict
from .motion.keys import convert_motion_estimator_state_dict

FORMAT = "mcc_fast"
#: The layout version of our safetensors files; a file of a later version is refused by name.
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
OFFICIAL_GENERATOR = "net_g_latest.pth"
OFFICIAL_MOTION = "net_motion_estimator_latest.pth"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used (missing, truncated, foreign, mismatched)."""


# ---- dtypes -------------------------------------------------------------------------------------

DTYPE_NAMES = {
    "float32": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float64": torch.float64, "fp64": torch.float64, "double": torch.float64,
}
#: What save_pretrained writes (our format stores these only).
SAVE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: What from_pretrained casts to (float64 too, for precision checks of the reference path).
LOAD_DTYPES = SAVE_DTYPES + (torch.float64,)


def resolve_dtype(dtype, allowed: tuple[torch.dtype, ...], name: str = "dtype") -> torch.dtype | None:
    """None, a torch dtype or a name ("float32"/"fp32", "float16"/"fp16"/"half",
    "bfloat16"/"bf16", ...) -> a torch dtype in `allowed`; ValueError naming `name` otherwise."""
    if dtype is None:
        return None
    value = DTYPE_NAMES.get(dtype.lower()) if isinstance(dtype, str) else dtype
    if not isinstance(value, torch.dtype) or value not in allowed:
        names = sorted(k for k, v in DTYPE_NAMES.items() if v in allowed)
        expected = ", ".join(str(d) for d in allowed)
        raise ValueError(f"{name} must be one of {expected} (or a name: {', '.join(names)}), got {dtype!r}")
    return value


# ---- the authors' checkpoint ------------------------------------------------------------------

def torch_load_error(exc: BaseException) -> str:
    """One line on why torch.load(..., weights_only=True) failed. For a pickled object (which only
    unpickling, i.e. running code from the file, would load): that, naming it, instead of torch's
    several lines of advice to load the file with weights_only=False."""
    text = str(exc).strip()
    if "weights_only" in text or "Unsupported global" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (f"it holds a pickled object{what}, not only tensors; it is not loaded, since unpickling it "
                "would run code from the file")
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _torch_load(path: Path) -> Mapping:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or foreign?): "
                              f"{torch_load_error(exc)}") from None
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(data).__name__}")
    return data


def _find_one(folder: Path, name: str, pattern: str) -> Path:
    """folder/name, else the only file matching `pattern`; several matches: CheckpointError naming them."""
    path = folder / name
    if path.is_file():
        return path
    found = sorted(p for p in folder.glob(pattern) if p.is_file())
    if len(found) > 1:
        raise CheckpointError(f"{folder}: no {name}, and {len(found)} files match {pattern} "
                              f"({', '.join(p.name for p in found)}): pass the (generator, motion_estimator) "
                              "pair of paths to choose")
    return found[0] if found else path


def find_official_pair(folder: Path) -> tuple[Path, Path]:
    generator = _find_one(folder, OFFICIAL_GENERATOR, "net_g*.pth")
    motion = _find_one(folder, OFFICIAL_MOTION, "net_motion_estimator*.pth")
    missing = [p.name for p in (generator, motion) if not p.is_file()]
    if missing:
        raise CheckpointError(f"{folder}: no {' or '.join(missing)} here (expected the authors' "
                              f"{OFFICIAL_GENERATOR} and {OFFICIAL_MOTION}, or our {WEIGHTS_NAME})")
    return generator, motion


def _unwrap(data: Mapping, preferred: tuple[str, ...], source: str) -> Mapping:
    for key in preferred:
        if key in data and isinstance(data[key], Mapping):
            return data[key]
    if data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return data  # a bare state dict
    raise CheckpointError(f"{source}: no {' / '.join(preferred)} state dict inside (keys: {sorted(data)[:8]})")


def convert_official_checkpoint(path_or_dicts: Any, config: ModelConfig | None = None, *,
                                config_given: bool | None = None) -> dict[str, torch.Tensor]:
    """The authors' checkpoint pair -> a state dict for `mcc_fast.Model(config)`.

    path_or_dicts: a folder holding net_g_latest.pth and net_motion_estimator_latest.pth;
    a (generator_path, motion_estimator_path) pair; or the two loaded dicts as a pair or as
    {"generator": ..., "motion_estimator": ...}. Generator `params_ema` is preferred over
    `params`; a `module.` prefix is stripped. Raises CheckpointError / KeyError naming the
    file and listing missing and unexpected keys (and, when `config` was left out, that the
    authors' files store no config so the default one was assumed).
    """
    given = config is not None if config_given is None else config_given
    config = ModelConfig() if config is None else config
    hint = "" if given else (" (the authors' files store no model config: the default ModelConfig() was "
                             "assumed; pass config= for another one)")
    if isinstance(path_or_dicts, Mapping) and set(path_or_dicts) == {"generator", "motion_estimator"}:
        pair = (path_or_dicts["generator"], path_or_dicts["motion_estimator"])
    elif isinstance(path_or_dicts, (str, os.PathLike)):
        folder = Path(path_or_dicts)
        if not folder.is_dir():
            raise CheckpointError(f"{folder}: expected a folder holding {OFFICIAL_GENERATOR} and {OFFICIAL_MOTION}")
        pair = find_official_pair(folder)
    elif isinstance(path_or_dicts, (tuple, list)) and len(path_or_dicts) == 2:
        pair = tuple(path_or_dicts)
    else:
        raise TypeError("path_or_dicts must be a folder, a (generator, motion_estimator) pair of paths or "
                        f"dicts, or {{'generator': ..., 'motion_estimator': ...}}; got {type(path_or_dicts).__name__}")

    loaded = []
    for item, what in zip(pair, ("generator", "motion estimator")):
        if isinstance(item, Mapping):
            loaded.append((item, f"the {what} dict"))
        else:
            loaded.append((_torch_load(Path(item)), str(item)))
    (gen_data, gen_src), (me_data, me_src) = loaded
    generator = _unwrap(gen_data, ("params_ema", "params"), gen_src)
    motion = _unwrap(me_data, ("params",), me_src)
    state: dict[str, torch.Tensor] = {}
    try:
        for name, tensor in convert_motion_estimator_state_dict(motion, config.motion).items():
            state[f"motion_estimator.{name}"] = tensor
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{me_src}: does not fit the motion estimator: {exc}{hint}") from None
    try:
        for name, tensor in convert_generator_state_dict(generator, config.generator).items():
            state[f"generator.{name}"] = tensor
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{gen_src}: does not fit the generator: {exc}{hint}") from None
    return state


# ---- our format ---------------------------------------------------------------------------------

#: Suffixes of other weight formats: save_model refuses them instead of making a folder so named.
FOREIGN_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar", ".npz", ".h5", ".onnx")


def _is_safetensors(path: Path) -> bool:
    return path.suffix.lower() == ".safetensors"


def _weights_file(path: Path) -> Path:
    return path if _is_safetensors(path) else path / WEIGHTS_NAME


def _user_path(path: Any, name: str = "path") -> Path:
    """A non-empty str / PathLike as a Path (an empty string would mean the working folder)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}")
    if not os.fspath(path).strip():
        raise ValueError(f"{name} is empty: give a .safetensors file or a folder")
    return Path(path)


def _save_target(path: Path) -> Path:
    """The file save_model writes for `path`: a .safetensors path itself (any case), else
    folder/model.safetensors. ValueError for another weight format's suffix, an existing file
    of another kind or a folder named *.safetensors."""
    if _is_safetensors(path):
        if path.is_dir():
            raise ValueError(f"path {str(path)!r} is a folder: give a new .safetensors file name, "
                             f"or a folder without the suffix (it writes {WEIGHTS_NAME} inside)")
        return path
    if path.suffix.lower() in FOREIGN_SUFFIXES or path.is_file():
        raise ValueError(f"path {str(path)!r}: save_pretrained writes safetensors; give a file ending in "
                         f".safetensors or a folder (it writes {WEIGHTS_NAME} inside)")
    return path / WEIGHTS_NAME


def _cast_for_saving(name: str, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """t in `dtype`; ValueError naming the tensor when finite values overflow it (inf)."""
    out = t.to(dtype)
    if not bool(torch.isfinite(out).all()) and bool(torch.isfinite(t).all()):
        largest = float(t.abs().max())
        raise ValueError(f"{name}: values up to {largest:.4g} do not fit {dtype} (largest finite "
                         f"{torch.finfo(dtype).max:.4g}); save with dtype=torch.bfloat16 or float32")
    return out


def save_model(model, path: str | Path, *, dtype: torch.dtype | str | None = None) -> Path:
    """Write `model` (weights + config) to `path` atomically; returns the file written.
    dtype: None (as they are), float32, float16 or bfloat16 (or their names) for floating weights."""
    from .. import __version__

    dtype = resolve_dtype(dtype, SAVE_DTYPES)
    target = _save_target(_user_path(path))
    tensors = {}
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu()
        if dtype is not None and t.is_floating_point():
            t = _cast_for_saving(name, t, dtype)
        tensors[name] = t.contiguous()
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "mcc_fast_version": __version__,
            "config": model.config.to_json()}
    atomic_write_bytes(target, safetensors_chunks(tensors, meta))
    return target


def _read_meta(path: Path, meta: Mapping[str, str]) -> ModelConfig:
    """The config of a file's metadata; CheckpointError naming the file for a foreign file, a
    later format version, or a config this version cannot read (naming the writer's version)."""
    from .. import __version__

    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(f"{path}: a safetensors file, but not an mcc_fast model (no mcc_fast metadata)")
    writer = meta.get("mcc_fast_version", "an unknown version")
    try:
        version = int(meta.get("format_version", "1"))
    except ValueError:
        raise CheckpointError(f"{path}: unreadable format_version {meta.get('format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by mcc_fast {writer} in format version {version}; this mcc_fast "
                              f"{__version__} reads up to version {FORMAT_VERSION} (upgrade mcc_fast)")
    try:
        return ModelConfig.from_json(meta["config"])
    except Exception as exc:
        raise CheckpointError(f"{path}: its model config (written by mcc_fast {writer}) is not one this "
                              f"mcc_fast {__version__} knows: {exc}") from None


def read_our_checkpoint(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(config, state dict) of one of our safetensors files; CheckpointError naming the file."""
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            config = _read_meta(path, f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable mcc_fast checkpoint (truncated or foreign?): {exc}") from None
    return config, state


def load_model(cls, path: Any, config: ModelConfig | None = None):
    """Build `cls` (mcc_fast.Model) from our format or the authors' pair (see Model.from_pretrained).

    config: the authors' files store none (default ModelConfig()); our files carry theirs, and a
    different `config` is a CheckpointError."""
    if isinstance(path, (str, os.PathLike)):
        p = _user_path(path)
        ours = None
        if p.is_file() and _is_safetensors(p):
            ours = p
        elif p.is_dir() and (p / WEIGHTS_NAME).is_file():
            ours = p / WEIGHTS_NAME
            _verify_training_checkpoint(p)
        if ours is not None:
            return _model_from_ours(cls, ours, config)
        if p.is_file():
            raise CheckpointError(f"{p}: expected an mcc_fast .safetensors file, a folder, or the authors' pair")
        if not p.exists():
            raise CheckpointError(f"checkpoint not found: {p}")
        _refuse_run_folder(p)
    state = convert_official_checkpoint(path, config, config_given=config is not None)
    check_finite(state, path)
    model = _build(cls, config or ModelConfig())
    _check_kinds(model.state_dict(), state, path)
    model.load_state_dict(state, strict=True)
    return model


def _build(cls, config: ModelConfig):
    """`cls(config)` whose random initialisation (replaced by the loaded weights) leaves torch's
    global generator as it was: loading a model consumes none of a seeded script's randomness."""
    with torch.random.fork_rng(devices=[]):  # the model is built on the CPU
        return cls(config)


#: Torch calls that building a model may make per tensor of the file it is checked against (the
#: paper's model and the small ones make about 6) before the build is stopped.
_BUILD_CALLS_PER_TENSOR = 32


class _BuildTooLarge(Exception):
    pass


class _CallBudget(TorchFunctionMode):
    """Raises _BuildTooLarge at the torch call after `limit` (a config declaring 100000 layers);
    once only, so that the calls of the clean-up on the way out (grad mode restored) run."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.left = limit

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.left -= 1
        if self.left == -1:
            raise _BuildTooLarge
        return func(*args, **(kwargs or {}))


def _check_declared_tensors(cls, config: ModelConfig, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """CheckpointError naming `path` unless `state` holds exactly the tensors (names, shapes) that
    `cls(config)` has. Checked on the meta device (nothing allocated), with a bound on the work, before
    the real build: a file's config is read before its weights, and one declaring a far larger model
    than the file holds (a shared or corrupt file) would otherwise allocate it or build it for hours."""
    budget = _BUILD_CALLS_PER_TENSOR * len(state) + 1000
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"), _CallBudget(budget):
            expected = {k: tuple(v.shape) for k, v in cls(config).state_dict().items()}
    except _BuildTooLarge:
        raise CheckpointError(f"{path}: does not hold the model its config declares (the config describes a "
                              f"model far larger than the {len(state)} tensors stored)") from None
    except Exception as exc:  # sizes beyond int64 and the like
        raise CheckpointError(f"{path}: the model its config declares cannot be built: "
                              f"{type(exc).__name__}: {exc}") from None
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if missing or unexpected or wrong:
        def shown(names: list[str], describe) -> str:
            return ", ".join(describe(k) for k in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

        parts = []
        if missing:
            parts.append(f"{len(missing)} missing {shown(missing, str)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected {shown(unexpected, str)}")
        if wrong:
            parts.append(f"{len(wrong)} of another shape "
                         f"{shown(wrong, lambda k: f'{k}: {tuple(state[k].shape)}, expected {expected[k]}')}")
        raise CheckpointError(f"{path}: does not hold the tensors its config declares: {'; '.join(parts)}")


def _verify_training_checkpoint(folder: Path) -> None:
    """A training checkpoint folder (step_*: it holds a state file recording its files' sizes and
    hashes): check model.safetensors against the record (CheckpointError when it differs)."""
    from mcc_fast.training.checkpointing import STATE_NAME, verify_recorded_files

    if (folder / STATE_NAME).is_file():
        verify_recorded_files(folder, (WEIGHTS_NAME,))


def _refuse_run_folder(p: Path) -> None:
    """A training run folder (or its checkpoints/ folder) holds step_* checkpoints, not weights:
    CheckpointError naming the newest, so the user picks one on purpose."""
    root = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    steps = sorted(q for q in root.glob("step_*") if (q / WEIGHTS_NAME).is_file())
    if steps:
        raise CheckpointError(f"{p} is a training run folder: load one of its checkpoints, e.g. the newest "
                              f"{steps[-1]} (its generator EMA weights and motion estimator)")


def check_finite(state: Mapping[str, torch.Tensor], source: Any) -> None:
    """CheckpointError naming `source` when a floating tensor of `state` holds NaN or Inf (a
    diverged training run would otherwise give black frames without a word)."""
    bad = [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise CheckpointError(f"{source}: {len(bad)} weight tensor(s) hold NaN or Inf ({shown}); "
                              "a diverged training run? Load an earlier checkpoint")


def _check_kinds(model_state: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], source: Any) -> None:
    """CheckpointError naming the tensors stored as another kind than the model holds (an integer
    or bool tensor for a float weight would otherwise be cast without a word)."""
    def kind(t: torch.Tensor) -> str:
        if t.dtype == torch.bool:
            return "bool"
        return "float" if t.is_floating_point() else "complex" if t.is_complex() else "integer"

    bad = [k for k, t in state.items() if k in model_state and kind(t) != kind(model_state[k])]
    if bad:
        shown = ", ".join(f"{k} ({state[k].dtype}, expected {model_state[k].dtype})" for k in bad[:3])
        raise CheckpointError(f"{source}: {len(bad)} tensor(s) stored with the wrong kind of dtype: {shown}")


def _model_from_ours(cls, path: Path, expected: ModelConfig | None = None):
    config, state = read_our_checkpoint(path)
    if expected is not None and expected != config:
        diffs = config.differences(expected, "file", "given")
        shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
        raise CheckpointError(f"{path}: it holds its own model config, which differs from the config given "
                              f"(leave config out for our files): {shown}")
    check_finite(state, path)
    _check_declared_tensors(cls, config, state, path)
    model = _build(cls, config)
    _check_kinds(model.state_dict(), state, path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match its config: {exc}") from None
    return model


def metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of one of our checkpoints: format, format_version, mcc_fast_version (of the
    writer) and config (a dict)."""
    from safetensors import safe_open

    file = _weights_file(_user_path(path))
    config, _ = read_our_checkpoint(file)
    with safe_open(str(file), framework="pt") as f:
        meta = f.metadata() or {}
    return {"format": FORMAT, "format_version": int(meta.get("format_version", "1")),
            "mcc_fast_version": meta.get("mcc_fast_version"), "config": json.loads(config.to_json())}
