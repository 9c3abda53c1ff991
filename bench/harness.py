"""Benchmark harness: time an op beside its reference in the same run.

`compare(benchmark, fn, reference, ...)` times `fn` through pytest-benchmark (its stats, for
regression tracking) and both `fn` and the reference with one method (CUDA events around bursts
of calls on a GPU, the host clock on CPU), and records in `benchmark.extra_info`: both times,
the speed ratio (reference / fn), achieved GB/s and TFLOP/s when bytes/flops are
given, and peak memory of each on CUDA. With `--benchmark-disable` it runs each once and
only checks that both produce the same result (a quick correctness smoke run).
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable, device: torch.device, *, warmup: int = 3, repeats: int = 20) -> float:
    """Median seconds per call of fn() (CUDA-synchronised)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def device_time(fn: Callable, device: torch.device, *, rounds: int = 20, min_burst_s: float = 1e-3) -> float:
    """Median seconds per call of fn() measured by CUDA events around bursts of back-to-back
    calls (each burst at least `min_burst_s`), so launch and synchronisation overhead does not
    squeeze the ratios of microsecond kernels towards 1. CPU: `time_call`."""
    if device.type != "cuda":
        return time_call(fn, device, repeats=rounds)
    one = time_call(fn, device, warmup=3, repeats=3)
    burst = max(1, min(1000, int(min_burst_s / max(one, 1e-7))))
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(rounds):
        start.record()
        for _ in range(burst):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / burst)
    return statistics.median(times)


def peak_memory(fn: Callable, device: torch.device) -> int | None:
    """Peak bytes allocated above the starting point during one call (CUDA only)."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def _flatten(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flatten(o)]
    return []


def assert_same(out, ref, *, atol: float, rtol: float = 0.0) -> None:
    """Every tensor of `out` close to the matching tensor of `ref` (integer tensors exact)."""
    a, b = _flatten(out), _flatten(ref)
    assert len(a) == len(b), f"{len(a)} outputs vs {len(b)} reference outputs"
    for x, y in zip(a, b):
        assert x.shape == y.shape, f"shape {tuple(x.shape)} vs reference {tuple(y.shape)}"
        if not x.is_floating_point():
            assert torch.equal(x.cpu(), y.cpu())
        else:
            torch.testing.assert_close(x.float().cpu(), y.float().cpu(), atol=atol, rtol=rtol)


def compare(benchmark, fn: Callable, reference: Callable, *, device: torch.device,
            bytes_moved: int | None = None, flops: int | None = None, check: Callable | None = None,
            rounds: int = 20) -> None:
    """Benchmark fn beside reference; record ratio, GB/s, TFLOP/s and peak memory.

    check(out, ref_out): called once with both results (e.g. `assert_same`).
    """
    disabled = getattr(benchmark, "disabled", False)
    out = fn()
    ref_out = reference()
    if check is not None:
        check(out, ref_out)
    if disabled:
        benchmark(fn)
        return
    benchmark.pedantic(lambda: (fn(), synchronize(device)), rounds=rounds, warmup_rounds=3, iterations=1)
    info = benchmark.extra_info
    info["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    info["host_median_s"] = benchmark.stats.stats.median  # pytest-benchmark's (host clock + sync)
    timing = "host"
    if device.type == "cuda":
        try:  # both sides by the same device-event method
            ref_time, fn_time = device_time(reference, device, rounds=rounds), device_time(fn, device, rounds=rounds)
            timing = "cuda-events"
        except RuntimeError as exc:  # e.g. an op that cannot be called back to back
            info["device_timing_error"] = str(exc)[:200]
    if timing == "host":
        ref_time = time_call(reference, device, repeats=rounds)
        fn_time = info["host_median_s"]
    info["timing"] = timing
    info["reference_median_s"] = ref_time
    info["median_s"] = fn_time
    info["ratio_vs_reference"] = ref_time / fn_time if fn_time > 0 else float("inf")
    if bytes_moved:
        info["GB/s"] = bytes_moved / fn_time / 1e9
    if flops:
        info["TFLOP/s"] = flops / fn_time / 1e12
    info["peak_bytes"] = peak_memory(fn, device)
    info["reference_peak_bytes"] = peak_memory(reference, device)
