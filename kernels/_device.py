"""Launch guard: Triton launches on the *current* CUDA device, not on the tensors' device."""
from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

__all__ = ["on_tensor_device"]

F = TypeVar("F", bound=Callable)


def _first_tensor(args, kwargs) -> torch.Tensor | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
    return None


def on_tensor_device(fn: F) -> F:
    """Run the kernel entry point `fn` with the current CUDA device set to that of its first tensor
    argument (positional or keyword). Without it, tensors on cuda:1 while cuda:0 is current fail in
    Triton with "Pointer argument cannot be accessed from Triton (cpu tensor?)". CPU tensors (the
    interpreter) and tensors already on the current device run as they are."""

    @functools.wraps(fn)
    def launch(*args, **kwargs):
        tensor = _first_tensor(args, kwargs)
        if tensor is not None and tensor.device.type == "cuda" and tensor.device.index != torch.cuda.current_device():
            with torch.cuda.device(tensor.device):
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)

    launch.on_tensor_device = True
    return launch  # type: ignore[return-value]
