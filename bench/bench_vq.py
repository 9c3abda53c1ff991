"""Nearest-code search and vector quantisation: each backend beside the torch reference.

Shapes (SPEC.md): training N = 4*1024 and 16*1024 rows, d = 32 (motion) and 256
(appearance), prefixes 256..1024 of a 1024-row codebook; and N = 2^20, d = 256. Reported in
extra_info: reference time, ratio, TFLOP/s (2*N*K*d), peak memory of each side. Targets
on a GPU: forward >= 3x the reference and fwd+bwd >= 2x at the training shapes; extra
memory O(N + K); N = 2^20, d = 256 at >= 50% of the GPU's matmul rate (bench_matmul_rate
records that rate in the same run). On CPU (`--benchmark-disable`) the shapes shrink to a
smoke test that checks results against the reference.
"""
from __future__ import annotations

import pytest
import torch

import mcc_fast
from bench.conftest import kernel_backends
from bench.harness import compare

TRAINING = [(4 * 1024, 32, 256), (4 * 1024, 32, 1024), (4 * 1024, 256, 256), (4 * 1024, 256, 1024),
            (16 * 1024, 32, 1024), (16 * 1024, 256, 512), (16 * 1024, 256, 1024)]
LARGE = [(1 << 20, 256, 1024)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _inputs(n, d, device, dtype, small):
    if small:
        n = 64
    g = torch.Generator(device="cpu").manual_seed(0)
    z = torch.randn(n, d, generator=g).to(device=device, dtype=dtype)
    cb = (torch.rand(1024, d, generator=g) * 2 - 1).to(device=device, dtype=dtype)  # codes spread like z
    return z, cb


def _skip(backend, device, small, n):
    if backend not in kernel_backends(device):
        pytest.skip(f"{backend} backend unavailable on {device}")
    if small and n > 4096:
        pytest.skip("large shape: GPU only")


def _check_search(out, ref):
    # indices may differ only at near-ties: compare the distances they achieve
    torch.testing.assert_close(out[1].float().cpu(), ref[1].float().cpu(), atol=1e-2, rtol=1e-3)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("n,d,num", TRAINING + LARGE)
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def bench_nearest_code(benchmark, device, small, backend, n, d, num, dtype):
    _skip(backend, device, small, n)
    z, cb = _inputs(n, d, device, DTYPES[dtype], small)
    n, num = z.shape[0], min(num, 128) if small else num
    benchmark.group = f"nearest_code N={n} d={d} K={num} {dtype}"
    compare(
        benchmark,
        lambda: mcc_fast.ops.nearest_code(z, cb, num, backend=backend),
        lambda: mcc_fast.ops.nearest_code(z, cb, num, backend="torch"),
        device=device, flops=2 * n * num * d, bytes_moved=(n + num) * d * z.element_size() + n * 12,
        check=_check_search,
    )


@pytest.mark.parametrize("precision", ["tf32", "ieee"])
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def bench_nearest_code_fp32_precision(benchmark, device, small, backend, precision):
    """fp32 search with TF32 tensor cores (the default) vs fp32 FMA ("ieee"), same shape."""
    n, d, num = 16 * 1024, 256, 1024
    _skip(backend, device, small, n)
    z, cb = _inputs(n, d, device, torch.float32, small)
    n, num = z.shape[0], min(num, 128) if small else num
    benchmark.group = f"nearest_code fp32 precision N={n} d={d} K={num}"
    compare(
        benchmark,
        lambda: mcc_fast.ops.nearest_code(z, cb, num, backend=backend, precision=precision),
        lambda: mcc_fast.ops.nearest_code(z, cb, num, backend="torch"),
        device=device, flops=2 * n * num * d, bytes_moved=(n + num) * d * 4 + n * 12, check=_check_search,
    )


def _official_fwd(z, cb, num):
    """The official VectorQuantizer forward (distance matrix, argmin, one-hot matmul)."""
    codes = cb[:num]
    dist = (z ** 2).sum(1, keepdim=True) + (codes ** 2).sum(1) - 2 * z @ codes.t()
    idx = dist.argmin(1)
    one_hot = torch.zeros(z.shape[0], num, device=z.device, dtype=z.dtype).scatter_(1, idx[:, None], 1)
    zq = one_hot @ codes
    loss = 0.25 * ((zq.detach() - z) ** 2).mean() + ((zq - z.detach()) ** 2).mean()
    e_mean = one_hot.float().mean(0)
    ppl = torch.exp(-(e_mean * torch.log(e_mean + 1e-10)).sum())
    return z + (zq - z).detach(), idx, loss, ppl


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("n,d,num", TRAINING + LARGE)
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def bench_quantize(benchmark, device, small, backend, n, d, num, dtype, mode):
    _skip(backend, device, small, n)
    z0, cb0 = _inputs(n, d, device, DTYPES[dtype], small)
    n, num = z0.shape[0], min(num, 128) if small else num
    z = z0.clone().requires_grad_(mode == "fwd+bwd")
    cb = cb0.clone().requires_grad_(mode == "fwd+bwd")
    grad = torch.randn_like(z0)

    def ours():
        q = mcc_fast.ops.quantize(z, cb, num, backend=backend)
        if mode == "fwd+bwd":
            torch.autograd.backward([q.z_q, q.loss], [grad, torch.ones_like(q.loss)])
            z.grad = cb.grad = None
        return q.loss.detach(), q.stats.perplexity

    def reference():
        zq, _, loss, ppl = _official_fwd(z, cb, num)
        if mode == "fwd+bwd":
            torch.autograd.backward([zq, loss], [grad, torch.ones_like(loss)])
            z.grad = cb.grad = None
        return loss.detach().float(), ppl

    def check(out, ref):
        torch.testing.assert_close(out[0], ref[0], rtol=2e-2 if dtype == "bf16" else 1e-4, atol=1e-5)
        torch.testing.assert_close(out[1], ref[1], rtol=2e-2, atol=1e-2)

    benchmark.group = f"quantize {mode} N={n} d={d} K={num} {dtype}"
    flops = 2 * n * num * d  # the search; the backward is O(N d)
    compare(benchmark, ours, reference, device=device, flops=flops, check=check)


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def bench_quantize_multiscale(benchmark, device, small, backend):
    """The 4 training scales (prefixes 256..1024) in one launch vs four quantize calls."""
    _skip(backend, device, small, 4096)
    n = 64 if small else 16 * 1024
    nums = [32, 64, 96, 128] if small else [256, 512, 768, 1024]
    g = torch.Generator(device="cpu").manual_seed(1)
    zs = [torch.randn(n, 256, generator=g).to(device) for _ in nums]
    cb = (torch.rand(1024, 256, generator=g) * 2 - 1).to(device)
    benchmark.group = f"quantize_multiscale N={n}x4 d=256"
    compare(
        benchmark,
        lambda: [q.loss for q in mcc_fast.ops.quantize_multiscale(zs, cb, nums, backend=backend)],
        lambda: [mcc_fast.ops.quantize(z, cb, k, backend=backend).loss for z, k in zip(zs, nums)],
        device=device, flops=sum(2 * n * k * 256 for k in nums),
        check=lambda a, b: [torch.testing.assert_close(x, y) for x, y in zip(a, b)],
    )


@pytest.mark.parametrize("dtype", list(DTYPES))
def bench_matmul_rate(benchmark, device, small, dtype):
    """The GPU's measured matmul rate (bf16; fp32 with TF32 allowed) at the N = 2^20 shape."""
    if device.type != "cuda":
        pytest.skip("the matmul-rate yardstick is a GPU number")
    n, d, k = 1 << 20, 256, 1024
    a = torch.randn(n, d, device=device, dtype=DTYPES[dtype])
    b = torch.randn(d, k, device=device, dtype=DTYPES[dtype])
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        benchmark.group = f"matmul rate {dtype} (TF32 for fp32)"
        compare(benchmark, lambda: a @ b, lambda: a @ b, device=device, flops=2 * n * d * k)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
