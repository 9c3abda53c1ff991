"""Argument checks shared by the public ops: clear errors naming the argument."""
from __future__ import annotations

import operator

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_tensor(t, name: str, *, ndim: int | tuple[int, ...] | None = None, floating: bool = True) -> None:
    """Raise TypeError/ValueError unless `t` is a tensor with the expected rank and a float dtype."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if t.dim() not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(t.shape)}")
    if floating and t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor (float32/float16/bfloat16/float64), got {t.dtype}")


def check_same_device(**tensors: torch.Tensor) -> None:
    """Raise ValueError when the named tensors are not all on one device."""
    devices = {name: t.device for name, t in tensors.items() if isinstance(t, torch.Tensor)}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"tensors must be on one device: {listing}")


def as_index(value):
    """`value` as a Python int (ints and integer scalars such as numpy.int64; not bools, floats
    or tensors), else None: for the ops' integer arguments. A torch.SymInt (a symbolic size under
    torch.compile(dynamic=True) or torch.export) is returned as it is: operator.index would
    specialise it to its current value, so every new size would recompile."""
    if isinstance(value, (bool, torch.Tensor)):
        return None
    if isinstance(value, (int, torch.SymInt)):  # (under torch.compile a symbolic size passes as an int)
        return value
    try:
        return operator.index(value)
    except TypeError:
        return None
