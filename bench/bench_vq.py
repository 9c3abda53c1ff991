"""Nearest-code search: each backend beside the torch reference (SPEC.md training shapes)."""
from __future__ import annotations

import pytest
import torch

import mcc_fast
from bench.conftest import kernel_backends
from bench.harness import compare


def _check(out, ref):
    # indices may differ only at near-ties: compare the distances they achieve
    torch.testing.assert_close(out[1].float().cpu(), ref[1].float().cpu(), atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("n,d,num", [(4 * 1024, 32, 256), (4 * 1024, 256, 1024), (16 * 1024, 256, 1024), (1 << 20, 256, 1024)])
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def bench_nearest_code(benchmark, device, small, backend, n, d, num):
    if backend not in kernel_backends(device):
        pytest.skip(f"{backend} backend unavailable on {device}")
    if small:
        if n > 4096:
            pytest.skip("large shape: GPU only")
        n, num = 64, min(num, 128)
    g = torch.Generator(device="cpu").manual_seed(0)
    z = torch.randn(n, d, generator=g).to(device)
    cb = torch.randn(1024, d, generator=g).to(device)
    benchmark.group = f"nearest_code N={n} d={d} K={num}"
    compare(
        benchmark,
        lambda: mcc_fast.ops.nearest_code(z, cb, num, backend=backend),
        lambda: mcc_fast.ops.nearest_code(z, cb, num, backend="torch"),
        device=device, flops=2 * n * num * d, bytes_moved=(n + num) * d * 4 + n * 12, check=_check,
    )
