"""pytest-benchmark suite: `pytest bench` (GPU numbers), `pytest bench --benchmark-disable` (CPU smoke)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton kernel module is imported

import mcc_fast  # noqa: E402,F401  (imported first: the installed package wins over the source tree)

sys.path.append(str(Path(__file__).resolve().parent.parent))  # `bench.harness` importable


def pytest_addoption(parser):
    parser.addoption("--bench-device", default=None, help="cuda or cpu (default: cuda when available)")


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    name = request.config.getoption("--bench-device") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@pytest.fixture(scope="session")
def small(device) -> bool:
    """On CPU (interpreter) benchmarks shrink their shapes to a smoke-test size."""
    return device.type != "cuda"


def kernel_backends(device: torch.device) -> list[str]:
    """Backends to benchmark beside the torch reference on this device."""
    if device.type == "cuda":
        from mcc_fast import backends

        return [name for name, st in backends().items() if st.available and name != "torch"]
    return ["triton"]
