"""Training checkpoints: weights in safetensors, the rest in a state file; atomic; last N kept.

One checkpoint is a folder ``<root>/step_XXXXXXXX/`` holding

* ``model.safetensors``: our inference format (motion estimator + the generator's EMA,
  with the ModelConfig), so ``Model.from_pretrained(<folder>)`` loads it directly;
* ``generator.safetensors``: the online (non-EMA) generator;
* ``discriminator.safetensors``: the PatchGAN discriminator;
* ``state.pt``: optimisers, schedulers, gradient scalers, step, data position, RNG states of
  every rank, the config, and the size and SHA-256 of the three weight files (a torch.save
  dict of plain types and tensors, read with ``weights_only=True``).

The folder is written under a temporary name (every file fsynced), then renamed into place,
so an interrupted write leaves the previous checkpoints untouched; unfinished temporary
folders are ignored and removed by the next save. Re-saving an existing step first renames
the old folder to a backup name; a failed swap puts it back, and the next save restores a
backup whose step folder is missing instead of deleting it. Loading checks the format tags,
sizes and hashes, and a truncated or foreign file is a `CheckpointError` naming that file.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from mcc_fast.io.atomic import write_chunks
from mcc_fast.io.safetensors_bytes import safetensors_chunks
from mcc_fast.model.checkpoint import (
    WEIGHTS_NAME,
    CheckpointError,
    check_finite,
    convert_official_checkpoint,
    find_official_pair,
    read_our_checkpoint,
    save_model,
    torch_load_error,
)
from mcc_fast.model.config import ModelConfig

__all__ = [
    "CheckpointError",
    "TRAINING_FORMAT",
    "STATE_NAME",
    "GENERATOR_NAME",
    "DISCRIMINATOR_NAME",
    "TrainingWeights",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "list_checkpoints",
    "latest_checkpoint",
    "prune_checkpoints",
    "checkpoint_step",
    "load_init_weights",
    "checkpoint_dir_name",
]

TRAINING_FORMAT = "mcc_fast.training"
STATE_FORMAT = "mcc_fast.training_state"
STATE_VERSION = 1
STATE_NAME = "state.pt"
GENERATOR_NAME = "generator.safetensors"
DISCRIMINATOR_NAME = "discriminator.safetensors"
_STEP_DIR = re.compile(r"^step_(\d{8,})$")
_TMP_PREFIX = ".tmp-step_"
_OLD_DIR = re.compile(r"^\.tmp-step_old-(\d{8,})-\d+$")


def checkpoint_dir_name(step: int) -> str:
    """Folder name of the checkpoint after `step` iterations."""
    return f"step_{step:08d}"


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step of a checkpoint folder named ``step_XXXXXXXX`` (None for any other name)."""
    m = _STEP_DIR.match(Path(path).name)
    return int(m.group(1)) if m else None


@dataclass
class TrainingWeights:
    """State dicts of the four trained networks (CPU tensors); discriminator may be None."""

    generator: dict[str, torch.Tensor]
    generator_ema: dict[str, torch.Tensor]
    motion_estimator: dict[str, torch.Tensor]
    discriminator: dict[str, torch.Tensor] | None


@dataclass
class Checkpoint:
    """A loaded checkpoint: its folder, model config, weights and state dict."""

    path: Path
    config: ModelConfig
    weights: TrainingWeights
    state: dict[str, Any]

    @property
    def step(self) -> int:
        """Iterations done when it was written."""
        return int(self.state["step"])


class _ModelView(nn.Module):
    """A Model-shaped view (same state-dict keys) over a motion estimator and a generator."""

    def __init__(self, config: ModelConfig, motion_estimator: nn.Module, generator: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.motion_estimator = motion_estimator
        self.generator = generator


# ---- low-level file helpers -------------------------------------------------------------------

def _write_file(path: Path, data) -> None:
    """Write `data` (bytes-like, or bytes-like chunks one after the other) to `path` and fsync it
    (inside a temporary checkpoint folder)."""
    with open(path, "wb") as f:
        write_chunks(f, data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _safetensors_chunks(state: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> tuple[bytes, memoryview]:
    return safetensors_chunks(_tensors(state), metadata)


def _read_safetensors(path: Path, part: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"checkpoint file missing: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or foreign?): {exc}") from None
    if meta.get("format") != TRAINING_FORMAT or meta.get("part") != part:
        raise CheckpointError(f"{path}: not an mcc_fast training {part} file "
                              f"(metadata format={meta.get('format')!r}, part={meta.get('part')!r})")
    return meta, tensors


# ---- saving -------------------------------------------------------------------------------------

def save_checkpoint(root: str | os.PathLike, step: int, *, config: ModelConfig, generator: nn.Module,
                    generator_ema: nn.Module, motion_estimator: nn.Module, discriminator: nn.Module,
                    state: dict[str, Any], discriminator_config: dict | None = None) -> Path:
    """Write the checkpoint of `step` under `root` atomically and return its folder.

    `state` holds everything but the weights (optimisers, schedulers, RNG, data position...);
    "format", "version", "step" and "files" are added here.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _clean_temporary(root)
    final = root / checkpoint_dir_name(step)
    tmp = root / f"{_TMP_PREFIX}{step:08d}-{os.getpid()}"
    tmp.mkdir()
    try:
        config_json = config.to_json()
        save_model(_ModelView(config, motion_estimator, generator_ema), tmp / WEIGHTS_NAME)
        _write_file(tmp / GENERATOR_NAME, _safetensors_chunks(
            generator.state_dict(), {"format": TRAINING_FORMAT, "part": "generator", "config": config_json}))
        _write_file(tmp / DISCRIMINATOR_NAME, _safetensors_chunks(
            discriminator.state_dict(), {"format": TRAINING_FORMAT, "part": "discriminator",
                                         "config": json.dumps(discriminator_config or {})}))
        files = {}
        for name in (WEIGHTS_NAME, GENERATOR_NAME, DISCRIMINATOR_NAME):
            p = tmp / name
            files[name] = {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        full_state = dict(state)
        full_state.update({"format": STATE_FORMAT, "version": STATE_VERSION, "step": int(step), "files": files})
        buffer = io.BytesIO()
        torch.save(full_state, buffer)
        _write_file(tmp / STATE_NAME, buffer.getvalue())
        _fsync_dir(tmp)
        if final.exists():  # re-saving a step (e.g. after a resume): swap atomically-ish
            _swap_in(tmp, final, root / f"{_TMP_PREFIX}old-{step:08d}-{os.getpid()}")
        else:
            os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _swap_in(tmp: Path, final: Path, old: Path) -> None:
    """Replace the folder `final` by `tmp`, keeping `final` as `old` until the swap is done;
    when the second rename fails, `old` is put back as `final` and the error re-raised."""
    os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _clean_temporary(root: Path) -> None:
    """Remove the temporary folders of interrupted saves under `root`, except a re-save's
    backup of a step whose folder is missing (its only copy): that one is renamed back."""
    for stale in sorted(root.glob(_TMP_PREFIX + "*")):
        m = _OLD_DIR.match(stale.name)
        final = root / checkpoint_dir_name(int(m.group(1))) if m else None
        if final is not None and not final.exists() and (stale / STATE_NAME).is_file():
            os.rename(stale, final)
        else:
            shutil.rmtree(stale, ignore_errors=True)


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Checkpoint folders under `root` (complete names only), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The newest checkpoint folder under `root` that has a state file, or None."""
    for path in reversed(list_checkpoints(root)):
        if (path / STATE_NAME).is_file():
            return path
    return None


def prune_checkpoints(root: str | os.PathLike, keep_last: int, newest_step: int | None = None) -> list[Path]:
    """Delete all but the newest `keep_last` checkpoints; returns the deleted folders.

    newest_step: the step just written. Its checkpoint is always kept (it counts towards
    `keep_last`), and checkpoints of later steps (another run's) are never deleted nor counted.
    """
    folders = list_checkpoints(root)
    if newest_step is not None:
        folders = [p for p in folders if checkpoint_step(p) < newest_step]
        keep_last -= 1  # the checkpoint of newest_step itself
    doomed = folders[:-keep_last] if keep_last > 0 else folders
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    return doomed


# ---- loading ------------------------------------------------------------------------------------

def _read_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file missing: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable training state file (truncated or foreign?): "
                              f"{torch_load_error(exc)}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not an mcc_fast training state file")
    if state.get("version") != STATE_VERSION:
        raise CheckpointError(f"{path}: training state version {state.get('version')!r}, expected {STATE_VERSION}")
    return state


def _verify_files(folder: Path, names: tuple[str, ...], hashes: bool = True) -> dict:
    """The folder's state file, after checking that each of `names` exists with the size (and,
    when `hashes`, the SHA-256) it records; CheckpointError naming the file otherwise."""
    state = _read_state(folder / STATE_NAME)
    files = state.get("files") or {}
    if not isinstance(files, dict):
        raise CheckpointError(f"{folder / STATE_NAME}: its record of the checkpoint's files is a "
                              f"{type(files).__name__}, expected a mapping")
    for name in names:
        p = folder / name
        if not p.is_file():
            raise CheckpointError(f"checkpoint file missing: {p}")
        expected = files.get(name)
        if expected is None:
            raise CheckpointError(f"{folder / STATE_NAME}: lists no {name}")
        if not (isinstance(expected, dict) and type(expected.get("bytes")) is int
                and isinstance(expected.get("sha256"), str)):
            raise CheckpointError(f"{folder / STATE_NAME}: its record of {name} is {expected!r:.80}, expected "
                                  "{'bytes': <int>, 'sha256': <hex>}")
        size = p.stat().st_size
        if size != expected["bytes"]:
            raise CheckpointError(f"{p}: {size} bytes, the state file recorded {expected['bytes']} (truncated?)")
        if hashes and _sha256(p) != expected["sha256"]:
            raise CheckpointError(f"{p}: content hash differs from the one recorded in {STATE_NAME} (corrupt?)")
    return state


def verify_recorded_files(folder: str | os.PathLike, names: tuple[str, ...] = (WEIGHTS_NAME,)) -> None:
    """Check files of a checkpoint folder against the sizes and SHA-256 its state file records
    (`Model.from_pretrained` of a step folder does); CheckpointError naming the file."""
    _verify_files(Path(folder), tuple(names))


def load_checkpoint(path: str | os.PathLike, verify: bool = True) -> Checkpoint:
    """Read a checkpoint folder written by `save_checkpoint` (CheckpointError naming the bad file).

    verify: check every weight file's size and SHA-256 against the state file.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    state = _verify_files(folder, (WEIGHTS_NAME, GENERATOR_NAME, DISCRIMINATOR_NAME), verify)
    config, model_state = read_our_checkpoint(folder / WEIGHTS_NAME)
    meta, generator = _read_safetensors(folder / GENERATOR_NAME, "generator")
    if ModelConfig.from_json(meta.get("config", "{}")) != config:
        raise CheckpointError(f"{folder / GENERATOR_NAME}: its model config differs from {WEIGHTS_NAME}'s")
    _, discriminator = _read_safetensors(folder / DISCRIMINATOR_NAME, "discriminator")
    weights = TrainingWeights(
        generator=generator,
        generator_ema=_strip(model_state, "generator."),
        motion_estimator=_strip(model_state, "motion_estimator."),
        discriminator=discriminator,
    )
    return Checkpoint(path=folder, config=config, weights=weights, state=state)


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _check_config(found: ModelConfig, expected: ModelConfig, source: Path | str) -> None:
    if found == expected:
        return
    diffs = found.differences(expected, "file", "config")
    raise CheckpointError(f"{source}: its model config differs from the training config's: {'; '.join(diffs[:6])}")


def load_init_weights(path: str | os.PathLike, config: ModelConfig) -> tuple[TrainingWeights, str]:
    """Starting weights for `--init-from` (fine-tuning) and a description of what was read.

    path: one of our training checkpoint folders (all four networks); our inference format
    (a .safetensors file or a folder holding model.safetensors: generator = EMA = its
    generator); or the authors' pair (a folder with net_g_latest.pth and
    net_motion_estimator_latest.pth, or "GEN.pth,MOTION.pth"): online generator from
    `params`, EMA from `params_ema`. The discriminator is None unless the folder is one of
    our training checkpoints. The model config must equal `config` (CheckpointError naming
    the file otherwise). Weights holding NaN or Inf are refused (a diverged run), as
    `Model.from_pretrained` does.
    """
    weights, description = _read_init_weights(path, config)
    for name in ("generator", "generator_ema", "motion_estimator", "discriminator"):
        state = getattr(weights, name)
        if state is not None:
            check_finite(state, f"--init-from {os.fspath(path)} ({name.replace('_', ' ')})")
    return weights, description


def _read_init_weights(path: str | os.PathLike, config: ModelConfig) -> tuple[TrainingWeights, str]:
    text = os.fspath(path)
    if "," in text and not Path(text).exists():
        pair = [Path(p.strip()) for p in text.split(",")]
        if len(pair) != 2:
            raise CheckpointError(f"--init-from {text!r}: expected GENERATOR.pth,MOTION_ESTIMATOR.pth")
        return _official_weights(pair[0], pair[1], config), f"the authors' checkpoint pair {pair[0]}, {pair[1]}"
    p = Path(text)
    if p.is_dir() and (p / STATE_NAME).is_file():
        ckpt = load_checkpoint(p)
        _check_config(ckpt.config, config, p / WEIGHTS_NAME)
        return ckpt.weights, f"training checkpoint {p} (step {ckpt.step})"
    ours = p if p.is_file() and p.suffix.lower() == ".safetensors" else p / WEIGHTS_NAME
    if ours.is_file():
        found, state = read_our_checkpoint(ours)
        _check_config(found, config, ours)
        generator = _strip(state, "generator.")
        return TrainingWeights(generator=generator, generator_ema={k: v.clone() for k, v in generator.items()},
                               motion_estimator=_strip(state, "motion_estimator."), discriminator=None), f"model {ours}"
    if p.is_dir():
        try:
            gen, motion = find_official_pair(p)
        except CheckpointError as exc:
            raise CheckpointError(f"--init-from {p}: no {WEIGHTS_NAME} or {STATE_NAME} in this folder, "
                                  f"and not the authors' checkpoint: {exc}") from None
        return _official_weights(gen, motion, config), f"the authors' checkpoint in {p}"
    if not p.exists():
        raise CheckpointError(f"--init-from {p}: no such file or folder")
    raise CheckpointError(f"--init-from {p}: expected an mcc_fast .safetensors file, a checkpoint folder, "
                          "or the authors' checkpoint pair")


def _official_weights(gen_path: Path, motion_path: Path, config: ModelConfig) -> TrainingWeights:
    loaded = []
    for p in (gen_path, motion_path):
        if not p.is_file():
            raise CheckpointError(f"checkpoint file not found: {p}")
        try:
            data = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{p}: not a readable PyTorch checkpoint (truncated or foreign?): "
                                  f"{torch_load_error(exc)}") from None
        if not isinstance(data, Mapping):
            raise CheckpointError(f"{p}: expected a dict, got {type(data).__name__}")
        loaded.append(data)
    gen_data, motion_data = loaded

    def convert(generator_dict: Mapping) -> dict[str, torch.Tensor]:
        # The converter reads params_ema before params: hand it exactly the one we want.
        return convert_official_checkpoint({"generator": generator_dict, "motion_estimator": motion_data}, config)

    try:
        ema_key = "params_ema" if "params_ema" in gen_data else "params"
        online_key = "params" if "params" in gen_data else ema_key
        if ema_key not in gen_data:
            ema_state = convert(gen_data)  # a bare state dict
            online_state = ema_state
        else:
            ema_state = convert({"params": gen_data[ema_key]})
            online_state = convert({"params": gen_data[online_key]}) if online_key != ema_key else ema_state
    except CheckpointError as exc:
        raise CheckpointError(f"{gen_path} / {motion_path}: {exc}") from None
    return TrainingWeights(
        generator=_strip(online_state, "generator."),
        generator_ema={k: v.clone() for k, v in _strip(ema_state, "generator.").items()},
        motion_estimator=_strip(ema_state, "motion_estimator."),
        discriminator=None,
    )
