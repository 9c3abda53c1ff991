"""Everything that depends only on the source image, computed once per source (video mode).

`SourceCache` holds the source's keypoints and jacobians, its downsampled copy (the dense
motion network's sampling input) and the generator's per-scale encoder features. A cache of
batch 1 serves driving batches of any size (expanded, never copied); a cache of batch B
serves driving batches of B (one source per sample). A cache holds values computed with the
weights of its time: after a weight update FastModel refuses it (prepare it again), and it
serves only the FastModel that made it (features in that one's dtype and layout).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.generator.outputs import SourceFeatures
from ..model.motion.keypoint_detector import Keypoints
from ..model.summary import summary_repr


@dataclass
class SourceCache:
    """Source-only work of the fast path.

    keypoints: the source's Keypoints, value (B, K, 2) float32, jacobian (B, K, 2, 2) float32
        or None.
    small_source: (B, C, h, w) float32, the source downsampled for dense motion (h = flow size).
    features: per-scale encoder features, coarse first: (B, C_k, T 2**k, T 2**k) in the fast
        path's compute dtype and memory format.
    generation: the fast model's weight generation when built (see Runtime.generation).
    owner: the id of the fast model's Runtime that built it (0: unknown).
    weights_version: that Runtime's weights_version when built (stale once it moved on).
    """

    __repr__ = summary_repr

    keypoints: Keypoints
    small_source: torch.Tensor
    features: tuple[torch.Tensor, ...]
    generation: int = 0
    owner: int = 0
    weights_version: int = 0

    @property
    def batch_size(self) -> int:
        """B, the number of sources."""
        return self.small_source.shape[0]

    @property
    def device(self) -> torch.device:
        """Where the cached tensors live."""
        return self.small_source.device

    def source_features(self) -> SourceFeatures:
        """The features as the reference generator's SourceFeatures (e.g. for Generator.render)."""
        return SourceFeatures(per_scale=tuple(self.features))

    def expanded(self, batch: int) -> "SourceCache":
        """This cache for a driving batch of `batch`: a batch-1 cache is expanded (views)."""
        if batch == self.batch_size:
            return self
        if self.batch_size != 1:
            raise ValueError(f"driving batch {batch} does not match the source cache's batch {self.batch_size} "
                             "(a cache serves its own batch size, or any batch when built from one source)")
        kp = self.keypoints
        return SourceCache(
            keypoints=Keypoints(kp.value.expand(batch, -1, -1),
                                None if kp.jacobian is None else kp.jacobian.expand(batch, -1, -1, -1)),
            small_source=self.small_source.expand(batch, -1, -1, -1),
            features=tuple(f.expand(batch, -1, -1, -1) for f in self.features),
            generation=self.generation, owner=self.owner, weights_version=self.weights_version,
        )
