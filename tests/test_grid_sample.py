"""grid_sample: every backend against torch.nn.functional.grid_sample (Triton under the
interpreter on CPU, Triton and CUDA on a GPU): every mode/padding/align_corners combination,
grids inside, on and far outside [-1, 1], pixel centres, odd/size-1 shapes, strides, dtypes,
gradients, NaN grids, determinism, int64 indexing, bad input, custom-op registration."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton kernel module is imported

import mcc_fast  # noqa: E402
from mcc_fast.ops import grid_sample  # noqa: E402
from mcc_fast.reference import warp as reference  # noqa: E402
from kernel_helpers import CUDA_EMULATED, deterministic_algorithms  # noqa: E402
from kernel_helpers import require_backend as _require  # noqa: E402

HAS_GPU = torch.cuda.is_available()
DEV = torch.device("cuda" if HAS_GPU else "cpu")
KERNEL_BACKENDS = ["triton", pytest.param("cuda", marks=pytest.mark.gpu), CUDA_EMULATED]
MODES = ["bilinear", "nearest"]
PADDINGS = ["zeros", "border", "reflection"]
TOL = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}






def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=_gen(seed)).to(dtype).to(DEV)


def make_grid(n: int, ho: int, wo: int, seed: int = 0) -> torch.Tensor:
    """(n, ho, wo, 2) fp32 mixing inside [-1, 1], exactly +-1, just past +-1, far outside and huge."""
    g = _gen(seed)
    inside = torch.rand(n, ho, wo, 2, generator=g) * 2 - 1
    edge = torch.randint(0, 2, (n, ho, wo, 2), generator=g).float() * 2 - 1
    past = edge * (1 + torch.rand(n, ho, wo, 2, generator=g) * 0.2)
    far = (torch.rand(n, ho, wo, 2, generator=g) * 12 - 6)
    huge = edge * 37.25
    pick = torch.randint(0, 10, (n, ho, wo, 2), generator=g)
    grid = torch.where(pick < 5, inside, torch.where(pick < 6, edge, torch.where(pick < 7, past,
                       torch.where(pick < 9, far, huge))))
    return grid.to(DEV)


def _close(got, want, tol, what):
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
    scale = max(1.0, want.detach().abs().max().item()) if want.numel() else 1.0
    torch.testing.assert_close(got.detach().float().cpu(), want.detach().float().cpu(), atol=tol * scale,
                               rtol=tol, msg=lambda m: f"{what}: {m}")


def _reference_grads(x, grid, go, mode, padding, align):
    xr = x.detach().clone().requires_grad_(True)
    gr = grid.detach().clone().requires_grad_(True)
    out = reference.grid_sample(xr, gr, mode, padding, align)
    out.backward(go)
    return out.detach(), xr.grad, gr.grad


def _kernel_grads(x, grid, go, mode, padding, align, backend, deterministic=None):
    xk = x.detach().clone().requires_grad_(True)
    gk = grid.detach().clone().requires_grad_(True)
    out = grid_sample(xk, gk, mode, padding, align, backend=backend, deterministic=deterministic)
    out.backward(go)
    return out.detach(), xk.grad, gk.grad


# ----------------------------------------------------------------------------- forward + backward
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("mode", MODES)
def test_matches_torch_every_combination(backend, mode, padding, align):
    """Forward and both gradients; two shapes (batch 1 with H != W, batch 2 with odd sizes)."""
    _require(backend)
    for i, (n, c, h, w, ho, wo) in enumerate([(1, 3, 5, 8, 6, 7), (2, 4, 7, 3, 5, 3)]):
        x = _rand(n, c, h, w, seed=i)
        grid = make_grid(n, ho, wo, seed=10 + i)
        go = _rand(n, c, ho, wo, seed=20 + i)
        ref, rgx, rgg = _reference_grads(x, grid, go, mode, padding, align)
        out, gx, gg = _kernel_grads(x, grid, go, mode, padding, align, backend)
        _close(out, ref, TOL[torch.float32], "output")
        _close(gx, rgx, TOL[torch.float32], "grad x")
        _close(gg, rgg, TOL[torch.float32], "grad grid")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1, 1), (1, 2, 1, 5, 3, 2), (2, 1, 4, 1, 1, 4), (1, 3, 1, 1, 2, 3),
                                   (3, 2, 2, 9, 1, 1)])
def test_sizes_of_one_and_odd_sizes(backend, shape):
    _require(backend)
    n, c, h, w, ho, wo = shape
    x = _rand(n, c, h, w, seed=1)
    grid = make_grid(n, ho, wo, seed=2)
    go = _rand(n, c, ho, wo, seed=3)
    for mode, padding, align in [("bilinear", "zeros", False), ("bilinear", "reflection", True),
                                 ("bilinear", "border", False), ("nearest", "reflection", False),
                                 ("bilinear", "reflection", False)]:
        ref, rgx, rgg = _reference_grads(x, grid, go, mode, padding, align)
        out, gx, gg = _kernel_grads(x, grid, go, mode, padding, align, backend)
        _close(out, ref, 1e-4, f"output {mode} {padding} {align}")
        _close(gx, rgx, 1e-4, f"grad x {mode} {padding} {align}")
        _close(gg, rgg, 1e-4, f"grad grid {mode} {padding} {align}")


def _pixel_centre_grid(n, h, w, align, offset=0.0):
    """Grid whose samples land exactly on pixel centres (+ offset pixels); exact in fp32 for these sizes."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) + offset,
                            torch.arange(w, dtype=torch.float64) + offset, indexing="ij")
    if align:
        gx, gy = 2 * xs / (w - 1) - 1, 2 * ys / (h - 1) - 1
    else:
        gx, gy = (2 * xs + 1) / w - 1, (2 * ys + 1) / h - 1
    return torch.stack([gx, gy], -1).float().expand(n, h, w, 2).contiguous().to(DEV)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("align", [False, True])
def test_exactly_on_pixel_centres(backend, align):
    """Pixel centres give x back exactly; gradients there (a kink of bilinear) match torch's choice;
    nearest at exact half-pixel ties rounds half to even like torch."""
    _require(backend)
    h, w = (3, 5) if align else (2, 4)  # (size - 1) resp. size a power of two: exact coordinates
    x = _rand(2, 3, h, w, seed=4)
    grid = _pixel_centre_grid(2, h, w, align)
    go = _rand(2, 3, h, w, seed=5)
    for mode in MODES:
        for padding in PADDINGS:
            out, gx, gg = _kernel_grads(x, grid, go, mode, padding, align, backend)
            assert torch.equal(out.cpu(), x.cpu()), (mode, padding)
            ref, rgx, rgg = _reference_grads(x, grid, go, mode, padding, align)
            _close(gx, rgx, 1e-5, f"grad x {mode} {padding}")
            _close(gg, rgg, 1e-5, f"grad grid {mode} {padding}")
    half = _pixel_centre_grid(2, h, w, align, offset=0.5)
    for padding in PADDINGS:
        ref = F.grid_sample(x, half, mode="nearest", padding_mode=padding, align_corners=align)
        out = grid_sample(x, half, "nearest", padding, align, backend=backend)
        assert torch.equal(out.cpu(), ref.cpu()), padding


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_features_with_fp32_grid(backend, dtype):
    """fp16/bf16 x with an fp32 grid: computed in fp32, rounded once (the fp32 reference, cast)."""
    _require(backend)
    x = _rand(2, 5, 6, 7, seed=6, dtype=dtype)
    grid = make_grid(2, 4, 5, seed=7)
    go = _rand(2, 5, 4, 5, seed=8, dtype=dtype)
    for mode, padding, align in [("bilinear", "zeros", False), ("bilinear", "reflection", True),
                                 ("nearest", "border", True)]:
        ref, rgx, rgg = _reference_grads(x, grid, go, mode, padding, align)
        out, gx, gg = _kernel_grads(x, grid, go, mode, padding, align, backend)
        assert out.dtype == dtype and gx.dtype == dtype and gg.dtype == torch.float32
        _close(out, ref, TOL[dtype], "output")
        _close(gx, rgx, TOL[dtype], "grad x")
        _close(gg, rgg, 1e-4, "grad grid")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_half_grid_is_used_in_fp32(backend):
    _require(backend)
    x = _rand(1, 2, 5, 6, seed=9)
    grid = make_grid(1, 3, 4, seed=10).half()
    ref = reference.grid_sample(x, grid.float(), "bilinear", "zeros", False)
    _close(grid_sample(x, grid, backend=backend), ref, 1e-5, "output")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_channels_last_and_non_contiguous_inputs(backend):
    _require(backend)
    base = _rand(2, 4, 6, 10, seed=11)
    grid_base = make_grid(2, 5, 8, seed=12)
    cases = {
        "channels_last": (base.contiguous(memory_format=torch.channels_last), grid_base),
        "sliced x": (base[:, ::2, :, 1::2], grid_base),
        "permuted grid": (base, grid_base.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)),
        "sliced grid": (base, torch.cat([grid_base, grid_base], -1)[..., 1:3]),
    }
    for name, (x, grid) in cases.items():
        go = _rand(2, x.shape[1], 5, 8, seed=13)
        go_strided = torch.stack([go, go], -1)[..., 0]  # a non-contiguous incoming gradient
        for mode, padding, align in [("bilinear", "reflection", False), ("nearest", "zeros", True)]:
            ref, rgx, rgg = _reference_grads(x, grid, go, mode, padding, align)
            out, gx, gg = _kernel_grads(x, grid, go_strided, mode, padding, align, backend)
            _close(out, ref, 1e-4, f"{name} output")
            _close(gx, rgx, 1e-4, f"{name} grad x")
            _close(gg, rgg, 1e-4, f"{name} grad grid")
            if name == "channels_last":
                assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_gradient_for_one_input_only(backend):
    _require(backend)
    x = _rand(1, 3, 5, 5, seed=14)
    grid = make_grid(1, 4, 4, seed=15)
    go = _rand(1, 3, 4, 4, seed=16)
    _, rgx, rgg = _reference_grads(x, grid, go, "bilinear", "border", True)
    xr = x.clone().requires_grad_(True)
    grid_sample(xr, grid, "bilinear", "border", True, backend=backend).backward(go)
    _close(xr.grad, rgx, 1e-4, "grad x alone")
    gr = grid.clone().requires_grad_(True)
    grid_sample(x, gr, "bilinear", "border", True, backend=backend).backward(go)
    _close(gr.grad, rgg, 1e-4, "grad grid alone")


# ----------------------------------------------------------------------------- NaN / inf
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("mode", MODES)
def test_nan_and_inf_grid_behave_like_torch_cuda(backend, mode, padding):
    """Non-finite coordinates follow ATen's CUDA grid sampler. Forward: outside (zero) with zeros
    padding; with border/reflection NaN clips to pixel 0, +-inf to the edges (border) or pixel 0
    (reflection), as torch on every device. Backward: NaN (and +-inf under reflection) count as
    outside (no input gradient); border keeps +-inf at the edge; the grid gradient there is 0.
    (Torch on CPU differs: NaN outputs for bilinear/zeros, and a crash for NaN with border.)"""
    _require(backend)
    x = _rand(1, 2, 4, 5, seed=17)
    grid = make_grid(1, 3, 4, seed=18)
    grid[0, 0, 0, 0] = float("nan")
    grid[0, 1, 2, 1] = float("nan")
    grid[0, 2, 3] = float("nan")
    grid[0, 0, 1, 0] = float("inf")
    grid[0, 1, 0, 1] = -float("inf")
    bad = ~torch.isfinite(grid)
    bad_px = bad.any(-1)
    go = _rand(1, 2, 3, 4, seed=19)
    out, gx, gg = _kernel_grads(x, grid, go, mode, padding, False, backend)
    assert torch.isfinite(out).all() and torch.isfinite(gx).all() and torch.isfinite(gg).all()
    # the same problem with finite stand-ins: +-inf -> +-50 (same clipping), NaN -> outside
    clean = torch.where(torch.isnan(grid), torch.full_like(grid, -50.0), grid.clamp(-50.0, 50.0))
    if padding == "border":  # only NaN pixels drop out of the backward
        dropped = torch.isnan(grid).any(-1)
    else:
        dropped = bad_px
    go_kept = go * (~dropped)[:, None].to(go.dtype)
    ref, rgx, rgg = _reference_grads(x, clean, go_kept, mode, padding, False)
    fin = ~bad_px[:, None].expand_as(out)
    _close(out[fin], ref[fin], 1e-4, "finite pixels")
    _close(gx, rgx, 1e-4, "grad x")
    _close(gg[~dropped], rgg[~dropped], 1e-4, "grad grid where the pixel samples")
    assert torch.all(gg[dropped] == 0) and torch.all(gg[bad] == 0)
    if padding == "zeros":
        assert torch.all(out[~fin] == 0)
    else:
        want = F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=False)
        _close(out[~fin], want[~fin], 1e-4, "non-finite pixels, border/reflection")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("mode", MODES)
def test_nan_and_inf_grid_identical_to_torch_on_gpu(backend, mode, padding, align):
    _require(backend)
    x = _rand(2, 3, 6, 7, seed=20)
    grid = make_grid(2, 5, 4, seed=21)
    grid[0, 0, 0, 0] = float("nan")
    grid[0, 1, 1] = float("nan")
    grid[1, 2, 2, 1] = float("inf")
    grid[1, 3, 0, 0] = -float("inf")
    grid[1, 4, 3] = 1e20
    go = _rand(2, 3, 5, 4, seed=22)
    ref, rgx, rgg = _reference_grads(x, grid, go, mode, padding, align)
    out, gx, gg = _kernel_grads(x, grid, go, mode, padding, align, backend)
    _close(out, ref, 1e-4, "output")
    _close(gx, rgx, 1e-4, "grad x")
    torch.testing.assert_close(gg, rgg, atol=1e-3, rtol=1e-4, equal_nan=True)


# ----------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("mode", MODES)
def test_deterministic_input_gradient_is_bitwise_reproducible(backend, mode, monkeypatch):
    _require(backend)
    x = _rand(2, 3, 5, 6, seed=23)
    grid = (torch.rand(2, 9, 8, 2, generator=_gen(24)) * 0.6 - 0.3).to(DEV)  # many samples per input pixel
    go = _rand(2, 3, 9, 8, seed=25)
    _, rgx, rgg = _reference_grads(x, grid, go, mode, "zeros", False)
    runs = [_kernel_grads(x, grid, go, mode, "zeros", False, backend, deterministic=True) for _ in range(2)]
    assert torch.equal(runs[0][1], runs[1][1]) and torch.equal(runs[0][2], runs[1][2])
    _close(runs[0][1], rgx, 1e-5, "deterministic grad x")
    _close(runs[0][2], rgg, 1e-4, "deterministic grad grid")
    if backend == "triton":  # the global switch selects the sorted-gather path
        from mcc_fast.kernels import grid_sample as kgs

        calls = []
        real = kgs.gather_input_grad
        monkeypatch.setattr(kgs, "gather_input_grad", lambda *a, **k: calls.append(1) or real(*a, **k))
        with deterministic_algorithms():
            out = _kernel_grads(x, grid, go, mode, "zeros", False, backend)
        assert calls, "use_deterministic_algorithms(True) did not select the deterministic path"
        assert torch.equal(out[1], runs[0][1])
        calls.clear()
        _kernel_grads(x, grid, go, mode, "zeros", False, backend, deterministic=False)
        assert not calls


# ----------------------------------------------------------------------------- int64 indexing
@pytest.mark.parametrize("backend", ["triton"])
def test_int64_indexing_path(backend, monkeypatch):
    """The int64-offset kernels (chosen when a tensor spans >= 2^31 elements) on small tensors."""
    _require(backend)
    from mcc_fast.kernels import grid_sample as kgs

    monkeypatch.setattr(kgs, "needs_int64", lambda *tensors: True)
    x = _rand(2, 3, 5, 6, seed=26).contiguous(memory_format=torch.channels_last)
    grid = make_grid(2, 4, 3, seed=27)
    go = _rand(2, 3, 4, 3, seed=28)
    for mode, padding in [("bilinear", "reflection"), ("nearest", "zeros")]:
        ref, rgx, rgg = _reference_grads(x, grid, go, mode, padding, True)
        out, gx, gg = _kernel_grads(x, grid, go, mode, padding, True, backend)
        _close(out, ref, 1e-4, "output")
        _close(gx, rgx, 1e-4, "grad x")
        _close(gg, rgg, 1e-4, "grad grid")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_tensor_over_2_31_elements(backend):
    """x with 2^31 + 2^20 bf16 elements: samples from its far end are right."""
    _require(backend)
    if torch.cuda.get_device_properties(0).total_memory < 24 * 2**30:
        pytest.skip("needs 24 GiB of GPU memory")
    h, w = 2**16 + 16, 2**15
    x = torch.zeros(1, 1, h, w, dtype=torch.bfloat16, device=DEV)
    x[0, 0, -3:, -4:] = torch.arange(12, dtype=torch.bfloat16, device=DEV).view(3, 4) + 1
    ys = torch.tensor([h - 3, h - 2, h - 1], dtype=torch.float64)
    xs = torch.tensor([w - 4, w - 3, w - 2, w - 1], dtype=torch.float64)
    gy, gx = torch.meshgrid(2 * ys / (h - 1) - 1, 2 * xs / (w - 1) - 1, indexing="ij")
    grid = torch.stack([gx, gy], -1)[None].float().to(DEV)
    out = grid_sample(x, grid, "nearest", "zeros", True, backend=backend)
    assert torch.equal(out.float().cpu().view(3, 4), torch.arange(12.0).view(3, 4) + 1)
    xr = x.requires_grad_(True)
    grid_sample(xr, grid, "nearest", "zeros", True, backend=backend).sum().backward()
    assert xr.grad[0, 0, -3:, -4:].float().sum().item() == 12.0
    assert xr.grad.float().sum().item() == 12.0


# ----------------------------------------------------------------------------- torch path, errors, registration
def test_torch_backend_gradcheck_float64():
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    grid = (torch.rand(1, 3, 3, 2, dtype=torch.float64) * 2.4 - 1.2).requires_grad_(True)
    for padding in PADDINGS:
        assert torch.autograd.gradcheck(lambda a, g: grid_sample(a, g, "bilinear", padding, True, backend="torch"),
                                        (x, grid))


_CPU_BACKWARD_PROBE = """
import torch, torch.nn.functional as F
from mcc_fast.ops import grid_sample
g = torch.Generator().manual_seed(0)
x = torch.randn(1, 2, 4, 5, generator=g, requires_grad=True)
grid = torch.rand(1, 3, 4, 2, generator=g) * 2.4 - 1.2
grid[0, 1, 2, {axis}] = {value}
grid.requires_grad_(True)
out = grid_sample(x, grid, "bilinear", "{padding}", {align}, backend="torch")
go = torch.randn(out.shape, generator=g)
gx, gg = torch.autograd.grad(out, [x, grid], go)
# ATen's forward values; the gradient of every other pixel, the flagged one giving none
want = F.grid_sample(x.detach(), grid.detach(), padding_mode="{padding}", align_corners={align})
torch.testing.assert_close(out, want, equal_nan=True)
keep, clean = go.clone(), grid.detach().clone()
keep[0, :, 1, 2] = 0
clean[0, 1, 2] = 0
x2, c2 = x.detach().requires_grad_(True), clean.requires_grad_(True)
rgx, rgg = torch.autograd.grad(F.grid_sample(x2, c2, padding_mode="{padding}", align_corners={align}), [x2, c2], keep)
torch.testing.assert_close(gx, rgx)
torch.testing.assert_close(gg, rgg)
assert torch.all(gg[0, 1, 2] == 0)
"""


@pytest.mark.parametrize("padding,value,align,axis", [
    ("border", "float('nan')", False, 0), ("reflection", "float('nan')", True, 1),
    ("reflection", "float('inf')", False, 1), ("reflection", "-float('inf')", True, 0),
    ("reflection", "3e38", False, 0)])
def test_torch_backend_cpu_backward_survives_coordinates_aten_crashes_on(padding, value, align, axis):
    """ATen's CPU bilinear backward writes out of bounds (a segfault) for NaN with border padding and
    for NaN, +-inf or overflowing coordinates with reflection: the torch backend keeps ATen's forward
    and gives those pixels no gradient, as the kernels do. In a subprocess: a crash fails this test only."""
    code = _CPU_BACKWARD_PROBE.format(axis=axis, value=value, padding=padding, align=align)
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert res.returncode == 0, f"exit status {res.returncode}\n{res.stderr[-3000:]}"

def test_torch_backend_is_f_grid_sample():
    x = torch.randn(2, 3, 4, 5)
    grid = torch.rand(2, 3, 2, 2) * 2 - 1
    for mode in MODES:
        for padding in PADDINGS:
            want = F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=True)
            assert torch.equal(grid_sample(x, grid, mode, padding, True, backend="torch"), want)


def test_float64_auto_uses_torch_and_kernel_backends_refuse_it():
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64, device=DEV)
    grid = torch.zeros(1, 2, 2, 2, dtype=torch.float64, device=DEV)
    assert grid_sample(x, grid).dtype == torch.float64
    if mcc_fast.backends()["triton"].available:
        with pytest.raises(TypeError, match="float64"):
            grid_sample(x, grid, backend="triton")


def test_float64_grid_with_float32_features_runs_on_torch_and_kernel_backends_refuse_it():
    """Only the grid is float64: auto runs the (float64) reference, a kernel backend is a TypeError
    (the kernels would use the grid in float32 without a word)."""
    x = _rand(1, 2, 3, 3)
    grid = make_grid(1, 2, 2, seed=3).double()
    want = reference.grid_sample(x, grid, "bilinear", "zeros", False)
    torch.testing.assert_close(grid_sample(x, grid), want, rtol=0, atol=0)
    if mcc_fast.backends()["triton"].available:
        with pytest.raises(TypeError, match="float64"):
            grid_sample(x, grid, backend="triton")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_torch_backend_output_keeps_the_feature_dtype(dtype):
    """The torch backend computes in float32 and returns x's dtype, as the kernels do (docstring)."""
    x = _rand(1, 2, 4, 5, seed=4, dtype=dtype)
    grid = make_grid(1, 3, 3, seed=5)
    for mode in MODES:
        out = grid_sample(x, grid, mode, backend="torch")
        assert out.dtype == dtype, mode
        want = F.grid_sample(x.float(), grid, mode=mode, align_corners=False).to(dtype)
        assert torch.equal(out, want), mode


def test_bad_inputs_are_clear_errors():
    x = torch.randn(2, 3, 4, 5)
    grid = torch.zeros(2, 3, 3, 2)
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        grid_sample(x[0], grid)
    with pytest.raises(ValueError, match="grid must have 4 dimensions"):
        grid_sample(x, grid[0])
    with pytest.raises(ValueError, match="grid must end in 2"):
        grid_sample(x, torch.zeros(2, 3, 3, 3))
    with pytest.raises(ValueError, match="grid has batch 1 but x has batch 2"):
        grid_sample(x, grid[:1])
    with pytest.raises(TypeError, match="x must be a floating tensor"):
        grid_sample(x.long(), grid)
    with pytest.raises(TypeError, match="grid must be a floating tensor"):
        grid_sample(x, grid.int())
    with pytest.raises(TypeError, match="grid must be a torch.Tensor"):
        grid_sample(x, [[0.0, 0.0]])
    with pytest.raises(ValueError, match="mode must be one of"):
        grid_sample(x, grid, mode="bicubic")
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        grid_sample(x, grid, padding_mode="circular")
    with pytest.raises(TypeError, match="align_corners must be a bool"):
        grid_sample(x, grid, align_corners=1)
    with pytest.raises(ValueError, match="one device"):
        grid_sample(x, grid.to("meta"))
    with pytest.raises(ValueError, match="non-empty spatial"):
        grid_sample(torch.zeros(2, 3, 0, 5), grid)
    with pytest.raises(ValueError, match="backend must be"):
        grid_sample(x, grid, backend="metal")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_empty_batch_and_channels(backend):
    _require(backend)
    x = _rand(0, 3, 4, 4)
    out = grid_sample(x, torch.zeros(0, 2, 2, 2, device=DEV), backend=backend)
    assert out.shape == (0, 3, 2, 2)
    x = _rand(1, 0, 4, 4).requires_grad_(True)
    grid = torch.zeros(1, 2, 2, 2, device=DEV, requires_grad=True)
    out = grid_sample(x, grid, backend=backend)
    assert out.shape == (1, 0, 2, 2)
    out.sum().backward()
    assert torch.all(grid.grad == 0)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_custom_ops_pass_opcheck(backend):
    _require(backend)
    ops_warp = importlib.import_module("mcc_fast.ops.warp")  # the module (mcc_fast.ops.warp is also the op)

    x = _rand(1, 2, 4, 5, seed=29).requires_grad_(True)
    grid = make_grid(1, 3, 2, seed=30).requires_grad_(True)
    go = _rand(1, 2, 3, 2, seed=31)
    torch.library.opcheck(ops_warp._grid_sample_op, (x, grid, 0, 2, False, backend, False))
    torch.library.opcheck(ops_warp._grid_sample_op, (x.detach().contiguous(memory_format=torch.channels_last),
                                                     grid, 1, 0, True, backend, True),
                          test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(ops_warp._grid_sample_bwd_op, (go, x.detach(), grid.detach(), 0, 1, True, backend, False,
                                                         True, True),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_torch_compile_fullgraph(backend):
    _require(backend)
    x = _rand(1, 3, 5, 4, seed=32)
    grid = make_grid(1, 3, 3, seed=33)

    def step(a, g):
        return grid_sample(a, g, "bilinear", "reflection", True, backend=backend).square().sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    args = [x.clone().requires_grad_(True), grid.clone().requires_grad_(True)]
    loss = compiled(*args)
    grads = torch.autograd.grad(loss, args)
    eager = [x.clone().requires_grad_(True), grid.clone().requires_grad_(True)]
    want = torch.autograd.grad(step(*eager), eager)
    _close(loss, step(*eager), 1e-6, "loss")
    for g, e in zip(grads, want):
        _close(g, e, 1e-6, "grad")
