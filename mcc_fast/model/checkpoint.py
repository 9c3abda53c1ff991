"""Checkpoints: our safetensors format, and the authors' released pair through a key converter.

Our format: one safetensors file of the Model's state dict (keys `motion_estimator.*` and
`generator.*`) with metadata {"format": "mcc_fast", "config": <ModelConfig JSON>}. Written
atomically (temporary file in the same folder, fsync, rename).

The authors' release: `net_g_latest.pth` ({"params", "params_ema"}: the generator; EMA
preferred) and `net_motion_estimator_latest.pth` ({"params"}), loaded with
`weights_only=True`. Their key names appear only in the converters' mapping tables
(`generator/keys.py`, `motion/keys.py`).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..io.atomic import atomic_write_bytes
from .config import ModelConfig
from .generator.keys import convert_generator_state_dict
from .motion.keys import convert_motion_estimator_state_dict

FORMAT = "mcc_fast"
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

def _torch_load(path: Path) -> Mapping:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or foreign?): {exc}") from None
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


def _find_official_pair(folder: Path) -> tuple[Path, Path]:
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


def convert_official_checkpoint(path_or_dicts: Any, config: ModelConfig | None = None) -> dict[str, torch.Tensor]:
    """The authors' checkpoint pair -> a state dict for `mcc_fast.Model(config)`.

    path_or_dicts: a folder holding net_g_latest.pth and net_motion_estimator_latest.pth;
    a (generator_path, motion_estimator_path) pair; or the two loaded dicts as a pair or as
    {"generator": ..., "motion_estimator": ...}. Generator `params_ema` is preferred over
    `params`; a `module.` prefix is stripped. Raises CheckpointError / KeyError naming the
    file and listing missing and unexpected keys.
    """
    config = ModelConfig() if config is None else config
    if isinstance(path_or_dicts, Mapping) and set(path_or_dicts) == {"generator", "motion_estimator"}:
        pair = (path_or_dicts["generator"], path_or_dicts["motion_estimator"])
    elif isinstance(path_or_dicts, (str, os.PathLike)):
        folder = Path(path_or_dicts)
        if not folder.is_dir():
            raise CheckpointError(f"{folder}: expected a folder holding {OFFICIAL_GENERATOR} and {OFFICIAL_MOTION}")
        pair = _find_official_pair(folder)
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
        raise CheckpointError(f"{me_src}: does not fit the motion estimator: {exc}") from None
    try:
        for name, tensor in convert_generator_state_dict(generator, config.generator).items():
            state[f"generator.{name}"] = tensor
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{gen_src}: does not fit the generator: {exc}") from None
    return state


# ---- our format ---------------------------------------------------------------------------------

#: Suffixes of other weight formats: save_model refuses them instead of making a folder so named.
FOREIGN_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar", ".npz", ".h5", ".onnx")


def _weights_file(path: Path) -> Path:
    return path if path.suffix == ".safetensors" else path / WEIGHTS_NAME


def _save_target(path: Path) -> Path:
    """The file save_model writes for `path`: a .safetensors path itself, else folder/model.safetensors.
    ValueError for another weight format's suffix or an existing file (we write safetensors)."""
    if path.suffix == ".safetensors":
        return path
    if path.suffix.lower() in FOREIGN_SUFFIXES or path.is_file():
        raise ValueError(f"path {str(path)!r}: save_pretrained writes safetensors; give a file ending in "
                         f".safetensors or a folder (it writes {WEIGHTS_NAME} inside)")
    return path / WEIGHTS_NAME


def save_model(model, path: str | Path, *, dtype: torch.dtype | str | None = None) -> Path:
    """Write `model` (weights + config) to `path` atomically; returns the file written.
    dtype: None (as they are), float32, float16 or bfloat16 (or their names) for floating weights."""
    from safetensors.torch import save

    from .. import __version__

    dtype = resolve_dtype(dtype, SAVE_DTYPES)
    target = _save_target(Path(path))
    tensors = {}
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[name] = t.contiguous()
    meta = {"format": FORMAT, "mcc_fast_version": __version__, "config": model.config.to_json()}
    atomic_write_bytes(target, save(tensors, metadata=meta))
    return target


def read_our_checkpoint(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(config, state dict) of one of our safetensors files; CheckpointError naming the file."""
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT or "config" not in meta:
                raise CheckpointError(f"{path}: a safetensors file, but not an mcc_fast model (no mcc_fast metadata)")
            config = ModelConfig.from_json(meta["config"])
            state = {k: f.get_tensor(k) for k in f.keys()}
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable mcc_fast checkpoint (truncated or foreign?): {exc}") from None
    return config, state


def load_model(cls, path: Any, config: ModelConfig | None = None):
    """Build `cls` (mcc_fast.Model) from our format or the authors' pair (see Model.from_pretrained)."""
    if isinstance(path, (str, os.PathLike)):
        p = Path(path)
        if p.is_file() and p.suffix == ".safetensors":
            return _model_from_ours(cls, p)
        if p.is_dir() and (p / WEIGHTS_NAME).is_file():
            return _model_from_ours(cls, p / WEIGHTS_NAME)
        if p.is_file():
            raise CheckpointError(f"{p}: expected an mcc_fast .safetensors file, a folder, or the authors' pair")
        if not p.exists():
            raise CheckpointError(f"checkpoint not found: {p}")
    state = convert_official_checkpoint(path, config)
    check_finite(state, path)
    model = cls(config or ModelConfig())
    model.load_state_dict(state, strict=True)
    return model


def check_finite(state: Mapping[str, torch.Tensor], source: Any) -> None:
    """CheckpointError naming `source` when a floating tensor of `state` holds NaN or Inf (a
    diverged training run would otherwise give black frames without a word)."""
    bad = [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise CheckpointError(f"{source}: {len(bad)} weight tensor(s) hold NaN or Inf ({shown}); "
                              "a diverged training run? Load an earlier checkpoint")


def _model_from_ours(cls, path: Path):
    config, state = read_our_checkpoint(path)
    check_finite(state, path)
    model = cls(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match its config: {exc}") from None
    return model


def metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of one of our checkpoints (format, version, config as a dict)."""
    config, _ = read_our_checkpoint(_weights_file(Path(path)))
    return {"format": FORMAT, "config": json.loads(config.to_json())}
