"""The official-model parity fixture (tests/data, copied from ../shared/golden).

Regenerates the fixture's weights from its published numpy rule (GOLDEN_README.md beside
the data), checks them against the recorded checksums, and loads the recorded tensors.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).parent / "data"
FIXTURE_JSON = DATA / "official_parity.json"
FIXTURE_TENSORS = DATA / "official_parity.safetensors"


@functools.lru_cache(maxsize=1)
def fixture_meta() -> dict:
    """The fixture's JSON: config, weight list with checksums, tensor index, tolerance."""
    return json.loads(FIXTURE_JSON.read_text())


def _gaussian_kernel(sigma: float, size: int, channels: int) -> np.ndarray:
    t = np.arange(size, dtype=np.float64)
    g = np.exp(-((t - (size - 1) / 2) ** 2) / (2 * sigma**2))
    k = np.outer(g, g)
    k = k / k.sum()
    return np.broadcast_to(k, (channels, 1, size, size)).copy()


def _value_for(entry: dict, rng: np.random.Generator, special: dict | None) -> np.ndarray:
    name, shape = entry["name"], tuple(entry["shape"])
    if entry["dtype"].startswith("int"):
        return np.zeros(shape, dtype=np.int64)
    if name.endswith("running_mean"):
        z = rng.standard_normal(shape)
        value = 0.1 * z
    elif name.endswith("running_var"):
        z = rng.random(shape)
        value = 1 + 0.5 * z
    elif len(shape) == 1 and name.endswith(".weight"):
        z = rng.standard_normal(shape)
        value = 1 + 0.1 * z
    elif len(shape) == 1:
        z = rng.standard_normal(shape)
        value = 0.1 * z
    else:
        z = rng.standard_normal(shape)
        value = z / math.sqrt(float(np.prod(shape[1:])))
    if special is not None:
        kind = special["kind"]
        if kind == "scaled_normal":
            value = special["scale"] * z
        elif kind == "tiled_plus_normal":
            value = np.tile(np.asarray(special["base"], np.float64), special["repeat"]) + special["scale"] * z
        elif kind == "gaussian_kernel":
            value = _gaussian_kernel(special["sigma"], special["size"], special["channels"])
        else:  # pragma: no cover - the fixture lists only these kinds
            raise ValueError(f"unknown special case {kind!r} for {name}")
    return np.asarray(value, dtype=np.float64).astype(np.float32)


@functools.lru_cache(maxsize=1)
def official_state_dicts() -> tuple[dict, dict]:
    """(motion_estimator, generator) state dicts keyed by the official names, float32 tensors.

    Built from the fixture's seeded rule and verified against its per-key checksums.
    """
    meta = fixture_meta()
    rng = np.random.default_rng(meta["seed"])
    specials = {(s["network"], s["key"]): s for s in meta["special_cases"]}
    out = {"motion_estimator": {}, "generator": {}}
    for entry in meta["weights"]:
        value = _value_for(entry, rng, specials.get((entry["network"], entry["name"])))
        total = float(value.astype(np.float64).sum())
        sumsq = float((value.astype(np.float64) ** 2).sum())
        scale = max(abs(entry["sum"]), math.sqrt(entry["sumsq"]), 1e-30)
        if abs(total - entry["sum"]) > 1e-6 * scale or abs(sumsq - entry["sumsq"]) > 1e-6 * max(entry["sumsq"], 1e-30):
            raise AssertionError(f"weight checksum mismatch for {entry['network']}:{entry['name']}")
        out[entry["network"]][entry["name"]] = torch.from_numpy(value)
    return out["motion_estimator"], out["generator"]


@functools.lru_cache(maxsize=1)
def recorded() -> dict[str, torch.Tensor]:
    """Every tensor in the fixture (inputs float16, outputs as recorded)."""
    from safetensors.torch import load_file

    return load_file(str(FIXTURE_TENSORS))


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """(source, driving), (2, 3, 256, 256) float32: the exact upcast of the stored float16."""
    t = recorded()
    return t["input.source"].float(), t["input.driving"].float()


def tolerance(reference: torch.Tensor) -> float:
    """The fixture's bound: 1e-4 * max(1, max|reference|)."""
    return 1e-4 * max(1.0, float(reference.abs().max()))


def assert_close_to_recorded(name: str, ours: torch.Tensor) -> None:
    """Assert `ours` matches the recorded tensor `name` within the fixture's tolerance."""
    ref = recorded()[name].float()
    assert tuple(ours.shape) == tuple(ref.shape), f"{name}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    diff = float((ours.detach().float().cpu() - ref).abs().max())
    assert diff <= tolerance(ref), f"{name}: max abs diff {diff:.3e} > {tolerance(ref):.3e}"
