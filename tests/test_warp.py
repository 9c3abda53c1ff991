"""warp (resize flow + sample + occlusion) and warp_many (one source, M flows): every backend
against the plain-PyTorch chain (Triton under the interpreter on CPU, Triton and CUDA on a GPU):
flow/occlusion resolutions below, at and above the feature's, both align_corners, sizes of 1,
H != W, strides and channels-last, dtypes, gradients of every input, NaN flows, determinism,
int64 indexing, bad input, custom-op registration."""
from __future__ import annotations

import importlib
import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton kernel module is imported

import mcc_fast  # noqa: E402
from mcc_fast.ops import warp, warp_many  # noqa: E402
from mcc_fast.reference import warp as reference  # noqa: E402
from kernel_helpers import CUDA_EMULATED, deterministic_algorithms  # noqa: E402
from kernel_helpers import require_backend as _require  # noqa: E402

HAS_GPU = torch.cuda.is_available()
DEV = torch.device("cuda" if HAS_GPU else "cpu")
KERNEL_BACKENDS = ["triton", pytest.param("cuda", marks=pytest.mark.gpu), CUDA_EMULATED]
TOL = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}






def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=_gen(seed)).to(dtype).to(DEV)


def _flow(*shape, seed=0, spread=1.3):
    """Flow grids mostly inside [-1, 1], some outside (zeros padding)."""
    return ((torch.rand(*shape, generator=_gen(seed)) * 2 - 1) * spread).to(DEV)


def _occ(*shape, seed=0):
    return torch.rand(*shape, generator=_gen(seed)).to(DEV)


def _close(got, want, tol, what):
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
    scale = max(1.0, want.detach().abs().max().item()) if want.numel() else 1.0
    torch.testing.assert_close(got.detach().float().cpu(), want.detach().float().cpu(), atol=tol * scale,
                               rtol=tol, msg=lambda m: f"{what}: {m}")


def _grads(fn, inputs, go):
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in inputs]
    out = fn(*leaves)
    out.backward(go)
    return out.detach(), [t.grad if t is not None else None for t in leaves]


def _check_warp(x, flow, occ, align, backend, go=None, tol=None, deterministic=None):
    tol = tol or TOL[x.dtype]
    go = go if go is not None else _rand(*x.shape, seed=99, dtype=x.dtype)
    ref, rg = _grads(lambda a, f, o: reference.warp(a, f, o, align), (x, flow, occ), go)
    out, kg = _grads(lambda a, f, o: warp(a, f, o, align, backend=backend, deterministic=deterministic),
                     (x, flow, occ), go)
    assert out.dtype == x.dtype
    _close(out, ref, tol, "output")
    _close(kg[0], rg[0], tol, "grad x")
    _close(kg[1], rg[1], max(tol, 1e-4), "grad flow")
    if occ is not None:
        _close(kg[2], rg[2], max(tol, 1e-4), "grad occlusion")
    return out, kg


# ----------------------------------------------------------------------------- warp
# (feature H, W; flow h, w; occlusion h', w' or None)
WARP_SHAPES = [
    ((9, 7), (5, 4), (5, 4)),     # flow smaller than the feature (the model's 128/256 scales)
    ((6, 6), (6, 6), (6, 6)),     # same size: no resize (the model's 64 scale)
    ((5, 6), (5, 6), (2, 3)),     # flow at the feature's size, occlusion resized
    ((4, 5), (8, 8), (7, 3)),     # flow larger (the model's 32 scale), occlusion another size
    ((7, 3), (2, 5), None),       # H != W, no occlusion (the query warp)
    ((1, 1), (3, 3), (1, 1)),     # feature of size 1
    ((5, 6), (1, 1), (1, 2)),     # flow of size 1
]


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("align", [True, False])
@pytest.mark.parametrize("shapes", WARP_SHAPES, ids=lambda s: f"{s[0]}<-{s[1]}")
def test_warp_matches_resize_sample_multiply_chain(backend, shapes, align):
    _require(backend)
    (h, w), (fh, fw), occ_size = shapes
    for b in (1, 2):
        x = _rand(b, 3, h, w, seed=b)
        flow = _flow(b, fh, fw, 2, seed=10 + b)
        occ = _occ(b, 1, *occ_size, seed=20 + b) if occ_size else None
        _check_warp(x, flow, occ, align, backend)


def test_interpolate_to_the_same_size_is_the_identity():
    """The no-resize shortcut (reference and kernels) is exact: F.interpolate to the same size is the identity."""
    t = torch.randn(2, 3, 5, 7)
    for align in (True, False):
        assert torch.equal(F.interpolate(t, size=(5, 7), mode="bilinear", align_corners=align), t)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_warp_half_precision_features(backend, dtype):
    """fp16/bf16 features with fp32 flow and occlusion: fp32 maths, output rounded once."""
    _require(backend)
    x = _rand(2, 4, 8, 6, seed=3, dtype=dtype)
    _check_warp(x, _flow(2, 4, 3, 2, seed=4), _occ(2, 1, 4, 3, seed=5), True, backend)
    _check_warp(x, _flow(2, 8, 6, 2, seed=6), None, False, backend)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_warp_channels_last_and_strided_inputs(backend):
    _require(backend)
    x = _rand(2, 6, 7, 5, seed=7)
    flow = _flow(2, 4, 4, 2, seed=8)
    occ = _occ(2, 1, 3, 4, seed=9)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    out, _ = _check_warp(x_cl, flow, occ, True, backend)
    assert out.is_contiguous(memory_format=torch.channels_last)
    flow_t = flow.transpose(1, 2).contiguous().transpose(1, 2)  # permuted strides
    occ_s = torch.cat([occ, occ], 1)[:, 1:]  # offset view
    go = torch.stack([_rand(2, 3, 7, 5, seed=10)] * 2, -1)[..., 1]  # strided incoming gradient
    _check_warp(x[:, ::2], flow_t, occ_s, False, backend, go=go)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_warp_flow_and_occlusion_dtypes(backend):
    """float16/bfloat16 flows and occlusions are used in float32; gradients come back in their dtype."""
    _require(backend)
    x = _rand(1, 3, 6, 5, seed=11)
    flow = _flow(1, 3, 3, 2, seed=12).to(torch.bfloat16)
    occ = _occ(1, 1, 3, 3, seed=13).half()
    go = _rand(1, 3, 6, 5)
    out, grads = _grads(lambda a, f, o: warp(a, f, o, True, backend=backend), (x, flow, occ), go)
    ref, ref_grads = _grads(lambda a, f, o: reference.warp(a, f, o, True), (x, flow.float(), occ.float()), go)
    _close(out, ref, 1e-4, "output")
    assert grads[1].dtype == torch.bfloat16 and grads[2].dtype == torch.float16
    _close(grads[0], ref_grads[0], 1e-4, "grad x")  # float32 features: float32 gradient
    _close(grads[1], ref_grads[1], TOL[torch.bfloat16], "grad flow")  # float32 maths, rounded once
    _close(grads[2], ref_grads[2], TOL[torch.float16], "grad occlusion")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_warp_gradient_for_some_inputs_only(backend):
    _require(backend)
    x = _rand(2, 3, 6, 6, seed=14)
    flow = _flow(2, 3, 3, 2, seed=15)
    occ = _occ(2, 1, 3, 3, seed=16)
    go = _rand(2, 3, 6, 6, seed=17)
    _, rg = _grads(lambda a, f, o: reference.warp(a, f, o, True), (x, flow, occ), go)
    for i in range(3):
        inputs = [x, flow, occ]
        inputs[i] = inputs[i].clone().requires_grad_(True)
        warp(*inputs, True, backend=backend).backward(go)
        _close(inputs[i].grad, rg[i], 1e-4, f"grad of input {i} alone")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_warp_nan_flow_samples_nothing(backend):
    """A NaN flow value (after resizing) samples outside, as ATen's CUDA grid sampler: zero
    output there and no gradient through it; other pixels are exact."""
    _require(backend)
    x = _rand(1, 2, 5, 5, seed=18)
    flow = _flow(1, 5, 5, 2, seed=19)
    flow[0, 2, 3, 0] = float("nan")
    out = warp(x, flow, None, True, backend=backend)
    nan_px = torch.isnan(flow).any(-1)
    assert torch.all(out[0][:, nan_px[0]] == 0)
    clean = torch.where(torch.isnan(flow), torch.full_like(flow, -50.0), flow)
    _close(out, reference.warp(x, clean, None, True), 1e-4, "finite pixels")
    xr = x.clone().requires_grad_(True)
    fr = flow.clone().requires_grad_(True)
    warp(xr, fr, None, True, backend=backend).sum().backward()
    assert not torch.isnan(xr.grad).any() and torch.all(fr.grad[nan_px] == 0)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_warp_deterministic_bitwise(backend, monkeypatch):
    _require(backend)
    x = _rand(2, 3, 5, 4, seed=20)
    flow = _flow(2, 9, 8, 2, seed=21, spread=0.4)  # upsampled: many samples per input pixel
    occ = _occ(2, 1, 3, 3, seed=22)
    go = _rand(2, 3, 5, 4, seed=23)
    runs = [_grads(lambda a, f, o: warp(a, f, o, False, backend=backend, deterministic=True), (x, flow, occ), go)
            for _ in range(2)]
    for a, b in zip(runs[0][1], runs[1][1]):
        assert torch.equal(a, b)
    _check_warp(x, flow, occ, False, backend, go=go, deterministic=True)
    if backend == "triton":
        kw = importlib.import_module("mcc_fast.kernels.warp")
        calls = []
        real = kw.gather_input_grad
        monkeypatch.setattr(kw, "gather_input_grad", lambda *a, **k: calls.append(1) or real(*a, **k))
        with deterministic_algorithms():
            out = _grads(lambda a, f, o: warp(a, f, o, False, backend=backend), (x, flow, occ), go)
        assert calls and torch.equal(out[1][0], runs[0][1][0])


@pytest.mark.parametrize("backend", ["triton"])
def test_warp_int64_indexing_path(backend, monkeypatch):
    _require(backend)
    for name in ("mcc_fast.kernels.warp", "mcc_fast.kernels.warp_many"):
        monkeypatch.setattr(importlib.import_module(name), "needs_int64", lambda *tensors: True)
    x = _rand(2, 3, 6, 5, seed=24).contiguous(memory_format=torch.channels_last)
    _check_warp(x, _flow(2, 3, 4, 2, seed=25), _occ(2, 1, 2, 2, seed=26), True, backend)
    _check_warp_many(x, _flow(2, 3, 4, 3, 2, seed=27), False, backend)


@pytest.mark.cuda_emulated
def test_cuda_64_bit_index_kernels_emulated(monkeypatch):
    """The CUDA kernels' 64-bit index variants (chosen past 2^30 work items), forced here."""
    from mcc_fast.cuda.runtime import launch
    from mcc_fast.cuda.runtime import warp as runtime_warp

    monkeypatch.setattr(runtime_warp, "INDEX32_LIMIT", 0)
    used = []
    real = launch.Family.launch  # the emulated launch the cuda_emulated fixture installed
    monkeypatch.setattr(launch.Family, "launch", lambda self, kernel, *a, **k: used.append(kernel) or
                        real(self, kernel, *a, **k))
    x = _rand(2, 3, 6, 5, seed=24).contiguous(memory_format=torch.channels_last)
    _check_warp(x, _flow(2, 3, 4, 2, seed=25), _occ(2, 1, 2, 2, seed=26), True, "cuda", deterministic=True)
    _check_warp(x, _flow(2, 3, 4, 2, seed=28), None, False, "cuda", deterministic=False)
    _check_warp_many(x, _flow(2, 3, 4, 3, 2, seed=27), False, "cuda")
    assert used and all(k.endswith("_i64") for k in used)
    assert {"forward_i64", "backward_i64", "gather_i64", "resize_backward_i64"} <= set(used)


@pytest.mark.parametrize("backend", ["triton"])
def test_channel_split_path(backend, monkeypatch):
    """Small images on a GPU split each pixel block's channels over several programs (partial
    coordinate gradients summed after): forced here on every family, atomic and deterministic."""
    _require(backend)

    def split(programs, c, block_c, device):
        return -(-max(c, 1) // block_c), block_c

    for name in ("mcc_fast.kernels.grid_sample", "mcc_fast.kernels.warp", "mcc_fast.kernels.warp_many"):
        monkeypatch.setattr(importlib.import_module(name), "channel_split", split)
    x = _rand(2, 10, 5, 6, seed=60)  # 3 splits of 4 channels
    for det in (False, True):
        _check_warp(x, _flow(2, 3, 4, 2, seed=61), _occ(2, 1, 2, 3, seed=62), True, backend, deterministic=det)
        _check_warp_many(x, _flow(2, 3, 4, 3, 2, seed=63), False, backend, deterministic=det)
    grid = _flow(2, 3, 4, 2, seed=64)
    go = _rand(2, 10, 3, 4, seed=65)
    for mode in ("bilinear", "nearest"):
        ref, rg = _grads(lambda a, g: reference.grid_sample(a, g, mode, "reflection", False), (x, grid), go)
        out, kg = _grads(lambda a, g: mcc_fast.ops.grid_sample(a, g, mode, "reflection", False, backend=backend),
                         (x, grid), go)
        _close(out, ref, 1e-4, "grid_sample output")
        _close(kg[0], rg[0], 1e-4, "grid_sample grad x")
        _close(kg[1], rg[1], 1e-4, "grid_sample grad grid")


# ----------------------------------------------------------------------------- warp_many
def _check_warp_many(x, flows, align, backend, tol=None, deterministic=None):
    tol = tol or TOL[x.dtype]
    b, m, h, w, _ = flows.shape
    go = _rand(b, m, x.shape[1], h, w, seed=98, dtype=x.dtype)
    ref, rg = _grads(lambda a, f: reference.warp_many(a, f, align), (x, flows), go)
    out, kg = _grads(lambda a, f: warp_many(a, f, align, backend=backend, deterministic=deterministic),
                     (x, flows), go)
    assert out.dtype == x.dtype and out.shape == (b, m, x.shape[1], h, w)
    _close(out, ref, tol, "output")
    _close(kg[0], rg[0], tol, "grad x")
    _close(kg[1], rg[1], max(tol, 1e-4), "grad flows")
    return out, kg


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("shape", [(1, 3, 8, 8, 16, 8, 8), (2, 3, 5, 7, 4, 6, 3), (2, 1, 1, 1, 1, 2, 2),
                                   (1, 5, 4, 3, 3, 1, 1)],
                         ids=lambda s: "x".join(map(str, s)))
def test_warp_many_matches_expanded_grid_sample(backend, align, shape):
    """(B, C, H, W, M, h, w): dense motion's (1, 3, 64, 64) x 16 flows in miniature, odd and unit sizes."""
    _require(backend)
    b, c, h, w, m, fh, fw = shape
    _check_warp_many(_rand(b, c, h, w, seed=30), _flow(b, m, fh, fw, 2, seed=31), align, backend)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_warp_many_half_precision_and_channels_last(backend, dtype):
    _require(backend)
    x = _rand(2, 3, 6, 5, seed=32, dtype=dtype).contiguous(memory_format=torch.channels_last)
    _check_warp_many(x, _flow(2, 4, 5, 5, 2, seed=33), False, backend)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_warp_many_strided_flows(backend):
    _require(backend)
    x = _rand(2, 3, 6, 6, seed=34)
    flows = _flow(2, 4, 5, 3, 2, seed=35).transpose(1, 2).contiguous().transpose(1, 2)
    _check_warp_many(x[:, :, 1:, :-1], flows, True, backend)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_warp_many_deterministic_bitwise(backend):
    _require(backend)
    x = _rand(1, 3, 4, 4, seed=36)
    flows = _flow(1, 6, 7, 7, 2, seed=37, spread=0.5)
    go = _rand(1, 6, 3, 7, 7, seed=38)
    runs = [_grads(lambda a, f: warp_many(a, f, False, backend=backend, deterministic=True), (x, flows), go)
            for _ in range(2)]
    assert torch.equal(runs[0][1][0], runs[1][1][0]) and torch.equal(runs[0][1][1], runs[1][1][1])
    _check_warp_many(x, flows, False, backend, deterministic=True)


# ----------------------------------------------------------------------------- torch path, errors, registration
def test_torch_backend_gradcheck_float64():
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    flow = (torch.rand(1, 3, 3, 2, dtype=torch.float64) * 2.2 - 1.1).requires_grad_(True)
    occ = torch.rand(1, 1, 2, 3, dtype=torch.float64, requires_grad=True)
    for align in (True, False):
        assert torch.autograd.gradcheck(lambda a, f, o: warp(a, f, o, align, backend="torch"), (x, flow, occ))
    flows = (torch.rand(1, 3, 2, 3, 2, dtype=torch.float64) * 2.2 - 1.1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, f: warp_many(a, f, False, backend="torch"), (x, flows))


def test_float64_runs_on_the_reference():
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, device=DEV)
    out = warp(x, torch.zeros(1, 2, 2, 2, device=DEV), None)
    assert out.dtype == torch.float64
    assert warp_many(x, torch.zeros(1, 3, 2, 2, 2, device=DEV)).dtype == torch.float64
    if mcc_fast.backends()["triton"].available:
        with pytest.raises(TypeError, match="float64"):
            warp(x, torch.zeros(1, 2, 2, 2, device=DEV), backend="triton")


def test_bad_inputs_are_clear_errors():
    x = torch.randn(2, 3, 4, 5)
    flow = torch.zeros(2, 3, 3, 2)
    occ = torch.zeros(2, 1, 3, 3)
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        warp(x[0], flow)
    with pytest.raises(ValueError, match="flow must have 4 dimensions"):
        warp(x, flow[None])
    with pytest.raises(ValueError, match="flow must end in 2"):
        warp(x, torch.zeros(2, 3, 3, 1))
    with pytest.raises(ValueError, match="flow has batch 1 but x has batch 2"):
        warp(x, flow[:1])
    with pytest.raises(ValueError, match="occlusion must have shape"):
        warp(x, flow, torch.zeros(2, 2, 3, 3))
    with pytest.raises(ValueError, match="occlusion must have 4 dimensions"):
        warp(x, flow, occ[:, 0])
    with pytest.raises(TypeError, match="occlusion must be a floating tensor"):
        warp(x, flow, occ.bool())
    with pytest.raises(TypeError, match="x must be a floating tensor"):
        warp(x.int(), flow)
    with pytest.raises(ValueError, match="one device"):
        warp(x, flow, occ.to("meta"))
    with pytest.raises(ValueError, match="flow must have non-empty spatial"):
        warp(x, torch.zeros(2, 0, 3, 2))
    with pytest.raises(TypeError, match="align_corners must be a bool"):
        warp(x, flow, occ, "yes")
    with pytest.raises(TypeError, match="deterministic must be True, False or None"):
        warp(x, flow, occ, deterministic="no")
    with pytest.raises(ValueError, match="flows must have 5 dimensions"):
        warp_many(x, flow)
    with pytest.raises(ValueError, match="flows must end in 2"):
        warp_many(x, torch.zeros(2, 4, 3, 3, 3))
    with pytest.raises(ValueError, match="flows has batch 3 but x has batch 2"):
        warp_many(x, torch.zeros(3, 4, 3, 3, 2))
    with pytest.raises(ValueError, match="x must have non-empty spatial"):
        warp_many(torch.zeros(2, 3, 4, 0), torch.zeros(2, 4, 3, 3, 2))
    with pytest.raises(RuntimeError, match="backend"):
        warp_many(x, torch.zeros(2, 4, 3, 3, 2), backend="cuda" if not HAS_GPU else "nope")


def test_torch_backend_keeps_channels_last_like_the_kernels():
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    flow = torch.rand(2, 3, 3, 2) * 2 - 1
    occ = torch.rand(2, 1, 3, 3)
    grid = torch.rand(2, 6, 2, 2) * 2 - 1
    out = warp(x, flow, occ, backend="torch")
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, reference.warp(x.contiguous(), flow, occ, True))
    sampled = mcc_fast.ops.grid_sample(x, grid, backend="torch")
    assert sampled.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(sampled, F.grid_sample(x.contiguous(), grid, align_corners=False))
    assert mcc_fast.ops.grid_sample(x.contiguous(), grid, backend="torch").is_contiguous()


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_custom_ops_pass_opcheck(backend):
    _require(backend)
    ow = importlib.import_module("mcc_fast.ops.warp")
    x = _rand(1, 2, 4, 5, seed=40).requires_grad_(True)
    flow = _flow(1, 3, 2, 2, seed=41).requires_grad_(True)
    occ = _occ(1, 1, 2, 3, seed=42).requires_grad_(True)
    flows = _flow(1, 3, 2, 3, 2, seed=43).requires_grad_(True)
    torch.library.opcheck(ow._warp_op, (x, flow, occ, True, backend, False))
    torch.library.opcheck(ow._warp_op, (x, flow, None, False, backend, True),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
    torch.library.opcheck(ow._warp_many_op, (x, flows, False, backend, False))
    go = _rand(1, 2, 4, 5, seed=44)
    torch.library.opcheck(ow._warp_bwd_op, (go, x.detach(), flow.detach(), occ.detach(), True, backend, False,
                                            True, True, True), test_utils=("test_schema", "test_faketensor"))
    go_many = _rand(1, 3, 2, 2, 3, seed=45)
    torch.library.opcheck(ow._warp_many_bwd_op, (go_many, x.detach(), flows.detach(), False, backend, True, True,
                                                 True), test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_torch_compile_fullgraph(backend):
    _require(backend)
    x = _rand(1, 3, 6, 5, seed=46)
    flow = _flow(1, 3, 3, 2, seed=47)
    occ = _occ(1, 1, 3, 3, seed=48)
    flows = _flow(1, 2, 4, 4, 2, seed=49)

    def step(a, f, o, fs):
        return warp(a, f, o, True, backend=backend).square().sum() + warp_many(a, fs, False, backend=backend).sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    args = [t.clone().requires_grad_(True) for t in (x, flow, occ, flows)]
    loss = compiled(*args)
    grads = torch.autograd.grad(loss, args)
    eager = [t.clone().requires_grad_(True) for t in (x, flow, occ, flows)]
    want = torch.autograd.grad(step(*eager), eager)
    _close(loss, step(*eager), 1e-6, "loss")
    for g, e in zip(grads, want):
        _close(g, e, 1e-6, "grad")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_model_shapes_on_gpu(backend):
    """The frame's real warps: 4 scales (32..256) from a 64x64 flow and occlusion, bf16 channels-last
    features; dense motion's (1, 3, 64, 64) source x 16 flows."""
    _require(backend)
    flow = _flow(2, 64, 64, 2, seed=50, spread=1.05)
    occ = _occ(2, 1, 64, 64, seed=51)
    for size, c in ((32, 256), (64, 128), (128, 128), (256, 64)):
        x = _rand(2, c, size, size, seed=size, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        _check_warp(x, flow, occ, True, backend)
        _check_warp(x.float().contiguous(), flow, occ, True, backend, tol=2e-4)
    _check_warp_many(_rand(2, 3, 64, 64, seed=52), _flow(2, 16, 64, 64, 2, seed=53), False, backend)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_cuda_graph_capture(backend):
    _require(backend)
    x = _rand(1, 8, 16, 16, seed=54)
    flow = _flow(1, 8, 8, 2, seed=55)
    occ = _occ(1, 1, 8, 8, seed=56)
    warp(x, flow, occ, True, backend=backend)  # compile / warm up outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = warp(x, flow, occ, True, backend=backend)
    x.copy_(_rand(1, 8, 16, 16, seed=57))
    graph.replay()
    torch.cuda.synchronize()
    _close(out, reference.warp(x, flow, occ, True), 1e-4, "replayed output")
