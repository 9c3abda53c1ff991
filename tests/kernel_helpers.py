"""Helpers shared by the kernel test files (imported as a plain module: tests/ is on sys.path)."""
from __future__ import annotations

import contextlib

import pytest

import mcc_fast


@contextlib.contextmanager
def deterministic_algorithms():
    """torch.use_deterministic_algorithms(True) for the block, restored afterwards."""
    import torch

    prev, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=warn)


def require_backend(backend: str) -> None:
    """Skip the calling test, with the reason, when `backend` cannot run here."""
    status = mcc_fast.backends()[backend]
    if not status.available:
        pytest.skip(f"{backend} backend unavailable: {status.reason}")
