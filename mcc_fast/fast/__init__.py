"""The fast inference path: the same model and weights, computed differently (see SPEC.md,
"Where the kernels go, and where the speed really is").

- `FastModel(model, dtype=...)` (or `Model.fast()`): `prepare_source(source)` -> SourceCache
  once per source, then `render_frame(cache, driving | kp_driving=...)` per frame batch.
- `SourceCache`: source keypoints, downsampled source, per-scale encoder features.
- `GraphedRenderer` (`FastModel.cuda_graph(...)`): the per-frame step in a CUDA graph.
- `FastOptions`: compute dtype, channels-last, attention head padding, ops backend.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .attention import keep_mask
from .model import FastModel, default_options
from .renderer import FastFrame
from .runtime import FastOptions
from .source_cache import SourceCache

if TYPE_CHECKING:
    from .graphs import GraphedRenderer

__all__ = ["FastFrame", "FastModel", "FastOptions", "SourceCache", "default_options", "keep_mask",
           "GraphedRenderer"]


def __getattr__(name: str):
    if name == "GraphedRenderer":
        from .graphs import GraphedRenderer

        return GraphedRenderer
    raise AttributeError(f"module 'mcc_fast.fast' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"GraphedRenderer"})
