"""The compiled CUDA module: built with sm_86/sm_90 SASS and compute_90 PTX, importable without a GPU.

CI sets MCC_FAST_REQUIRE_CUDA_BUILD=1 (nvcc is present there), so a missing module fails.
"""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess

import pytest
import torch

REQUIRED = os.environ.get("MCC_FAST_REQUIRE_CUDA_BUILD", "0") not in ("", "0")


def _module():
    try:
        return importlib.import_module("mcc_fast._cuda")
    except ImportError as exc:
        if REQUIRED:
            pytest.fail(f"MCC_FAST_REQUIRE_CUDA_BUILD=1 but mcc_fast._cuda is missing: {exc}")
        pytest.skip(f"mcc_fast._cuda not built here: {exc}")


def _cuobjdump() -> str:
    candidates = [shutil.which("cuobjdump"), "/usr/local/cuda/bin/cuobjdump"]
    try:  # Triton's wheel bundles one (CUDA images without the full toolkit lack it)
        import triton

        candidates.append(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump"))
    except ImportError:
        pass
    for candidate in candidates:
        if candidate and os.path.exists(candidate):
            return candidate
    if REQUIRED:
        pytest.fail("MCC_FAST_REQUIRE_CUDA_BUILD=1 but no cuobjdump to inspect the module with")
    pytest.skip("cuobjdump not found")


def test_module_has_sm86_sm90_sass_and_compute90_ptx():
    module = _module()
    tool = _cuobjdump()
    elf = subprocess.run([tool, "--list-elf", module.__file__], capture_output=True, text=True, check=True).stdout
    ptx = subprocess.run([tool, "--list-ptx", module.__file__], capture_output=True, text=True, check=True).stdout
    assert "sm_86" in elf, elf
    assert "sm_90" in elf, elf
    assert "sm_90" in ptx or "compute_90" in ptx, ptx


def test_module_imports_without_gpu_and_reports_architectures():
    module = _module()
    assert "86" in module.architectures and "90" in module.architectures
    if not torch.cuda.is_available():
        assert module.device_count() == 0


def test_cuda_runtime_is_linked_statically():
    module = _module()
    ldd = shutil.which("ldd")
    if ldd is None:
        pytest.skip("ldd not found")
    out = subprocess.run([ldd, module.__file__], capture_output=True, text=True).stdout
    assert "libcudart" not in out, out
