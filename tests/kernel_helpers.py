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


# The cuda backend on a machine without a GPU: csrc/'s kernels run on the CPU by
# tests/cuda_emulation.py behind the real wrappers and run-time launchers (tests/conftest.py
# installs it for cases with this marker; a GPU machine runs the real "cuda" cases instead).
CUDA_EMULATED = pytest.param("cuda", id="cuda_emulated", marks=pytest.mark.cuda_emulated)
