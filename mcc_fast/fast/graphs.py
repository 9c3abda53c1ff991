"""CUDA-graph capture of the fast per-frame step for a fixed batch size.

The reference path launches thousands of small kernels per frame; replaying one captured
graph removes the launch and Python overhead (eager custom-op dispatch alone costs 10-36 us
per call). `GraphedRenderer` captures `FastModel`'s per-frame step (optionally its
torch.compile'd form, see FastModel.compile: use a mode without its own CUDA graphs, e.g.
"max-autotune-no-cudagraphs") with static buffers:

* the source cache (copied in; `set_source` swaps sources without re-capturing);
* the driving input: keypoints (value (n, K, 2), jacobian (n, K, 2, 2)) with
  inputs="keypoints", or images (n, 3, S, S) with inputs="images" (keypoint detection is
  then inside the graph);
* the output frames (n, 3, S, S) in the model's dtype.

Each call copies the inputs into the static buffers, replays and returns the frames (a clone
by default: the static output is overwritten by the next replay). A batch smaller than the
captured one is padded with its last frame and the output sliced. Weight updates are
followed (FastModel's auto refresh rewrites the derived tensors in place, which the graph
reads); a re-allocation (e.g. a dtype change) bumps the fast model's generation and the
graph is captured again on the next call. The bound source was computed with the old
weights: after an update, calls raise until `set_source(fast.prepare_source(...))`.
"""
from __future__ import annotations

import torch

from ..model.motion.keypoint_detector import Keypoints
from .source_cache import SourceCache

INPUT_KINDS = ("keypoints", "images")


def _clone_cache(cache: SourceCache) -> SourceCache:
    kp = cache.keypoints
    return SourceCache(
        keypoints=Keypoints(kp.value.clone(), None if kp.jacobian is None else kp.jacobian.clone()),
        small_source=cache.small_source.clone(),
        features=tuple(f.clone(memory_format=torch.preserve_format) for f in cache.features),
        generation=cache.generation, owner=cache.owner, weights_version=cache.weights_version,
    )


class GraphedRenderer:
    """The per-frame step of `fast` for `batch` frames, captured in a CUDA graph (module docstring).

    fast: a FastModel on a CUDA device; cache: its SourceCache (batch 1 or `batch`);
    inputs: "keypoints" (render_frame(kp_driving=...)) or "images" (render_frame(driving)).
    """

    def __init__(self, fast, cache: SourceCache, batch: int, *, inputs: str = "keypoints", warmup: int = 3) -> None:
        if fast.device.type != "cuda":
            raise RuntimeError(f"CUDA graphs need the model on a CUDA device, it is on {fast.device}")
        if inputs not in INPUT_KINDS:
            raise ValueError(f"inputs must be one of {INPUT_KINDS}, got {inputs!r}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive int, got {batch!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"warmup must be a positive int (replays before capture), got {warmup!r}")
        fast._check_cache(cache)
        if cache.batch_size not in (1, batch):
            raise ValueError(f"cache has batch {cache.batch_size}; a graph for batch {batch} needs a cache "
                             f"of 1 or {batch}")
        self.fast, self.batch, self.inputs, self.warmup = fast, batch, inputs, int(warmup)
        self.source = _clone_cache(cache)
        cfg = fast.model.config
        k = cfg.motion.num_kp
        device = fast.device
        if inputs == "images":
            size = cfg.image_size
            self.images = torch.zeros(batch, cfg.generator.image_channels, size, size, device=device,
                                      dtype=next(fast.model.parameters()).dtype)
        else:
            self.kp_value = self.source.keypoints.value[:1].expand(batch, k, 2).clone()
            jac = self.source.keypoints.jacobian
            self.kp_jacobian = None if jac is None else jac[:1].expand(batch, k, 2, 2).clone()
        self.graph: torch.cuda.CUDAGraph | None = None
        self._capture()

    # ---- capture ---------------------------------------------------------------------------

    def _step(self) -> torch.Tensor:
        fast = self.fast
        if self.inputs == "images":
            kp = fast.renderer.detector(self.images)
        else:
            kp = Keypoints(self.kp_value, self.kp_jacobian)
        cache = self.source.expanded(self.batch)
        return fast._output(fast._step(cache.features, cache.small_source, cache.keypoints, kp))

    def _capture(self) -> None:
        fast = self.fast
        fast._sync()
        self.generation = fast.generation
        side = torch.cuda.Stream(device=fast.device)
        side.wait_stream(torch.cuda.current_stream(fast.device))
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(max(1, self.warmup)):  # compiles kernels, settles allocations
                self._step()
        torch.cuda.current_stream(fast.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph):
            self.output = self._step()

    # ---- use -------------------------------------------------------------------------------

    def set_source(self, cache: SourceCache) -> None:
        """Use another source (same batch and shapes) without re-capturing: copies into the static cache."""
        self.fast._check_cache(cache)
        if cache.batch_size != self.source.batch_size:
            raise ValueError(f"cache has batch {cache.batch_size}, the graph was captured with "
                             f"{self.source.batch_size}")
        with torch.no_grad():
            mine, theirs = self.source.keypoints, cache.keypoints
            mine.value.copy_(theirs.value)
            if mine.jacobian is not None:
                mine.jacobian.copy_(theirs.jacobian)
            self.source.small_source.copy_(cache.small_source)
            for dst, src in zip(self.source.features, cache.features):
                dst.copy_(src)
        self.source.weights_version = cache.weights_version

    @staticmethod
    def _fill(static: torch.Tensor, values: torch.Tensor) -> None:
        n = values.shape[0]
        static[:n].copy_(values)
        if n < static.shape[0]:
            static[n:].copy_(values[n - 1:n].expand(static.shape[0] - n, *values.shape[1:]))

    def render_frame(self, driving: torch.Tensor | None = None, *, kp_driving: Keypoints | None = None,
                     clone: bool = True) -> torch.Tensor:
        """Frames (n, 3, S, S) for n <= batch driving frames: images with inputs="images",
        kp_driving (Keypoints of batch n) with inputs="keypoints". clone=False returns a view
        of the static output (valid until the next call)."""
        fast = self.fast
        if self.inputs == "images":
            if driving is None or kp_driving is not None:
                raise ValueError("this graph takes driving images: render_frame(driving)")
            fast._check_images(driving, "driving")
            n = driving.shape[0]
        else:
            if kp_driving is None or driving is not None:
                raise ValueError("this graph takes keypoints: render_frame(kp_driving=...)")
            kp_driving = fast._check_keypoints(kp_driving, self.source)
            n = kp_driving.value.shape[0]
        if not 1 <= n <= self.batch:
            raise ValueError(f"got {n} driving frames; this graph renders 1 to {self.batch} per call")
        fast._sync()
        if self.source.weights_version != fast.weights_version:
            raise ValueError("the model's weights changed since this graph's source was prepared: "
                             "call graphed.set_source(fast.prepare_source(source)) first")
        if fast.generation != self.generation:
            self._capture()
        with torch.no_grad():
            if self.inputs == "images":
                self._fill(self.images, driving.to(self.images.dtype))
            else:
                self._fill(self.kp_value, kp_driving.value)
                if self.kp_jacobian is not None:
                    self._fill(self.kp_jacobian, kp_driving.jacobian)
            self.graph.replay()
        out = self.output[:n]
        return out.clone() if clone else out

    __call__ = render_frame
