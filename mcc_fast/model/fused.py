"""Whether the model's geometry and vector quantisation run on mcc_fast.ops (the fused kernels,
with autograd) instead of the op-for-op reference: `Model.use_fused_ops()`.

Fused, the generator warps with `ops.warp` (flow resize + sample + occlusion in one kernel;
the official's unused detached warp is skipped), every codebook search is `ops.quantize`
(exact re-ranking of near-ties instead of the official expanded formula), and the dense
motion network builds its hourglass input, heatmaps and flow with `ops.dense_motion_input`,
`ops.keypoint_heatmaps` and `ops.compose_flow`. Values and gradients match the reference
within float tolerance (near-tie code choices may differ); this is what training runs on a
GPU. The reference stays the default, and the parity path.
"""
from __future__ import annotations

from dataclasses import dataclass

from .._dispatch import BACKENDS


@dataclass(frozen=True)
class FusedOps:
    """backend: the mcc_fast.ops backend (None: the fastest available for the inputs' device)."""

    backend: str | None = None

    def __post_init__(self) -> None:
        if self.backend is not None and self.backend not in BACKENDS:
            raise ValueError(f"backend must be None or one of {BACKENDS}, got {self.backend!r}")
