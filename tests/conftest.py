"""Test-suite setup: Triton's interpreter on CPU machines, the `gpu` marker, tests/ helpers."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# tests/ helpers (golden.py, ...) are imported as plain modules.
sys.path.insert(0, str(Path(__file__).parent))

HAS_GPU = torch.cuda.is_available()
if not HAS_GPU:
    # Must happen before any Triton kernel module is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if HAS_GPU:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible to torch on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
