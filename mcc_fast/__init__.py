"""mcc_fast: fast MCC talking-head generation (multi-scale compensatory codebooks, CVPR 2025).

Public API: `mcc_fast.ops` (fused kernels with torch/triton/cuda backends),
`mcc_fast.backends()` (what can run here and why not).
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import ops
from ._dispatch import backends

__all__ = ["__version__", "backends", "ops"]
