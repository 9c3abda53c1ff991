"""Short reprs for the model's output records: a tensor shows its shape, dtype and device,
never its values (the default dataclass repr of one ModelOutput printed ~800 lines)."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch


def describe(value: Any) -> str:
    """`value` in one short line: tensors as ``Tensor(shape, dtype[, device])``, containers
    item by item, other values as their repr."""
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        device = "" if value.device.type == "cpu" else f", {value.device}"
        grad = ", requires_grad" if value.requires_grad else ""
        return f"Tensor({tuple(value.shape)}, {dtype}{device}{grad})"
    if isinstance(value, (list, tuple)):
        items = ", ".join(describe(item) for item in value)
        if isinstance(value, tuple):
            return f"({items},)" if len(value) == 1 else f"({items})"
        return f"[{items}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key!r}: {describe(item)}" for key, item in value.items()) + "}"
    return repr(value)


def summary_repr(self: Any) -> str:
    """A dataclass's repr with `describe`d fields (use as ``__repr__ = summary_repr``)."""
    fields = ", ".join(f"{field.name}={describe(getattr(self, field.name))}"
                       for field in dataclasses.fields(self) if field.repr)
    return f"{type(self).__name__}({fields})"
