"""Exponential moving average of a module's weights (the generator's EMA, decay 0.995)."""
from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ModelEma"]


class ModelEma(nn.Module):
    """A frozen copy `average` of `module`, updated as ema = decay * ema + (1 - decay) * param
    (basicsr ``model_ema``); buffers are copied. Starts as an exact copy."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.average = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module, decay: float) -> None:
        """One EMA step towards `module`'s current weights (same architecture)."""
        current = dict(module.named_parameters())
        for name, p_ema in self.average.named_parameters():
            p_ema.mul_(decay).add_(current[name].detach(), alpha=1.0 - decay)
        current_buffers = dict(module.named_buffers())
        for name, b_ema in self.average.named_buffers():
            b_ema.copy_(current_buffers[name])
