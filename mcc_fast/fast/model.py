"""`FastModel`: the fast inference path over a reference `Model`'s weights.

Video use (one source, many driving frames):

    fast = model.fast()                       # or FastModel(model, dtype=torch.bfloat16)
    cache = fast.prepare_source(source)       # (1, 3, S, S): keypoints, features, ... once
    for driving in batches:                   # (n, 3, S, S)
        frames = fast.render_frame(cache, driving)                  # absolute motion
        # or: kp = fast.keypoints(driving); ...relative motion...; fast.render_frame(cache, kp_driving=kp)

Same frames as the reference path (fp32: within 1e-3 on the parity fixture) computed with
source caching, fused ops, SDPA attention, channels-last convolutions and merged / folded
weights; see mcc_fast/fast/*.py. Inference only: everything runs under torch.no_grad with
eval semantics (BatchNorm running statistics) whatever `model.training` is.

The fast path reads the model's parameters through derived tensors that follow weight
updates: with `auto_refresh` (default) every call checks the parameters' objects, versions
and storage (a few hundred attribute reads) and recomputes the derived tensors when they
changed (also after `load_state_dict(assign=True)` or assigning new Parameters); `refresh()`
does it explicitly. Edits through `.data` (`p.data.mul_(...)`, `p.data.copy_(...)`: that
tensor has its own version counter) and in-place edits of inference tensors are invisible to
the check: call `refresh()` after them. A SourceCache prepared before a weight update is
refused (ValueError: call prepare_source again), as is one made by another FastModel.

Inputs: `fast(source, driving)` follows `model(source, driving)`'s rule (one batch size, the
model's dtype; see mcc_fast.model.model.check_pair); `prepare_source`, `keypoints` and
`render_frame` take any floating dtype (cast to the compute dtype) and a batch-1 cache
serves any driving batch (video mode).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..model.generator.outputs import check_image, read_dense_motion
from ..model.model import Model, check_pair
from ..model.motion.keypoint_detector import Keypoints
from .codec import FastEncoder
from .renderer import FastFrame, FastRenderer
from .runtime import FastOptions, Runtime
from .source_cache import SourceCache

if TYPE_CHECKING:
    from .graphs import GraphedRenderer


def default_options(model: Model, dtype: torch.dtype | None = None, channels_last: bool = True,
                    pad_head_dim: int | None = None, backend: str | None = None) -> FastOptions:
    """Options for `model`: dtype defaults to the model's parameter dtype; attention heads
    narrower than 8 (CUDA: the fused kernels' minimum) or 16 (CPU: the flash kernel's vector
    width; 1.5x faster for the 4-wide motion heads) are zero-padded to that width."""
    param = next(model.parameters())
    if dtype is None:
        dtype = param.dtype
    if pad_head_dim is None:
        cfg = model.config.generator
        narrowest = min(cfg.motion_dim, cfg.appearance_dim) // cfg.num_heads
        width = 8 if param.device.type == "cuda" else 16
        pad_head_dim = width if narrowest < width else None
    return FastOptions(dtype=dtype, channels_last=channels_last, pad_head_dim=pad_head_dim, backend=backend)


class FastModel:
    """The fast path of `model` (module docstring).

    model: the reference Model (its weights are read, never copied unless a cast, fold or merge
    needs to); dtype: compute dtype (float32, bfloat16, float16; default the model's);
    channels_last: NHWC feature maps (default True); pad_head_dim: zero-pad narrower attention
    heads to this width (default: 8 on CUDA, 16 on CPU, for the 4-wide motion heads); backend: the
    mcc_fast.ops backend (None: auto); auto_refresh: follow weight updates automatically.
    """

    def __init__(self, model: Model, *, dtype: torch.dtype | None = None, channels_last: bool = True,
                 pad_head_dim: int | None = None, backend: str | None = None, auto_refresh: bool = True) -> None:
        if not isinstance(model, Model):
            raise TypeError(f"model must be an mcc_fast.Model, got {type(model).__name__}")
        self.model = model
        self.options = default_options(model, dtype, channels_last, pad_head_dim, backend)
        self.auto_refresh = bool(auto_refresh)
        self.runtime = Runtime(model, self.options)
        with torch.no_grad():
            self.renderer = FastRenderer(self.runtime, model)
            self.encoder = FastEncoder(self.runtime, model.generator.encoder)
        self._step = self.renderer

    def __reduce__(self):
        # Derived tensors are recomputed from a model, never stored: a FastModel pickles (and
        # deep-copies, e.g. with its Model) as None; Model.fast() builds a new one on demand.
        return (type(None), ())

    # ---- weights -------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """Bumped whenever a derived tensor had to be re-allocated (CUDA graphs re-capture)."""
        return self.runtime.generation

    @property
    def weights_version(self) -> int:
        """Bumped at every refresh (weights changed): SourceCaches of an older version are stale."""
        return self.runtime.weights_version

    def is_current(self, cache: SourceCache) -> bool:
        """True when `cache` was made by this FastModel from the model's current weights."""
        self._sync()
        return (isinstance(cache, SourceCache) and cache.owner == self.runtime.id
                and cache.weights_version == self.weights_version)

    def refresh(self) -> None:
        """Recompute every derived tensor from the model's current parameters."""
        self.runtime.refresh()

    def _sync(self) -> None:
        if self.auto_refresh:
            self.runtime.refresh_if_stale()

    @property
    def device(self) -> torch.device:
        """The model's device."""
        return self.runtime.device

    # ---- source-only work ------------------------------------------------------------------

    @torch.no_grad()
    def prepare_source(self, source: torch.Tensor) -> SourceCache:
        """Source images (B, 3, S, S) float in [-1, 1] on the model's device -> SourceCache.

        Computes the source keypoints/jacobians, the dense-motion input's downsampled source
        and the generator's per-scale encoder features, once. A batch-1 cache serves any
        driving batch size. The cache shares no memory with `source` (refilling the caller's
        buffer with the next source leaves it unchanged).
        """
        self._check_images(source, "source")
        self._sync()
        model = self.model
        keypoints = self.renderer.detector(source)
        downsample = model.motion_estimator.dense_motion_net.downsample
        if downsample is None:  # a copy: the cache must not follow later edits of the caller's tensor
            small = source.to(torch.float32, copy=True)
        else:
            small = downsample(source.to(downsample.kernel.dtype)).float()
        features = tuple(self.encoder(source))
        return SourceCache(keypoints=keypoints, small_source=small, features=features,
                           generation=self.generation, owner=self.runtime.id, weights_version=self.weights_version)

    # ---- per-frame work --------------------------------------------------------------------

    @torch.no_grad()
    def keypoints(self, images: torch.Tensor) -> Keypoints:
        """Keypoints of driving images (n, 3, S, S): value (n, K, 2), jacobian (n, K, 2, 2), float32."""
        self._check_images(images, "images")
        self._sync()
        return self.renderer.detector(images)

    @torch.no_grad()
    def render_frame(self, cache: SourceCache, driving: torch.Tensor | None = None, *,
                     kp_driving: Keypoints | None = None, return_all: bool = False) -> torch.Tensor | FastFrame:
        """Frames for one batch of driving frames: (n, 3, S, S) in the model's dtype, contiguous.

        cache: from this FastModel's `prepare_source` with the current weights (batch 1, or
        batch n; a stale or foreign cache is a ValueError). Give either `driving` images
        (n, 3, S, S) (absolute motion: their keypoints drive the source) or `kp_driving`
        (Keypoints of batch n, e.g. relative keypoints; float32 is used). `return_all`: a
        FastFrame with the per-scale flows, occlusions and token masks as well.
        """
        if (driving is None) == (kp_driving is None):
            raise ValueError("render_frame: give exactly one of driving (images) or kp_driving (Keypoints)")
        self._check_cache(cache)
        if driving is not None:
            self._check_images(driving, "driving")
            kp_driving = self.renderer.detector(driving)
        kp_driving = self._check_keypoints(kp_driving, cache)
        cache = cache.expanded(kp_driving.value.shape[0])
        out = self._step(cache.features, cache.small_source, cache.keypoints, kp_driving, return_all=return_all)
        if return_all:
            out.frame = self._output(out.frame)
            return out
        return self._output(out)

    @torch.no_grad()
    def render(self, cache: SourceCache, dm: Any, *, return_all: bool = False) -> torch.Tensor | FastFrame:
        """The generator part alone from a dense motion `dm` (a MotionEstimate or the official
        dict: 'deformation', 'occlusion_map', 'driving_kp_heatmap'), like Generator.render."""
        self._check_cache(cache)
        motion = read_dense_motion(dm, self.model.config.generator, cache.batch_size
                                   if cache.batch_size != 1 else _batch_of(dm))
        cache = cache.expanded(motion.deformation.shape[0])
        out = self.renderer.generate(cache.features, motion.deformation, motion.occlusion, motion.heatmaps,
                                     return_all=return_all)
        if return_all:
            out.frame = self._output(out.frame)
            return out
        return self._output(out)

    @torch.no_grad()
    def __call__(self, source: torch.Tensor, driving: torch.Tensor) -> torch.Tensor:
        """model(source, driving) through the fast path (pairs, absolute motion; no cache kept):
        same batch and the model's dtype, like the reference (check_pair)."""
        check_pair(source, driving, next(self.model.parameters()).dtype)
        self._check_images(driving, "driving")
        return self.render_frame(self.prepare_source(source), driving)

    # ---- CUDA graphs and torch.compile ---------------------------------------------------------

    def compile(self, **compile_kwargs: Any) -> "FastModel":
        """torch.compile the per-frame step (render_frame and CUDA-graph captures use it).

        compile_kwargs go to torch.compile (e.g. mode="max-autotune-no-cudagraphs",
        backend="inductor"). Returns self.
        """
        self._step = torch.compile(self.renderer, **compile_kwargs)
        return self

    def cuda_graph(self, cache: SourceCache, batch: int, *, inputs: str = "keypoints",
                   warmup: int = 3) -> GraphedRenderer:
        """A GraphedRenderer (graphs.py): the per-frame step for `batch` frames captured in a
        CUDA graph with static buffers, bound to `cache` (replaceable with set_source)."""
        from .graphs import GraphedRenderer

        return GraphedRenderer(self, cache, batch, inputs=inputs, warmup=warmup)

    # ---- checks and conversions ----------------------------------------------------------------

    def _output(self, frame: torch.Tensor) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        return frame.to(dtype=dtype, memory_format=torch.contiguous_format)

    def _check_images(self, images: torch.Tensor, name: str) -> None:
        check_image(images, name, self.model.config.generator)
        if images.device != self.device:
            raise ValueError(f"{name} is on {images.device} but the model is on {self.device}")

    def _check_cache(self, cache: SourceCache) -> None:
        """Refresh the weights if needed, then refuse a cache that is foreign, stale or elsewhere."""
        if not isinstance(cache, SourceCache):
            raise TypeError(f"cache must be a SourceCache from prepare_source, got {type(cache).__name__}")
        self._sync()
        if cache.owner != self.runtime.id:
            raise ValueError("cache was not made by this FastModel (another model, or other fast-path "
                             "options): make it with this one's prepare_source(source)")
        if cache.weights_version != self.weights_version:
            raise ValueError("cache is stale: the model's weights changed since prepare_source; "
                             "call prepare_source(source) again")
        if cache.device != self.device:
            raise ValueError(f"cache is on {cache.device} but the model is on {self.device}; prepare it again")

    def _check_keypoints(self, kp: Keypoints, cache: SourceCache) -> Keypoints:
        if not isinstance(kp, Keypoints):
            raise TypeError(f"kp_driving must be a Keypoints, got {type(kp).__name__}")
        k = self.model.config.motion.num_kp
        value = kp.value
        if not isinstance(value, torch.Tensor) or not (kp.jacobian is None or isinstance(kp.jacobian, torch.Tensor)):
            raise TypeError(f"kp_driving.value must be a tensor and kp_driving.jacobian a tensor or None, got "
                            f"{type(value).__name__} and {type(kp.jacobian).__name__}")
        if value.dim() != 3 or tuple(value.shape[1:]) != (k, 2):
            raise ValueError(f"kp_driving.value must have shape (n, {k}, 2), got {tuple(value.shape)}")
        if (kp.jacobian is None) != (cache.keypoints.jacobian is None):
            raise ValueError("kp_driving.jacobian must be given exactly when the model estimates jacobians")
        if kp.jacobian is not None and tuple(kp.jacobian.shape) != (value.shape[0], k, 2, 2):
            raise ValueError(f"kp_driving.jacobian must have shape ({value.shape[0]}, {k}, 2, 2), "
                             f"got {tuple(kp.jacobian.shape)}")
        for name, tensor in (("value", value), ("jacobian", kp.jacobian)):
            if tensor is not None and not tensor.is_floating_point():
                raise TypeError(f"kp_driving.{name} must be a floating-point tensor (coordinates in [-1, 1]), "
                                f"got {tensor.dtype}")
            if tensor is not None and tensor.device != self.device:
                raise ValueError(f"kp_driving is on {tensor.device} but the model is on {self.device}")
        return Keypoints(value.float(), None if kp.jacobian is None else kp.jacobian.float())


def _batch_of(dm: Any) -> int:
    deformation = dm["deformation"] if isinstance(dm, dict) else getattr(dm, "deformation", None)
    if not isinstance(deformation, torch.Tensor) or deformation.dim() < 1:
        raise KeyError("dm: missing 'deformation' (needs 'deformation', 'occlusion_map', 'driving_kp_heatmap')")
    return deformation.shape[0]
