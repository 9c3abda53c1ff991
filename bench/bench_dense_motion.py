"""Fused dense motion: dense_motion_input and compose_flow, each backend beside the torch
reference in the same run (SPEC shapes: 64x64, K = 15, C = 3, B = 1, 4, 16), forward and
forward + backward (gradients to mask logits, keypoints and jacobians: the training path).

Targets on a GPU: >= 5x the reference forward and fwd+bwd, peak memory <= 1/4 of the
reference's (`extra_info`: ratio_vs_reference, peak_bytes, reference_peak_bytes, GB/s).
"""
from __future__ import annotations

import pytest
import torch

import mcc_fast
from bench.conftest import kernel_backends
from bench.harness import assert_same, compare

K, C, SIZE = 15, 3, 64


def _inputs(bs: int, size: int, device: torch.device, grad: bool):
    g = torch.Generator(device="cpu").manual_seed(0)
    kp_s = torch.rand(bs, K, 2, generator=g) * 1.6 - 0.8
    kp_d = torch.rand(bs, K, 2, generator=g) * 1.6 - 0.8
    eye = torch.eye(2)
    jac_s = eye + 0.1 * torch.randn(bs, K, 2, 2, generator=g)
    jac_d = eye + 0.1 * torch.randn(bs, K, 2, 2, generator=g)
    source = torch.rand(bs, C, size, size, generator=g) * 2 - 1
    logits = torch.randn(bs, K + 1, size, size, generator=g)
    out = [t.to(device) for t in (source, logits, kp_s, kp_d, jac_s, jac_d)]
    if grad:
        for t in out[1:]:
            t.requires_grad_(True)
    return out


def _shape(small: bool, bs: int) -> tuple[int, int]:
    if small:
        if bs > 1:
            pytest.skip("large batch: GPU only")
        return 1, 16
    return bs, SIZE


def _dmi_bytes(bs: int, size: int, backward: bool) -> int:
    src = bs * C * size * size * 4
    out = bs * (K + 1) * (C + 1) * size * size * 4
    return src + out + (out + src if backward else 0)


def _flow_bytes(bs: int, size: int, backward: bool) -> int:
    logits = bs * (K + 1) * size * size * 4
    flow = bs * size * size * (2 * 4 + 2 * 4)  # flow + softmax statistics (max, sum)
    return logits + flow + (2 * logits + 2 * flow if backward else 0)


@pytest.mark.parametrize("bs", [1, 4, 16])
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def bench_dense_motion_input_forward(benchmark, device, small, backend, bs):
    if backend not in kernel_backends(device):
        pytest.skip(f"{backend} backend unavailable on {device}")
    bs, size = _shape(small, bs)
    source, _, kp_s, kp_d, jac_s, jac_d = _inputs(bs, size, device, grad=False)
    benchmark.group = f"dense_motion_input fwd B={bs} {size}x{size} K={K}"
    compare(
        benchmark,
        lambda: mcc_fast.ops.dense_motion_input(source, kp_s, kp_d, jac_s, jac_d, backend=backend),
        lambda: mcc_fast.ops.dense_motion_input(source, kp_s, kp_d, jac_s, jac_d, backend="torch"),
        device=device, bytes_moved=_dmi_bytes(bs, size, False),
        check=lambda out, ref: assert_same(out, ref, atol=1e-4),
    )


@pytest.mark.parametrize("bs", [1, 4, 16])
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def bench_dense_motion_input_fwd_bwd(benchmark, device, small, backend, bs):
    if backend not in kernel_backends(device):
        pytest.skip(f"{backend} backend unavailable on {device}")
    bs, size = _shape(small, bs)
    source, _, kp_s, kp_d, jac_s, jac_d = _inputs(bs, size, device, grad=True)
    params = [kp_s, kp_d, jac_s, jac_d]

    def step(name):
        out = mcc_fast.ops.dense_motion_input(source, *params, backend=name)
        return torch.autograd.grad(out.square().sum(), params)

    benchmark.group = f"dense_motion_input fwd+bwd B={bs} {size}x{size} K={K}"
    compare(benchmark, lambda: step(backend), lambda: step("torch"), device=device,
            bytes_moved=_dmi_bytes(bs, size, True), check=lambda out, ref: assert_same(out, ref, atol=5e-3, rtol=1e-4))


@pytest.mark.parametrize("bs", [1, 4, 16])
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def bench_compose_flow_forward(benchmark, device, small, backend, bs):
    if backend not in kernel_backends(device):
        pytest.skip(f"{backend} backend unavailable on {device}")
    bs, size = _shape(small, bs)
    _, logits, kp_s, kp_d, jac_s, jac_d = _inputs(bs, size, device, grad=False)
    benchmark.group = f"compose_flow fwd B={bs} {size}x{size} K={K}"
    compare(
        benchmark,
        lambda: mcc_fast.ops.compose_flow(logits, kp_s, kp_d, jac_s, jac_d, backend=backend),
        lambda: mcc_fast.ops.compose_flow(logits, kp_s, kp_d, jac_s, jac_d, backend="torch"),
        device=device, bytes_moved=_flow_bytes(bs, size, False),
        check=lambda out, ref: assert_same(out, ref, atol=1e-5),
    )


@pytest.mark.parametrize("bs", [1, 4, 16])
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def bench_compose_flow_fwd_bwd(benchmark, device, small, backend, bs):
    if backend not in kernel_backends(device):
        pytest.skip(f"{backend} backend unavailable on {device}")
    bs, size = _shape(small, bs)
    _, logits, kp_s, kp_d, jac_s, jac_d = _inputs(bs, size, device, grad=True)
    inputs = [logits, kp_s, kp_d, jac_s, jac_d]

    def step(name):
        flow = mcc_fast.ops.compose_flow(*inputs, backend=name)
        return torch.autograd.grad(flow.square().sum(), inputs)

    benchmark.group = f"compose_flow fwd+bwd B={bs} {size}x{size} K={K}"
    compare(benchmark, lambda: step(backend), lambda: step("torch"), device=device,
            bytes_moved=_flow_bytes(bs, size, True), check=lambda out, ref: assert_same(out, ref, atol=1e-3, rtol=1e-4))
