"""What every fast layer shares: the options, and the tensors derived from the reference weights.

The fast path never owns weights. Each fast layer registers *derived* tensors (a conv weight
cast to the compute dtype and laid out channels-last, a BatchNorm folded into its conv, two
convs merged into one, the codebook keys and values projected once, the position-embedding
terms of the attention projections) with a function that recomputes them from the reference
model's current parameters. `Runtime.refresh()` recomputes them all:

* in place (`copy_`) when shape, dtype and device are unchanged, so CUDA graphs and compiled
  code that captured the old storage stay valid;
* replacing the tensor otherwise (device or dtype change), bumping `generation`: holders of
  captured graphs re-capture when it changes.

A derived tensor that is just the parameter itself (no cast, no layout change) aliases it:
it can never go stale, and a refresh re-points it at the model's current parameter when that
one's memory changed (a replaced Parameter; `generation` bumped), never after in-place updates.

`Runtime.stale()` tells whether any reference parameter or buffer changed since the last
refresh: the object in its module slot (`load_state_dict(assign=True)`, assigning a new
nn.Parameter), its storage pointer or its in-place version counter (`optimizer.step()`,
`load_state_dict`, `model.to(...)`); an in-place edit through `p.data` is not seen (`.data`
has a version counter of its own: call refresh()). `weights_version` counts refreshes: values
computed from the weights before (a SourceCache) are stale when it moved on.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


#: The dtypes the fast path computes in (a float64 model has none: it takes the reference path).
FAST_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class FastOptions:
    """How the fast path computes.

    dtype: compute dtype of features, convolutions and attention (float32, bfloat16 or
        float16). Flows, keypoints, jacobians, occlusions, masks and all geometry stay float32.
    channels_last: feature maps in channels-last memory (NHWC); tokens are then free views.
    pad_head_dim: attention head width the projections are zero-padded to (None: no padding);
        padding q, k and v with zero columns changes no result (the softmax scale stays
        1/sqrt(true head dim)) and lets fused kernels that need a multiple of 8 run.
    backend: backend of the mcc_fast.ops calls (None: the fastest available for the device; an op
        without it, group_norm_swish for "cuda", takes the fastest it has).
    """

    dtype: torch.dtype = torch.float32
    channels_last: bool = True
    pad_head_dim: int | None = None
    backend: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in FAST_DTYPES:
            raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {self.dtype}")
        if not isinstance(self.channels_last, bool):
            raise TypeError(f"channels_last must be a bool, got {self.channels_last!r}")
        if self.pad_head_dim is not None and (isinstance(self.pad_head_dim, bool)
                                              or not isinstance(self.pad_head_dim, int) or self.pad_head_dim < 1):
            raise ValueError(f"pad_head_dim must be None or a positive int, got {self.pad_head_dim!r}")
        if self.backend not in (None, "torch", "triton", "cuda"):
            raise ValueError(f"backend must be None, 'torch', 'triton' or 'cuda', got {self.backend!r}")


@dataclass
class _Entry:
    owner: nn.Module
    name: str
    compute: Callable[[], torch.Tensor]
    aliases_source: bool


_runtime_ids = itertools.count(1)


class Runtime:
    """Options + the registry of derived tensors of one fast model (see module docstring).

    reference: the reference nn.Module whose parameters and buffers the derived tensors come from.
    id: unique per Runtime (tells which fast model made a SourceCache).
    """

    def __init__(self, reference: nn.Module, options: FastOptions) -> None:
        self.reference = reference
        self.options = options
        self.id = next(_runtime_ids)
        self.generation = 0
        self.weights_version = 0
        self._entries: list[_Entry] = []
        self._slots: list[tuple[dict, str]] = []
        self._fingerprint: tuple = ()
        self._collect_sources()

    # ---- layout helpers ------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype of features."""
        return self.options.dtype

    @property
    def device(self) -> torch.device:
        """The reference model's device (of its first parameter)."""
        return next(self.reference.parameters()).device

    @property
    def memory_format(self) -> torch.memory_format:
        """channels_last or contiguous_format, per the options."""
        return torch.channels_last if self.options.channels_last else torch.contiguous_format

    def feature(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) in the compute dtype and memory format (no copy when it already is)."""
        return x.to(dtype=self.dtype, memory_format=self.memory_format)

    def weight(self, w: torch.Tensor) -> torch.Tensor:
        """A parameter in the compute dtype; 4-D (conv) weights in the memory format too."""
        if w.dim() == 4:
            return w.to(dtype=self.dtype, memory_format=self.memory_format)
        return w.to(dtype=self.dtype)

    # ---- the derived-tensor registry ---------------------------------------------------------

    def derive(self, owner: nn.Module, name: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Register `owner.<name>` as a non-persistent buffer holding compute() (recomputed by refresh)."""
        with torch.inference_mode(False), torch.no_grad():  # never an inference tensor (see refresh)
            value = compute().detach()
        entry = _Entry(owner, name, compute, self._aliases_source(value))
        self._entries.append(entry)
        owner.register_buffer(name, value, persistent=False)
        return value

    def refresh(self) -> bool:
        """Recompute every derived tensor from the reference's current weights.

        Returns True when some tensor had to be replaced (new storage; `generation` bumped),
        False when all were updated in place.
        """
        self._collect_sources()
        replaced = False
        # Outside inference mode, so that the derived tensors stay ordinary ones (updatable in
        # place later, whichever mode the caller is in).
        with torch.inference_mode(False), torch.no_grad():
            for entry in self._entries:
                new = entry.compute().detach()
                old = getattr(entry.owner, entry.name)
                if new is old or (entry.aliases_source and _same_view(new, old)):
                    continue  # (a fresh view of the same parameter memory: the old one reads it too)
                same_layout = (new.shape == old.shape and new.dtype == old.dtype and new.device == old.device
                               and new.stride() == old.stride())
                if same_layout and not entry.aliases_source:
                    old.copy_(new)
                else:
                    setattr(entry.owner, entry.name, new)
                    entry.aliases_source = self._aliases_source(new)
                    replaced = True
        self._fingerprint = self._current_fingerprint()
        self.weights_version += 1
        if replaced:
            self.generation += 1
        return replaced

    def stale(self) -> bool:
        """True when a reference parameter/buffer changed (storage or version) since the last refresh."""
        return self._current_fingerprint() != self._fingerprint

    def refresh_if_stale(self) -> bool:
        """refresh() when stale(); returns whether it refreshed."""
        if self.stale():
            self.refresh()
            return True
        return False

    # ---- internals -----------------------------------------------------------------------

    def _collect_sources(self) -> None:
        # The module slots (a module's _parameters / _buffers dict and a name) are kept so that a
        # replaced tensor object is seen, not only changes to the tensors of the last refresh.
        self._slots = [(table, name) for module in self.reference.modules()
                       for table in (module._parameters, module._buffers)
                       for name, t in table.items() if t is not None]
        self._source_storages = {table[name].untyped_storage().data_ptr() for table, name in self._slots}
        self._fingerprint = self._current_fingerprint()

    def _current_fingerprint(self) -> tuple:
        return tuple(_tensor_state(table.get(name)) for table, name in self._slots)

    def _aliases_source(self, value: torch.Tensor) -> bool:
        return value.untyped_storage().data_ptr() in self._source_storages


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when `a` and `b` view the same memory the same way (address, shape, strides, dtype)."""
    return (a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()
            and a.dtype == b.dtype and a.device == b.device)


def _tensor_state(t: torch.Tensor | None) -> tuple | None:
    """What stale() compares per slot: the object, its storage and its in-place version (an
    inference tensor, e.g. weights loaded under torch.inference_mode, keeps no version: there
    only replacements are seen, in-place edits need refresh())."""
    if t is None:
        return None
    return (id(t), t.data_ptr(), None if t.is_inference() else t._version)
