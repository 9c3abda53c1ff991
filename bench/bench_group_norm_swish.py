"""GroupNorm + swish (the fast path's fused normalisation) beside torch's group_norm + silu.

Shapes: the generator's levels at 256x256 (64 ch at 256^2, 128 at 128^2, 128 at 64^2, 256 at
32^2; 32 groups), B = 1 and 8, fp32 contiguous and bf16 channels-last (the fast path's layout
on a GPU). extra_info: ratio vs the reference, GB/s (one read and one write of x). Target on a
GPU: >= 1.5x (one pass instead of norm, then swish). `--benchmark-disable` on CPU: a quick
correctness smoke run at a reduced size under the Triton interpreter.
"""
from __future__ import annotations

import pytest
import torch

from bench.conftest import kernel_backends
from bench.harness import compare
from mcc_fast.ops import group_norm_swish
from mcc_fast.ops.group_norm import group_norm_swish_reference

LEVELS = ((256, 64), (128, 128), (64, 128), (32, 256))
GROUPS = 32


def _inputs(batch, size, channels, device, dtype, channels_last, small):
    if small:
        size, channels = max(size // 32, 2), channels // 8
    g = torch.Generator().manual_seed(size * 1000 + channels)
    x = torch.randn(batch, channels, size, size, generator=g).to(device=device, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = (1 + 0.1 * torch.randn(channels, generator=g)).to(device)
    bias = (0.1 * torch.randn(channels, generator=g)).to(device)
    return x, weight, bias


def _close(tol):
    def check(out, ref):
        torch.testing.assert_close(out.float().cpu(), ref.float().cpu(), atol=tol, rtol=tol)
    return check


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16_channels_last"])
@pytest.mark.parametrize("level", range(len(LEVELS)), ids=[f"{s}px_{c}ch" for s, c in LEVELS])
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("backend", ["triton"])
def bench_group_norm_swish(benchmark, device, small, backend, batch, level, dtype):
    if backend not in kernel_backends(device):
        pytest.skip(f"{backend} backend unavailable on {device}")
    if small and (batch > 1 or dtype != torch.float32 or level > 1):
        pytest.skip("the full set runs on a GPU (the Triton interpreter is slow)")
    size, channels = LEVELS[level]
    x, weight, bias = _inputs(batch, size, channels, device, dtype, dtype != torch.float32, small)
    groups = GROUPS if not small else 4
    benchmark.group = f"group_norm_swish B={batch} {size}px {channels}ch {dtype}"
    compare(benchmark, lambda: group_norm_swish(x, groups, weight, bias, backend=backend),
            lambda: group_norm_swish_reference(x, groups, weight, bias), device=device,
            bytes_moved=2 * x.numel() * x.element_size(),
            check=_close(2e-4 if dtype == torch.float32 else 2e-2))
    info = benchmark.extra_info
    if "ratio_vs_reference" in info:
        info["target_ratio"] = 1.5
        info["target_met"] = info["ratio_vs_reference"] >= 1.5
