"""mcc_fast: fast MCC talking-head generation (multi-scale compensatory codebooks, CVPR 2025).

Public API:
- `mcc_fast.Model`, `mcc_fast.ModelConfig`: the model (`Model.from_pretrained(path)`).
- `mcc_fast.convert_official_checkpoint`: the authors' checkpoint pair -> our state dict.
- `mcc_fast.ops`: fused kernels with torch/triton/cuda backends.
- `mcc_fast.backends()`: what can run here, and why not.
"""
from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from . import ops
from ._dispatch import backends

if TYPE_CHECKING:  # type checkers see the lazy names' real types (through __getattr__ they are Any)
    from .model import CheckpointError, Model, ModelConfig, ModelOutput, convert_official_checkpoint  # noqa: F401

_LAZY = {
    "Model": "mcc_fast.model",
    "ModelConfig": "mcc_fast.model",
    "ModelOutput": "mcc_fast.model",
    "CheckpointError": "mcc_fast.model",
    "convert_official_checkpoint": "mcc_fast.model",
}


def __getattr__(name: str):
    # The model is imported on first use, so `import mcc_fast` stays light.
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mcc_fast' has no attribute {name!r}")


def __dir__() -> list[str]:
    # the lazy names too: tab completion, dir() and help(mcc_fast) list the model classes
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["__version__", "backends", "ops", *_LAZY]
