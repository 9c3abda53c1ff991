"""Warping family: each kernel backend beside the plain-PyTorch chain in the same run.

- the 13 warps of one frame (SPEC.md): dense motion's (B, 3, 64, 64) source x 16 flows
  (align_corners=False) and, per scale (32/256ch, 64/128, 128/128, 256/64), the query warp, the
  feature warp x occlusion and the (redundant) detached warp, all from a 64x64 flow/occlusion
  with align_corners=True; B = 1 and 16;
- the dense-motion warp alone (warp_many, M = 16) and a large warp (16, 64, 256, 256), forward
  and forward + backward.
extra_info: ratio vs the reference chain, GB/s, and the fraction of the device's measured copy
bandwidth (targets on a GPU: warp fwd >= 1.5x, fwd+bwd >= 2x, warp_many >= 2x, large forward
>= 60% of copy bandwidth). `--benchmark-disable` on CPU: a quick correctness smoke run.
"""
from __future__ import annotations

import pytest
import torch

from bench.conftest import kernel_backends
from bench.harness import compare, time_call
from mcc_fast.ops import warp, warp_many
from mcc_fast.reference import warp as reference

SCALES = ((32, 256), (64, 128), (128, 128), (256, 64))
BACKENDS = ["cuda", "triton"]


@pytest.fixture(scope="session")
def copy_bandwidth(device) -> float | None:
    """The device's measured device-to-device copy bandwidth in GB/s (None on CPU)."""
    if device.type != "cuda":
        return None
    src = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    t = time_call(lambda: dst.copy_(src), device, warmup=3, repeats=20)
    return 2 * src.numel() / t / 1e9


def _skip_unavailable(backend, device):
    if backend not in kernel_backends(device):
        pytest.skip(f"{backend} backend unavailable on {device}")


def _record(benchmark, bytes_moved, copy_bw, target=None):
    info = benchmark.extra_info
    if "median_s" in info:
        if copy_bw:
            info["copy_GB/s"] = copy_bw
            info["fraction_of_copy_bandwidth"] = bytes_moved / info["median_s"] / 1e9 / copy_bw
        if target is not None:
            info["target_ratio"] = target
            info["target_met"] = info["ratio_vs_reference"] >= target


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _inputs(b, device, dtype, small, seed=0, channels_last=False):
    div = 8 if small else 1
    g = _gen(seed)
    flow = ((torch.rand(b, 64 // div, 64 // div, 2, generator=g) * 2 - 1) * 1.05).to(device)
    occ = torch.rand(b, 1, 64 // div, 64 // div, generator=g).to(device)
    feats = []
    for size, c in SCALES:
        x = torch.randn(b, c // div, size // div, size // div, generator=g).to(device=device, dtype=dtype)
        feats.append(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    source = torch.randn(b, 3, 64 // div, 64 // div, generator=g).to(device=device, dtype=dtype)
    sparse = ((torch.rand(b, 16, 64 // div, 64 // div, 2, generator=g) * 2 - 1) * 1.05).to(device)
    return flow, occ, feats, source, sparse


def _frame(inputs, backend):
    flow, occ, feats, source, sparse = inputs
    outs = [warp_many(source, sparse, False, backend=backend)]
    for x in feats:
        outs.append(warp(x, flow, None, True, backend=backend))      # query warp
        outs.append(warp(x, flow, occ, True, backend=backend))       # feature warp x occlusion
        outs.append(warp(x, flow, occ, True, backend=backend))       # the detached copy's warp
    return outs


def _close(tol):
    def check(out, ref):
        outs = out if isinstance(out, (list, tuple)) else [out]
        refs = ref if isinstance(ref, (list, tuple)) else [ref]
        for o, r in zip(outs, refs):
            scale = max(1.0, r.detach().abs().max().item())
            torch.testing.assert_close(o.detach().float().cpu(), r.detach().float().cpu(), atol=tol * scale,
                                       rtol=tol)
    return check


def _tol(dtype):
    return {torch.float32: 2e-4, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]


def _frame_bytes(inputs):
    flow, occ, feats, source, sparse = inputs
    per = [2 * x.numel() * x.element_size() for x in feats]
    elt = source.element_size()
    dense = source.numel() * elt + sparse.numel() * 4 + sparse.numel() // 2 * 3 * elt
    return 3 * sum(per) + dense


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16_channels_last"])
@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("backend", BACKENDS)
def bench_frame_13_warps(benchmark, device, small, copy_bandwidth, backend, batch, dtype):
    _skip_unavailable(backend, device)
    if small and batch > 1:
        pytest.skip("B=16: GPU only")
    inputs = _inputs(batch, device, dtype, small, channels_last=dtype != torch.float32)
    benchmark.group = f"frame: 13 warps B={batch} {dtype}"
    nbytes = _frame_bytes(inputs)
    compare(benchmark, lambda: _frame(inputs, backend), lambda: _frame(inputs, "torch"), device=device,
            bytes_moved=nbytes, check=_close(_tol(dtype)))
    _record(benchmark, nbytes, copy_bandwidth, target=1.5)


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("backend", BACKENDS)
def bench_dense_motion_warp_many(benchmark, device, small, copy_bandwidth, backend, batch):
    _skip_unavailable(backend, device)
    if small and batch > 1:
        pytest.skip("B=16: GPU only")
    _, _, _, source, sparse = _inputs(batch, device, torch.float32, small)
    benchmark.group = f"dense motion warp_many B={batch} M=16"
    nbytes = source.numel() * 4 + sparse.numel() * 4 + sparse.numel() // 2 * 3 * 4
    compare(benchmark, lambda: warp_many(source, sparse, False, backend=backend),
            lambda: reference.warp_many(source, sparse, False), device=device, bytes_moved=nbytes,
            check=_close(2e-4))
    _record(benchmark, nbytes, copy_bandwidth, target=2.0)


def _large(device, small, dtype, channels_last):
    b, c, h, w = (2, 4, 16, 16) if small else (16, 64, 256, 256)
    g = _gen(1)
    x = torch.randn(b, c, h, w, generator=g).to(device=device, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    fs = 8 if small else 64
    flow = ((torch.rand(b, fs, fs, 2, generator=g) * 2 - 1) * 1.05).to(device)
    occ = torch.rand(b, 1, fs, fs, generator=g).to(device)
    return x, flow, occ


LARGE = [(torch.float32, False), (torch.bfloat16, True), (torch.float32, True)]
LARGE_IDS = ["fp32", "bf16_channels_last", "fp32_channels_last"]


@pytest.mark.parametrize("dtype,channels_last", LARGE, ids=LARGE_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def bench_large_warp_forward(benchmark, device, small, copy_bandwidth, backend, dtype, channels_last):
    _skip_unavailable(backend, device)
    x, flow, occ = _large(device, small, dtype, channels_last)
    benchmark.group = f"large warp fwd {tuple(x.shape)} {LARGE_IDS[LARGE.index((dtype, channels_last))]}"
    nbytes = 2 * x.numel() * x.element_size() + flow.numel() * 4 + occ.numel() * 4
    compare(benchmark, lambda: warp(x, flow, occ, True, backend=backend),
            lambda: reference.warp(x, flow, occ, True), device=device, bytes_moved=nbytes, check=_close(_tol(dtype)))
    _record(benchmark, nbytes, copy_bandwidth, target=1.5)


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("backend", BACKENDS)
def bench_large_warp_forward_backward(benchmark, device, small, copy_bandwidth, backend, deterministic):
    _skip_unavailable(backend, device)
    x, flow, occ = _large(device, small, torch.float32, False)
    go = torch.randn(x.shape, generator=_gen(2)).to(device)
    leaves = [t.clone().requires_grad_(True) for t in (x, flow, occ)]

    def run(fn):
        def step():
            out = fn(*leaves)
            return torch.autograd.grad(out, leaves, go)
        return step

    benchmark.group = f"large warp fwd+bwd {tuple(x.shape)}"
    # forward: read x, write out; backward: read grad_out and x, write grad_x (read-modify-write)
    nbytes = 6 * x.numel() * x.element_size()
    compare(benchmark, run(lambda a, f, o: warp(a, f, o, True, backend=backend, deterministic=deterministic)),
            run(lambda a, f, o: reference.warp(a, f, o, True)), device=device, bytes_moved=nbytes,
            check=_close(1e-3))
    _record(benchmark, nbytes, copy_bandwidth, target=2.0)
