"""`mcc_fast.Model`: motion estimator + generator, the whole MCC model.

Data flow: keypoints (source, driving) -> dense motion (flow, occlusion, heatmaps) -> per
scale (motion compensation -> warp -> appearance compensation -> fusion) -> frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch
from torch import nn

from .config import ModelConfig
from .fused import FusedOps
from .generator.codebook import Codebook
from .generator.generator import Generator
from .generator.outputs import GeneratorOutput
from .modes import eval_mode
from .motion.dense_motion import DenseMotionNetwork
from .motion.motion_estimator import MotionEstimate, MotionEstimator
from .summary import summary_repr

if TYPE_CHECKING:
    import numpy as np

    from ..fast import FastModel


@dataclass
class ModelOutput:
    """Everything `Model(..., return_all=True)` computes.

    frame: (B, 3, S, S) float, no output activation (clamp to [-1, 1] for pixels).
    motion: the motion estimator's output (keypoints, jacobians, dense flow, mask, occlusion).
    generator: per-scale flows/occlusions/token masks; `generator.training` holds the VQ
        losses, code indices, motion reconstructions and the low-resolution frame when a
        ground-truth driving frame was given (`training=True`).
    """

    __repr__ = summary_repr

    frame: torch.Tensor
    motion: MotionEstimate
    generator: GeneratorOutput


def check_pair(source: Any, driving: Any, dtype: torch.dtype) -> None:
    """The rule of `model(source, driving)` on both paths: one batch size, the model's `dtype`
    (TypeError naming the input; not checked under autocast). Shapes are checked downstream."""
    if not (isinstance(source, torch.Tensor) and isinstance(driving, torch.Tensor)):
        return
    for name, image in (("source", source), ("driving", driving)):
        if image.is_floating_point() and image.dtype != dtype and not torch.is_autocast_enabled(image.device.type):
            raise TypeError(f"{name} is {image.dtype} but the model is {dtype}: pass {name}.to({dtype}) "
                            "(or cast the model)")
    if source.dim() >= 1 and driving.dim() >= 1 and driving.shape[0] != source.shape[0]:
        raise ValueError(f"driving batch {driving.shape[0]} != source batch {source.shape[0]}")


def _wants_grad(*inputs: Any) -> bool:
    """True when autograd would record a graph through one of `inputs` (the fast path would not)."""
    return torch.is_grad_enabled() and any(isinstance(x, torch.Tensor) and x.requires_grad for x in inputs)


class Model(nn.Module):
    """The MCC talking-head model.

    `model(source, driving)` -> frame (B, 3, S, S): `source` moved by the motion of `driving`
    (absolute keypoints, a batch of pairs; images (B, 3, S, S) in [-1, 1]).
    `model(source, driving, return_all=True)` -> ModelOutput; with `training=True` also the
    training outputs (VQ losses, indices, motion reconstructions, low-res frame).

    Fast path: `model.fast()` returns the FastModel over these weights (mcc_fast.fast: source
    caching, fused ops, SDPA, channels-last, CUDA graphs); with `model.fast_path = True`
    (the default of `from_pretrained` on CUDA) the plain `model(source, driving)` call in eval
    mode runs through it, unless an input requires grad (grad mode on: the fast path is
    inference-only, so such a call takes the reference path and keeps its graph) or the call is
    traced by torch.compile (the fast path's weight-following checks read storages and versions,
    which do not trace; `torch.compile(model)` compiles the reference path, whole, and
    `model.fast().compile()` the fast path's per-frame step). The reference path stays the
    oracle (return_all, training).

    Both paths take the same pairs: `source` and `driving` of one batch size, in the model's
    dtype (others are a TypeError, not a silent cast; `model.animate` and the fast path's
    `prepare_source` / `render_frame` convert their inputs themselves).
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        if config is not None and not isinstance(config, ModelConfig):
            hint = " (ModelConfig.from_dict reads a dict)" if isinstance(config, dict) else ""
            raise TypeError(f"config must be a ModelConfig or None, got {type(config).__name__}{hint}")
        self.config = ModelConfig() if config is None else config
        self.motion_estimator = MotionEstimator(self.config.motion)
        self.generator = Generator(self.config.generator)
        self.fast_path = False  # route eval-mode model(source, driving) through self.fast()

    def forward(self, source: torch.Tensor, driving: torch.Tensor, *, return_all: bool = False,
                training: bool = False) -> torch.Tensor | ModelOutput:
        """See the class docstring. source, driving: (B, 3, S, S) float in [-1, 1]."""
        if training and not return_all:
            raise ValueError("training=True returns the training outputs: pass return_all=True too")
        dtype = next(self.parameters()).dtype
        check_pair(source, driving, dtype)
        if (getattr(self, "fast_path", False) and not self.training and not return_all
                and not _wants_grad(source, driving) and not torch.compiler.is_compiling()):
            if dtype == torch.float64:
                raise ValueError("model.fast_path is True but this model is torch.float64 (the fast path computes "
                                 "in float32, bfloat16 or float16): set model.fast_path = False for the float64 "
                                 "reference path, or cast the model")
            return self.fast()(source, driving)
        motion = self.motion_estimator(driving, source)
        result = self.generator(source, motion, return_all=return_all, driving=driving if training else None)
        if not return_all:
            return result
        return ModelOutput(frame=result.frame, motion=motion, generator=result)

    def animate(self, source: Any, driving: Any, *, relative: bool = True, adapt_scale: bool = True,
                batch_size: int = 8, **options: Any) -> Iterator[np.ndarray | torch.Tensor]:
        """Animate one source image with a driving video: an iterator of output frames
        (uint8 (S, S, 3) arrays; float (3, S, S) tensors with output="tensor").

        FOMM relative motion with the convex-hull scale by default; inputs as arrays, PIL
        images, tensors or paths; options reference, output, side_by_side, crop, source_crop,
        strict, note, fast (fast path; default `self.fast_path`): see `mcc_fast.inference.animate`.
        """
        from ..inference.animator import animate

        return animate(self, source, driving, relative=relative, adapt_scale=adapt_scale,
                       batch_size=batch_size, **options)

    def fast(self, *, dtype: torch.dtype | None = None, channels_last: bool = True,
             pad_head_dim: int | None = None, backend: str | None = None) -> FastModel:
        """The fast inference path over this model's weights (a `mcc_fast.fast.FastModel`,
        built once per set of options and kept; it follows weight updates, in place or by
        replaced Parameter objects). See FastModel for the options (dtype: compute dtype,
        default the model's current one, so after `model.to(dtype)` another fast path is built;
        e.g. torch.bfloat16 on CUDA). A float64 model has no fast path (it computes in fp32,
        bf16 or fp16): pass dtype=torch.float32, or use the reference path."""
        from ..fast import FastModel, FastOptions
        from ..fast.runtime import FAST_DTYPES

        if dtype is None:
            dtype = next(self.parameters()).dtype
            if dtype not in FAST_DTYPES:
                raise ValueError(f"the fast path computes in float32, bfloat16 or float16; this model is {dtype}: "
                                 "call model.fast(dtype=torch.float32), or use the reference path "
                                 "(model.fast_path = False; animate(..., fast=False))")
        FastOptions(dtype=dtype, channels_last=channels_last, pad_head_dim=pad_head_dim, backend=backend)  # checks
        key = (dtype, channels_last, pad_head_dim, backend)  # checked first: 1 == True would find a built one
        built = self.__dict__.setdefault("_fast_paths", {})
        if built.get(key) is None:  # (copies and unpickled models hold None: rebuilt here)
            built[key] = FastModel(self, dtype=dtype, channels_last=channels_last, pad_head_dim=pad_head_dim,
                                   backend=backend)
        return built[key]

    # ---- sizes and costs -----------------------------------------------------------------

    def use_fused_ops(self, enabled: bool = True, backend: str | None = None) -> Model:
        """Run this model's warps, codebook searches and dense-motion geometry on mcc_fast.ops'
        fused kernels (with autograd: training's fast path; see mcc_fast.model.fused), or, with
        enabled=False, on the op-for-op reference again. backend: the ops backend (None: the
        fastest for the inputs' device). Returns self."""
        if not isinstance(enabled, bool):
            hint = f" (for a backend pass backend={enabled!r})" if isinstance(enabled, str) else ""
            raise TypeError(f"enabled must be True or False, got {enabled!r}{hint}")
        fused = FusedOps(backend) if enabled else None
        for module in self.modules():
            if isinstance(module, (Generator, DenseMotionNetwork, Codebook)):
                module.fused = fused
        return self

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts per component (the rows of the paper's Table 3/6)."""
        def count(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())

        me = self.motion_estimator
        return {
            "keypoint_detector": count(me.keypoint_detector),
            "dense_motion": count(me.dense_motion_net),
            "motion_estimator": count(me),
            "generator": count(self.generator),
            "total": count(self),
        }

    def flops(self, batch: int = 1) -> dict[str, int]:
        """FLOPs of one forward at `batch` (a positive int: image pairs) (2 x MAC,
        torch.utils.flop_counter), per network."""
        from torch.utils.flop_counter import FlopCounterMode

        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise ValueError(f"batch must be a positive int (image pairs), got {batch!r}")
        param = next(self.parameters())
        size, channels = self.config.image_size, self.config.generator.image_channels
        source = torch.zeros(batch, channels, size, size, device=param.device, dtype=param.dtype)
        driving = torch.zeros_like(source)
        requires_grad = [p.requires_grad for p in self.parameters()]
        self.requires_grad_(False)  # FlopCounterMode's module hooks need no autograd graph
        try:
            with eval_mode(self), torch.no_grad(), FlopCounterMode(display=False) as counter:
                motion = self.motion_estimator(driving, source)
            motion_flops = counter.get_total_flops()
            with eval_mode(self), torch.no_grad(), FlopCounterMode(display=False) as counter:
                self.generator(source, motion)
            generator_flops = counter.get_total_flops()
        finally:
            for p, flag in zip(self.parameters(), requires_grad):
                p.requires_grad_(flag)
        return {"motion_estimator": motion_flops, "generator": generator_flops,
                "total": motion_flops + generator_flops}

    # ---- checkpoints -----------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | Path | Any, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, fast: bool | None = None,
                        config: ModelConfig | None = None) -> "Model":
        """Load our format (a .safetensors file, or a folder holding model.safetensors — such as a
        training checkpoint `runs/NAME/checkpoints/step_*`, whose weights are checked against the
        hashes it records and give the generator's EMA weights with the motion estimator) or the
        authors' checkpoint pair (a folder holding net_g*.pth and net_motion_estimator*.pth, or
        a (generator, motion_estimator) pair of paths; generator `params_ema` preferred). A
        folder holding both kinds loads ours.

        Returns the model in eval mode on `device` ("cpu", "cuda", "cuda:N" or a torch.device;
        default: CUDA when available, else CPU; checked before anything is read), in the
        file's float32 weights cast to `dtype` when given (torch.float32 / float16 / bfloat16 /
        float64 or a name: "fp32", "fp16", "half", "bf16", ...; a file saved in fp16 loads as
        float32 unless asked). `fast` (True / False / None): route `model(source, driving)`
        through the fast path (`model.fast_path`); default True on CUDA, False on CPU.
        `config`: the architecture of an authors' checkpoint other than the paper's (their
        files store none; ModelConfig() is assumed); our files carry their own, and a
        different `config` is a CheckpointError.
        """
        from ..devices import resolve_device
        from .checkpoint import LOAD_DTYPES, load_model, resolve_dtype

        dtype = resolve_dtype(dtype, LOAD_DTYPES)
        device = resolve_device(device)
        if fast is not None and not isinstance(fast, bool):
            raise TypeError(f"fast must be True, False or None, got {fast!r}")
        if config is not None and not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig or None, got {type(config).__name__}")
        model = load_model(cls, path, config)
        model = model.to(device=device)
        if dtype is not None:
            model = model.to(dtype=dtype)
        is_f64 = next(model.parameters()).dtype == torch.float64
        if fast and is_f64:
            raise ValueError("fast=True with dtype float64: the fast path computes in float32, bfloat16 or "
                             "float16; load in one of those, or pass fast=False for the float64 reference path")
        if fast is None:  # float64 (precision checks) has no fast path
            fast = device.type == "cuda" and not is_f64
        model.fast_path = fast
        return model.eval()

    def save_pretrained(self, path: str | Path, *, dtype: torch.dtype | str | None = None) -> Path:
        """Write weights + config to `path` (a .safetensors file, or a folder -> model.safetensors;
        .pt / .pth and other formats' suffixes are a ValueError), atomically. `dtype`
        (torch.float32 / float16 / bfloat16 or "fp32" / "fp16" / "bf16", ...) casts floating
        weights on the way out."""
        from .checkpoint import save_model

        return save_model(self, path, dtype=dtype)
