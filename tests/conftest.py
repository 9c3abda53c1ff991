"""Test-suite setup: Triton's interpreter on CPU machines, the `gpu` marker, tests/ helpers."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

# tests/ helpers (golden.py, ...) are imported as plain modules.
sys.path.insert(0, str(Path(__file__).parent))

HAS_GPU = torch.cuda.is_available()
if not HAS_GPU:
    # Must happen before any Triton kernel module is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_configure(config):
    """Hypothesis's example database and constants cache (written while tests are collected) in a
    temporary folder, not `.hypothesis/` in whatever folder pytest was started from: the property
    tests are derandomized, there is nothing worth keeping."""
    from hypothesis import configuration

    config._mcc_fast_hypothesis_home = tempfile.mkdtemp(prefix="mcc_fast_hypothesis_")
    configuration.set_hypothesis_home_dir(config._mcc_fast_hypothesis_home)


def pytest_unconfigure(config):
    home = getattr(config, "_mcc_fast_hypothesis_home", None)
    if home is not None:
        from hypothesis import configuration

        configuration.set_hypothesis_home_dir(None)
        shutil.rmtree(home, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    if HAS_GPU:
        real = pytest.mark.skip(reason="a GPU is here: the real cuda cases run instead of the emulated ones")
        for item in items:
            if "cuda_emulated" in item.keywords:
                item.add_marker(real)
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible to torch on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _private_nvrtc_cache(tmp_path_factory):
    """The run-time compiler's disk cache (mcc_fast.cuda.runtime.cache) in a temporary folder."""
    os.environ["MCC_FAST_CACHE_DIR"] = str(tmp_path_factory.mktemp("mcc_fast_cache"))


@pytest.fixture(scope="session")
def _emulated_kernel_libraries(tmp_path_factory):
    import cuda_emulation

    from mcc_fast.cuda import runtime

    out = tmp_path_factory.mktemp("cuda_emulation")
    return [(family, cuda_emulation.build(family, out / name)) for name, family in runtime.FAMILIES.items()]


@pytest.fixture(autouse=True)
def _cuda_emulation(request, monkeypatch):
    """For cases marked cuda_emulated: the cuda backend accepts CPU tensors and runs csrc/'s kernels
    on the CPU (tests/cuda_emulation.py) behind the real wrappers and run-time launchers."""
    if request.node.get_closest_marker("cuda_emulated") is None:
        return
    import importlib

    import cuda_emulation

    from mcc_fast import _dispatch

    cuda_emulation.install(monkeypatch, *request.getfixturevalue("_emulated_kernel_libraries"))
    status = _dispatch.BackendStatus("cuda", True, "emulated on the CPU (tests/cuda_emulation.py)")
    monkeypatch.setattr(_dispatch, "cuda_status", lambda: status)
    original = _dispatch.resolve_backend

    def resolve(backend, *tensors, op, supported=_dispatch.BACKENDS):
        if backend == "cuda" and "cuda" in supported:
            _dispatch._device_of(tensors)  # still one device
            return "cuda"
        return original(backend, *tensors, op=op, supported=supported)

    for name in ("dense_motion", "group_norm", "vq", "warp"):
        monkeypatch.setattr(importlib.import_module(f"mcc_fast.ops.{name}"), "resolve_backend", resolve)
