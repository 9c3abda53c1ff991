"""Backend dispatch: auto choice, availability report, clear errors."""
from __future__ import annotations

import pytest
import torch

import mcc_fast
from mcc_fast._dispatch import BACKENDS, resolve_backend


def test_backends_report_every_backend_with_reason():
    report = mcc_fast.backends()
    assert set(report) == set(BACKENDS)
    assert report["torch"].available
    for status in report.values():
        assert isinstance(status.reason, str) and status.reason


def test_cpu_tensors_default_to_torch():
    x = torch.zeros(2, 3)
    assert resolve_backend(None, x, op="t") == "torch"


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="backend must be None or one of"):
        resolve_backend("metal", torch.zeros(1), op="t")


def test_unsupported_backend_for_op():
    with pytest.raises(RuntimeError, match="not implemented for this op"):
        resolve_backend("cuda", torch.zeros(1), op="t", supported=("torch",))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error path")
def test_cuda_backend_without_gpu_names_the_reason():
    z, cb = torch.randn(4, 8), torch.randn(16, 8)
    with pytest.raises(RuntimeError, match="cuda backend is unavailable"):
        mcc_fast.ops.nearest_code(z, cb, backend="cuda")


def test_triton_on_cpu_needs_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if torch.cuda.is_available():
        pytest.skip("with a GPU present triton is available; the CPU-tensor check is tested below")
    with pytest.raises(RuntimeError, match="triton backend"):
        resolve_backend("triton", torch.zeros(1), op="t")


def test_mixed_devices_rejected():
    a = torch.zeros(1)
    b = torch.zeros(1, device="meta")
    with pytest.raises(ValueError, match="one device"):
        resolve_backend(None, a, b, op="t")
