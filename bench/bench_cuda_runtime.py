"""The CUDA kernels compiled at run time by NVRTC (mcc_fast.cuda.runtime) beside the compiled
module (mcc_fast._cuda), in the same run: the 13 warps of one frame, the training-shape
nearest-code search and the dense-motion input. ratio_vs_reference = compiled time / NVRTC
time: about 1 expected (the same kernels and flags); lower means the ctypes launch path costs
more than pybind11's. GPU only (both runtimes must load)."""
from __future__ import annotations

import pytest
import torch

import mcc_fast.cuda as mcuda
from bench.bench_warp import _frame, _inputs
from bench.harness import compare
from mcc_fast.ops import dense_motion_input, nearest_code


def _both(device):
    if device.type != "cuda":
        pytest.skip("needs a CUDA device")
    for kind in ("compiled", "nvrtc"):
        if mcuda.extension_error(kind):
            pytest.skip(f"the {kind} kernels are unavailable: {mcuda.extension_error(kind)}")


def _on(kind, fn):
    def run():
        with mcuda.using(kind):
            return fn()

    return run


def _same(out, ref):
    for a, b in zip(out if isinstance(out, (list, tuple)) else [out], ref if isinstance(ref, (list, tuple)) else [ref],
                    strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 16])
def bench_runtime_frame_warps(benchmark, device, batch):
    _both(device)
    inputs = _inputs(batch, device, torch.float32, False)
    benchmark.group = f"cuda runtime: 13 warps of a frame B={batch}"
    compare(benchmark, _on("nvrtc", lambda: _frame(inputs, "cuda")), _on("compiled", lambda: _frame(inputs, "cuda")),
            device=device, check=_same)


def bench_runtime_nearest_code(benchmark, device):
    _both(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    z = torch.randn(16 * 1024, 256, generator=g).to(device=device, dtype=torch.bfloat16)
    cb = torch.randn(1024, 256, generator=g).to(device=device, dtype=torch.bfloat16)
    benchmark.group = "cuda runtime: nearest_code N=16384 d=256 K=1024 bf16"
    compare(benchmark, _on("nvrtc", lambda: nearest_code(z, cb, backend="cuda")),
            _on("compiled", lambda: nearest_code(z, cb, backend="cuda")), device=device, check=_same)


def bench_runtime_dense_motion_input(benchmark, device):
    _both(device)
    g = torch.Generator(device="cpu").manual_seed(1)
    source = torch.randn(16, 3, 64, 64, generator=g).to(device)
    kp_s, kp_d = ((torch.rand(16, 15, 2, generator=g) * 2 - 1).to(device) for _ in range(2))
    benchmark.group = "cuda runtime: dense_motion_input B=16 K=15 64x64"
    compare(benchmark, _on("nvrtc", lambda: dense_motion_input(source, kp_s, kp_d, backend="cuda")),
            _on("compiled", lambda: dense_motion_input(source, kp_s, kp_d, backend="cuda")), device=device,
            check=_same)
