"""Module modes: eval mode for a block, each submodule's own mode restored after."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn

__all__ = ["eval_mode"]


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Put `modules` (and all their submodules) in eval mode for the block; afterwards every
    submodule gets back its own `training` flag (not the top module's: `module.train(True)`
    would wake a submodule the caller froze in eval mode). Restored on exceptions too."""
    saved = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for m, flag in saved:
            m.training = flag
