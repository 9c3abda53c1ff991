"""pytest-benchmark suite: `pytest bench` (GPU numbers), `pytest bench --benchmark-disable` (CPU smoke)."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton kernel module is imported

import mcc_fast  # noqa: E402,F401  (imported first: the installed package wins over the source tree)

sys.path.append(str(Path(__file__).resolve().parent.parent))  # `bench.harness` importable


def _terminate(signum, frame):
    # `timeout` (bench/gpu_check.sh) sends SIGTERM: end like Ctrl-C, so that pytest still runs its
    # session-finish hooks and pytest-benchmark writes the JSON of every benchmark finished so far.
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _terminate)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """Before pytest-benchmark saves: drop a benchmark the interrupt left without any timing
    (its statistics would raise on the empty data and no JSON would be written at all)."""
    bs = getattr(session.config, "_benchmarksession", None)
    if bs is not None:
        bs.benchmarks[:] = [b for b in bs.benchmarks if getattr(getattr(b, "stats", None), "data", None)]
    yield


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
