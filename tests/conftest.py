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


def _global_torch_state():
    return {
        "deterministic algorithms": (torch.are_deterministic_algorithms_enabled(),
                                     torch.is_deterministic_algorithms_warn_only_enabled()),
        "grad mode": torch.is_grad_enabled(),
        "inference mode": torch.is_inference_mode_enabled(),
        "default dtype": torch.get_default_dtype(),
        "anomaly detection": torch.is_anomaly_enabled(),
        "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET"),
    }


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item._mcc_fast_global_state = _global_torch_state()  # before any fixture (monkeypatch included) runs


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Fails a test that leaves torch's global switches (or TRITON_INTERPRET) changed for the tests
    after it, once every fixture (monkeypatch included) has been torn down."""
    result = yield
    before = getattr(item, "_mcc_fast_global_state", None)
    if before is None:
        return result
    after = _global_torch_state()
    leaked = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    if leaked:
        _restore_global_torch_state(before)  # so one leak fails one test
        pytest.fail(f"{item.nodeid} left global state changed (before, after): {leaked}", pytrace=False)
    return result


def _restore_global_torch_state(state: dict) -> None:
    torch.use_deterministic_algorithms(state["deterministic algorithms"][0],
                                       warn_only=state["deterministic algorithms"][1])
    torch.set_grad_enabled(state["grad mode"])
    torch.set_default_dtype(state["default dtype"])
    torch.set_anomaly_enabled(state["anomaly detection"])
    if state["TRITON_INTERPRET"] is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = state["TRITON_INTERPRET"]


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
    monkeypatch.setattr(_dispatch, "cuda_status", lambda device=None: status)
    original = _dispatch.resolve_backend

    def resolve(backend, *tensors, op, supported=_dispatch.BACKENDS):
        if backend == "cuda" and "cuda" in supported:
            _dispatch._device_of(tensors)  # still one device
            return "cuda"
        return original(backend, *tensors, op=op, supported=supported)

    for name in ("dense_motion", "group_norm", "vq", "warp"):
        monkeypatch.setattr(importlib.import_module(f"mcc_fast.ops.{name}"), "resolve_backend", resolve)
