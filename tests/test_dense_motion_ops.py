"""mcc_fast.ops dense motion (keypoint_heatmaps, sparse_motions, dense_motion_input,
compose_flow): every kernel backend against the plain-PyTorch reference.

On a CPU machine the Triton kernels run under TRITON_INTERPRET=1 on small shapes and the
CUDA backend is reported skipped; on a GPU both run on CUDA tensors. The reference runs in
float64 on CPU: it is the oracle for values and for gradients (autograd through it).
"""
from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import pytest  # noqa: E402

import mcc_fast  # noqa: E402
from mcc_fast.ops import compose_flow, dense_motion_input, keypoint_heatmaps, sparse_motions  # noqa: E402
from mcc_fast.reference import dense_motion as ref  # noqa: E402
from kernel_helpers import CUDA_EMULATED, deterministic_algorithms  # noqa: E402
from kernel_helpers import require_backend as _require  # noqa: E402

HAS_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if HAS_GPU else "cpu")
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
BACKENDS = [pytest.param("triton"), pytest.param("cuda", marks=[pytest.mark.gpu, needs_gpu]), CUDA_EMULATED]




# ----------------------------------------------------------------------------- problems
def _problem(bs, num_kp, channels, h, w, *, jac="near", kp_range=1.0, seed=0):
    """float64 CPU inputs: source, kp_s, kp_d, jac_s, jac_d, mask logits."""
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    kp_s = (torch.rand(bs, num_kp, 2, generator=g, dtype=f64) * 2 - 1) * kp_range
    kp_d = (torch.rand(bs, num_kp, 2, generator=g, dtype=f64) * 2 - 1) * kp_range
    eye = torch.eye(2, dtype=f64)
    if jac is None:
        jac_s = jac_d = None
    else:
        scale = {"identity": 0.0, "near": 0.05, "far": 0.6}[jac]
        jac_s = eye + scale * torch.randn(bs, num_kp, 2, 2, generator=g, dtype=f64)
        jac_d = eye + scale * torch.randn(bs, num_kp, 2, 2, generator=g, dtype=f64)
        if jac == "far":  # keep them invertible but far from the identity (rotations, scales)
            jac_s = jac_s * 1.5
            jac_d = jac_d @ torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=f64)
    source = torch.randn(bs, channels, h, w, generator=g, dtype=f64)
    logits = 2 * torch.randn(bs, num_kp + 1, h, w, generator=g, dtype=f64)
    return source, kp_s, kp_d, jac_s, jac_d, logits


def _to(t, dtype=torch.float32, device=DEVICE, grad=False):
    if t is None:
        return None
    out = t.to(device=device, dtype=dtype)
    return out.requires_grad_(grad)


def _close(ours: torch.Tensor, expected: torch.Tensor, tol: float, what: str = "") -> None:
    """max |ours - expected| <= tol * max(1, max |expected|) (NaN where expected is NaN)."""
    ours = ours.detach().to("cpu", torch.float64)
    expected = expected.detach().to("cpu", torch.float64)
    assert ours.shape == expected.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(expected.shape)}"
    nan = torch.isnan(expected)
    assert torch.equal(torch.isnan(ours), nan), f"{what}: NaN pattern differs"
    scale = max(1.0, float(expected[~nan].abs().max())) if (~nan).any() else 1.0
    diff = float((ours - expected)[~nan].abs().max()) if (~nan).any() else 0.0
    assert diff <= tol * scale, f"{what}: max abs diff {diff:.3e} > {tol * scale:.3e}"


def _ref_grads(fn, inputs, grad_out):
    """Autograd through the float64 reference: gradients of <fn(*inputs), grad_out>."""
    leaves = [None if t is None else t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, [t for t in leaves if t is not None], grad_out)
    it = iter(grads)
    return out.detach(), [None if t is None else next(it) for t in leaves]


# Shapes: K = 1, 10, 15; H != W; B = 1, 2 (B = 16 below).
SHAPES = [(1, 1, 3, 6, 9), (2, 10, 3, 7, 5), (1, 15, 3, 8, 11)]
JACS = ["near", "far", None]


# ----------------------------------------------------------------------------- forward
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("variance", [0.01, 0.3])
def test_keypoint_heatmaps_match_reference(backend, shape, variance):
    _require(backend)
    bs, num_kp, _, h, w = shape
    _, kp, _, _, _, _ = _problem(*shape, kp_range=1.3)
    out = keypoint_heatmaps(_to(kp), (h, w), variance, backend=backend)
    assert out.dtype == torch.float32 and out.device.type == DEVICE.type
    _close(out, ref.keypoint_heatmaps(kp, (h, w), variance), 1e-6, "heatmaps")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("jac", JACS)
def test_sparse_motions_match_reference(backend, shape, jac):
    _require(backend)
    bs, num_kp, _, h, w = shape
    _, kp_s, kp_d, js, jd, _ = _problem(*shape, jac=jac, kp_range=1.4)
    out = sparse_motions(_to(kp_s), _to(kp_d), _to(js), _to(jd), size=(h, w), backend=backend)
    assert out.shape == (bs, num_kp + 1, h, w, 2)
    _close(out, ref.sparse_motions(kp_s, kp_d, js, jd, size=(h, w)), 1e-5, "sparse motions")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("jac", JACS)
@pytest.mark.parametrize("align_corners", [False, True])
def test_dense_motion_input_matches_reference(backend, shape, jac, align_corners):
    _require(backend)
    bs, num_kp, channels, h, w = shape
    source, kp_s, kp_d, js, jd, _ = _problem(*shape, jac=jac, kp_range=1.2)
    out = dense_motion_input(_to(source), _to(kp_s), _to(kp_d), _to(js), _to(jd), align_corners, backend=backend)
    assert out.shape == (bs, (num_kp + 1) * (channels + 1), h, w) and out.dtype == torch.float32
    expected = ref.dense_motion_input(source, kp_s, kp_d, js, jd, align_corners)
    _close(out, expected, 2e-5, "dense motion input")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("jac", JACS)
def test_compose_flow_matches_reference(backend, shape, jac):
    _require(backend)
    bs, _, _, h, w = shape
    _, kp_s, kp_d, js, jd, logits = _problem(*shape, jac=jac, kp_range=1.5)
    out = compose_flow(_to(logits), _to(kp_s), _to(kp_d), _to(js), _to(jd), backend=backend)
    assert out.shape == (bs, h, w, 2) and out.dtype == torch.float32
    _close(out, ref.compose_flow(logits, kp_s, kp_d, js, jd), 1e-5, "flow")


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_16(backend):
    _require(backend)
    num_kp = 15 if HAS_GPU else 3  # (the interpreter runs one program per group and sample)
    source, kp_s, kp_d, js, jd, logits = _problem(16, num_kp, 3, 5, 6, jac="near", seed=3)
    out = dense_motion_input(_to(source), _to(kp_s), _to(kp_d), _to(js), _to(jd), backend=backend)
    _close(out, ref.dense_motion_input(source, kp_s, kp_d, js, jd), 2e-5, "dense motion input B=16")
    flow = compose_flow(_to(logits), _to(kp_s), _to(kp_d), _to(js), _to(jd), backend=backend)
    _close(flow, ref.compose_flow(logits, kp_s, kp_d, js, jd), 1e-5, "flow B=16")


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.values[0] == "cuda"])
def test_cuda_launches_batches_past_the_grid_limit_in_chunks(backend, monkeypatch):
    """The CUDA grid holds at most 65535 samples: larger batches run as several launches
    (here the limit is lowered to 2 so that B = 5 is three launches: 2, 2, 1), forward and
    backward, with a strided source and channels-last logits."""
    _require(backend)
    from mcc_fast.cuda import dense_motion as cuda_dense_motion

    monkeypatch.setattr(cuda_dense_motion, "MAX_LAUNCH_BATCH", 2)
    source, kp_s, kp_d, js, jd, logits = _problem(5, 3, 3, 5, 6, jac="far", seed=11)
    inputs = [_to(t, grad=True) for t in (source, kp_s, kp_d, js, jd)]
    inputs[0] = _to(source).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    lg = _to(logits).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2).requires_grad_(True)
    gen = torch.Generator().manual_seed(12)

    heat = keypoint_heatmaps(inputs[1], (5, 6), backend=backend)
    _close(heat, ref.keypoint_heatmaps(kp_s, (5, 6)), 1e-5, "heatmaps B=5")
    motions = sparse_motions(*inputs[1:], size=(5, 6), backend=backend)
    _close(motions, ref.sparse_motions(kp_s, kp_d, js, jd, size=(5, 6)), 1e-5, "sparse motions B=5")

    out = dense_motion_input(*inputs, backend=backend)
    grad_out = torch.randn(out.shape, dtype=torch.float64, generator=gen)
    grads = torch.autograd.grad(out, inputs, _to(grad_out))
    expected_out, expected = _ref_grads(ref.dense_motion_input, (source, kp_s, kp_d, js, jd), grad_out)
    _close(out, expected_out, 2e-5, "dense motion input B=5")
    for name, g, exp in zip(["source", "kp_source", "kp_driving", "jac_source", "jac_driving"], grads, expected):
        _close(g, exp, 2e-5, f"d {name} B=5")

    flow = compose_flow(lg, *inputs[1:], backend=backend)
    grad_flow = torch.randn(flow.shape, dtype=torch.float64, generator=gen)
    grads = torch.autograd.grad(flow, [lg, *inputs[1:]], _to(grad_flow))
    expected_flow, expected = _ref_grads(ref.compose_flow, (logits, kp_s, kp_d, js, jd), grad_flow)
    _close(flow, expected_flow, 1e-5, "flow B=5")
    for name, g, exp in zip(["mask_logits", "kp_source", "kp_driving", "jac_source", "jac_driving"], grads, expected):
        _close(g, exp, 1e-5, f"flow d {name} B=5")


@pytest.mark.gpu
@needs_gpu
def test_cuda_runs_a_batch_larger_than_the_grid_limit():
    """B = 65537 samples (2x2 pixels, one keypoint): two launches on a real GPU."""
    _require("cuda")
    kp = torch.rand(65537, 1, 2, device="cuda") * 2 - 1
    heat = keypoint_heatmaps(kp, (2, 2), backend="cuda")
    _close(heat, ref.keypoint_heatmaps(kp.double().cpu(), (2, 2)), 1e-5, "heatmaps B=65537")
    logits = torch.randn(65537, 2, 2, 2, device="cuda")
    flow = compose_flow(logits, kp, kp.flip(0), backend="cuda")
    _close(flow, ref.compose_flow(logits.double().cpu(), kp.double().cpu(), kp.flip(0).double().cpu()), 1e-5,
           "flow B=65537")


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_inputs(backend):
    """channels-last / sliced source and permuted mask logits give the contiguous result."""
    _require(backend)
    source, kp_s, kp_d, js, jd, logits = _problem(2, 4, 5, 7, 6, seed=4)
    src = _to(source).contiguous(memory_format=torch.channels_last)[:, 1:4]  # non-contiguous slice
    out = dense_motion_input(src, _to(kp_s), _to(kp_d), _to(js), _to(jd), backend=backend)
    _close(out, ref.dense_motion_input(source[:, 1:4], kp_s, kp_d, js, jd), 2e-5, "strided source")
    lg = _to(logits).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # channels-last logits
    lg = lg.detach().requires_grad_(True)
    flow = compose_flow(lg, _to(kp_s), _to(kp_d), _to(js), _to(jd), backend=backend)
    _close(flow, ref.compose_flow(logits, kp_s, kp_d, js, jd), 1e-5, "strided logits")
    grad_out = torch.randn(flow.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (flow * _to(grad_out)).sum().backward()
    _, expected = _ref_grads(ref.compose_flow, (logits, kp_s, kp_d, js, jd), grad_out)
    _close(lg.grad, expected[0], 1e-5, "strided logits grad")


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape,jac,align_corners",
                         [((1, 1, 3, 6, 9), "near", False), ((2, 10, 3, 7, 5), "far", True),
                          ((1, 15, 2, 8, 11), None, False), ((2, 3, 3, 9, 8), "identity", False)])
def test_dense_motion_input_gradients(backend, shape, jac, align_corners):
    _require(backend)
    source, kp_s, kp_d, js, jd, _ = _problem(*shape, jac=jac, kp_range=1.1, seed=5)
    inputs = (source, kp_s, kp_d, js, jd)
    ours_in = [_to(t, grad=True) for t in inputs]
    out = dense_motion_input(*ours_in, align_corners, backend=backend)
    grad_out = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    grads = torch.autograd.grad(out, [t for t in ours_in if t is not None], _to(grad_out))
    _, expected = _ref_grads(lambda *a: ref.dense_motion_input(*a, align_corners), inputs, grad_out)
    names = ["source", "kp_source", "kp_driving", "jac_source", "jac_driving"]
    got = iter(grads)
    for name, t, exp in zip(names, ours_in, expected):
        if t is None:
            continue
        g = next(got)
        assert g.dtype == t.dtype and g.shape == t.shape
        _close(g, exp, 2e-5, f"d {name}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape,jac", [((1, 1, 3, 6, 9), "near"), ((2, 10, 3, 7, 5), "far"),
                                       ((1, 15, 3, 8, 11), None)])
def test_compose_flow_gradients(backend, shape, jac):
    _require(backend)
    _, kp_s, kp_d, js, jd, logits = _problem(*shape, jac=jac, kp_range=1.3, seed=6)
    inputs = (logits, kp_s, kp_d, js, jd)
    ours_in = [_to(t, grad=True) for t in inputs]
    out = compose_flow(*ours_in, backend=backend)
    grad_out = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    grads = torch.autograd.grad(out, [t for t in ours_in if t is not None], _to(grad_out))
    _, expected = _ref_grads(ref.compose_flow, inputs, grad_out)
    names = ["mask_logits", "kp_source", "kp_driving", "jac_source", "jac_driving"]
    got = iter(grads)
    for name, t, exp in zip(names, ours_in, expected):
        if t is not None:
            _close(next(got), exp, 1e-5, f"d {name}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("jac", ["far", None])
def test_heatmap_and_sparse_motion_gradients(backend, jac):
    _require(backend)
    _, kp_s, kp_d, js, jd, _ = _problem(2, 3, 1, 6, 7, jac=jac, kp_range=1.2, seed=7)
    gen = torch.Generator().manual_seed(4)
    kp = _to(kp_s, grad=True)
    heat = keypoint_heatmaps(kp, (6, 7), backend=backend)
    grad_heat = torch.randn(heat.shape, dtype=torch.float64, generator=gen)
    (d_kp,) = torch.autograd.grad(heat, kp, _to(grad_heat))
    _, (expected,) = _ref_grads(lambda k: ref.keypoint_heatmaps(k, (6, 7)), (kp_s,), grad_heat)
    _close(d_kp, expected, 1e-5, "heatmap d kp")

    inputs = (kp_s, kp_d, js, jd)
    ours_in = [_to(t, grad=True) for t in inputs]
    motions = sparse_motions(*ours_in, size=(6, 7), backend=backend)
    grad_m = torch.randn(motions.shape, dtype=torch.float64, generator=gen)
    grads = torch.autograd.grad(motions, [t for t in ours_in if t is not None], _to(grad_m))
    _, expected = _ref_grads(lambda *a: ref.sparse_motions(*a, size=(6, 7)), inputs, grad_m)
    for g, exp in zip(grads, [e for e in expected if e is not None]):
        _close(g, exp, 1e-5, "sparse motion grads")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variance", [0.05, 0.003])
def test_dense_motion_input_with_another_heatmap_variance(backend, variance):
    """The kernels take the heatmap variance as an argument: values and gradients follow it."""
    _require(backend)
    source, kp_s, kp_d, js, jd, _ = _problem(2, 3, 3, 7, 6, jac="near", seed=5)
    ours = [_to(t, grad=True) for t in (source, kp_s, kp_d, js, jd)]
    out = dense_motion_input(*ours, variance=variance, backend=backend)
    grad_out = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    grads = torch.autograd.grad(out, ours, _to(grad_out))
    want, expected = _ref_grads(lambda *a: ref.dense_motion_input(*a, variance=variance),
                                (source, kp_s, kp_d, js, jd), grad_out)
    _close(out, want, 2e-5, f"dense motion input, variance {variance}")
    for g, e in zip(grads, expected):
        _close(g, e, 2e-5, f"dense motion input grads, variance {variance}")
    kp = _to(kp_s, grad=True)  # keypoint_heatmaps' own backward follows the variance too
    heat = keypoint_heatmaps(kp, (7, 6), variance, backend=backend)
    grad_heat = torch.randn(heat.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (d_kp,) = torch.autograd.grad(heat, kp, _to(grad_heat))
    want, (expected_kp,) = _ref_grads(lambda k: ref.keypoint_heatmaps(k, (7, 6), variance), (kp_s,), grad_heat)
    _close(heat, want, 2e-5, f"heatmaps, variance {variance}")
    _close(d_kp, expected_kp, 2e-5, f"heatmap d kp, variance {variance}")


# ----------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 4e-3), (torch.bfloat16, 3e-2)])
def test_half_precision_inputs_compute_in_float32(backend, dtype, tol):
    _require(backend)
    shape = (2, 5, 3, 7, 6)
    source, kp_s, kp_d, js, jd, logits = _problem(*shape, jac="far", seed=8)
    # the oracle sees exactly the rounded low-precision values, in float64; gradients within tol / 2
    # (the kernels: ~10x under it; a backward computed in the half dtype: over it)
    source, kp_s, kp_d, js, jd, logits = (t.to(dtype).double() for t in (source, kp_s, kp_d, js, jd, logits))
    ours = [_to(t, dtype, grad=True) for t in (source, kp_s, kp_d, js, jd)]
    out = dense_motion_input(*ours, backend=backend)
    assert out.dtype == dtype
    _close(out, ref.dense_motion_input(source, kp_s, kp_d, js, jd), tol, "dense motion input")
    gen = torch.Generator().manual_seed(5)
    grad_out = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(dtype).double()
    grads = torch.autograd.grad(out, ours, _to(grad_out, dtype))
    _, expected = _ref_grads(ref.dense_motion_input, (source, kp_s, kp_d, js, jd), grad_out)
    for g, t, exp in zip(grads, ours, expected):
        assert g.dtype == dtype
        _close(g, exp, tol / 2, "dense motion input grad")

    lg = _to(logits, dtype, grad=True)
    kps = [_to(t, dtype, grad=True) for t in (kp_s, kp_d, js, jd)]
    flow = compose_flow(lg, *kps, backend=backend)
    assert flow.dtype == dtype
    _close(flow, ref.compose_flow(logits, kp_s, kp_d, js, jd), tol, "flow")
    grad_flow = torch.randn(flow.shape, generator=gen, dtype=torch.float64).to(dtype).double()
    grads = torch.autograd.grad(flow, [lg, *kps], _to(grad_flow, dtype))
    _, expected = _ref_grads(ref.compose_flow, (logits, kp_s, kp_d, js, jd), grad_flow)
    for g, exp in zip(grads, expected):
        _close(g, exp, tol / 2, "flow grad")

    # float32 geometry with half-precision logits (the model's mixed case): float32 out
    flow32 = compose_flow(_to(logits, dtype), _to(kp_s), _to(kp_d), _to(js), _to(jd), backend=backend)
    assert flow32.dtype == torch.float32
    _close(flow32, ref.compose_flow(logits, kp_s, kp_d, js, jd), 1e-5, "flow, fp32 geometry")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("offset", [1e4, -3e4])
def test_compose_flow_gradients_with_large_logits(backend, offset):
    """Softmax is shift-invariant: logits of 1e4 + O(1) give the gradients of the O(1) logits to
    float32 accuracy, as the float32 reference does (the backward recomputed the softmax from a
    saved float32 log-sum-exp, whose rounding at 1e4 is 5e-4: that relative error in every p_g)."""
    _require(backend)
    _, kp_s, kp_d, js, jd, logits = _problem(1, 3, 1, 6, 7, jac="near", seed=11)
    logits = (logits + offset).float().double()  # the oracle sees the float32 logits
    ours = [_to(t, grad=True) for t in (logits, kp_s, kp_d, js, jd)]
    flow = compose_flow(*ours, backend=backend)
    grad_flow = torch.randn(flow.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    grads = torch.autograd.grad(flow, ours, _to(grad_flow))
    want, expected = _ref_grads(ref.compose_flow, (logits, kp_s, kp_d, js, jd), grad_flow)
    _close(flow, want, 1e-5, "flow, large logits")
    for g, e, name in zip(grads, expected, ("logits", "kp_s", "kp_d", "jac_s", "jac_d")):
        _close(g, e, 1e-5, f"{name} grad, large logits")


# ----------------------------------------------------------------------------- singular jacobians
@pytest.mark.parametrize("backend", BACKENDS)
def test_singular_jacobian_gives_inf_nan_like_the_division(backend):
    """det(J_d) = 0 exactly: that keypoint's motion is inf/nan, never an error or a hang.

    compose_flow is non-finite exactly where the float32 reference is; dense_motion_input's
    deformed channels of that group are NaN (a non-finite sample position gives NaN, as
    grid_sample does on CPU), the heatmap channels and every other group and sample match.
    """
    _require(backend)
    source, kp_s, kp_d, js, jd, logits = _problem(2, 3, 3, 6, 7, jac="near", seed=9)
    jd[0, 1] = torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=torch.float64)  # det = 0
    f32 = [t.float() for t in (source, kp_s, kp_d, js, jd, logits)]
    source, kp_s, kp_d, js, jd, logits = f32

    flow = compose_flow(_to(logits), _to(kp_s), _to(kp_d), _to(js), _to(jd), backend=backend)
    expected = ref.compose_flow(logits, kp_s, kp_d, js, jd)
    assert not torch.isfinite(expected[0]).any()
    assert torch.equal(torch.isfinite(flow).cpu(), torch.isfinite(expected))
    _close(flow[1], expected[1], 1e-5, "unaffected sample")

    out = dense_motion_input(_to(source), _to(kp_s), _to(kp_d), _to(js), _to(jd), backend=backend)
    expected = ref.dense_motion_input(source, kp_s, kp_d, js, jd)  # CPU grid_sample: NaN too
    group = slice(2 * 4 + 1, 2 * 4 + 4)  # deformed channels of group 2 (keypoint 1)
    assert torch.isnan(out[0, group]).all()
    _close(out, expected, 2e-5, "dense motion input with a singular jacobian")

    # backward: no crash; the healthy sample's gradients still match
    ours = [_to(t, grad=True) for t in (logits, kp_s, kp_d, js, jd)]
    flow = compose_flow(*ours, backend=backend)
    grad_flow = torch.ones(flow.shape, dtype=torch.float32)
    grads = torch.autograd.grad(flow, ours, _to(grad_flow))
    _, exp = _ref_grads(ref.compose_flow, (logits, kp_s, kp_d, js, jd), grad_flow)
    for g, e in zip(grads, exp):
        _close(g[1], e[1], 1e-5, "healthy sample's gradient")
    assert not torch.isfinite(grads[4][0, 1]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_keypoint_in_dense_motion_input_as_documented(backend):
    """A NaN source keypoint: the forward has the reference's NaN pattern; in the backward its
    non-finite sampling positions contribute nothing (ops.dense_motion docstring), so kp_driving's
    gradient of that keypoint is finite (NaN on the CPU reference), kp_source's (through its
    NaN heatmap) is NaN, and every other keypoint's gradients match the reference."""
    _require(backend)
    source, kp_s, kp_d, js, jd, _ = (None if t is None else t.float() for t in _problem(1, 3, 2, 5, 6, seed=12))
    kp_s[0, 1, 0] = float("nan")
    ours = [_to(t, grad=True) for t in (source, kp_s, kp_d, js, jd)]
    out = dense_motion_input(*ours, backend=backend)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(6))
    grads = torch.autograd.grad(out, ours, _to(grad_out))
    want, expected = _ref_grads(ref.dense_motion_input, (source, kp_s, kp_d, js, jd), grad_out)
    _close(out, want, 2e-5, "dense motion input, NaN keypoint")
    assert torch.isnan(grads[1][0, 1]).all() and torch.isnan(expected[2][0, 1]).all()
    assert torch.isfinite(grads[2][0, 1]).all()
    for g, e in zip(grads[1:], expected[1:]):
        _close(g[:, [0, 2]], e[:, [0, 2]], 2e-5, "other keypoints' gradients")


# ----------------------------------------------------------------------------- golden fixture
@pytest.mark.parametrize("backend", BACKENDS)
def test_reproduces_official_recorded_dense_motion(backend):
    """The official run's recorded keypoints -> its sparse motions, heatmaps and flow."""
    _require(backend)
    from golden import recorded, tolerance

    rec = recorded()
    # the interpreter is slow: on CPU the per-group maps are checked on the first sample only
    n = rec["infer.kp_source.value"].shape[0] if HAS_GPU else 1

    def check(name, ours):
        expected = rec[name][:n].float()
        assert ours.shape == expected.shape, f"{name}: shape {tuple(ours.shape)} != {tuple(expected.shape)}"
        diff = float((ours.detach().float().cpu() - expected).abs().max())
        assert diff <= tolerance(expected), f"{name}: max abs diff {diff:.3e} > {tolerance(expected):.3e}"

    kp_s = _to(rec["infer.kp_source.value"].float())
    kp_d = _to(rec["infer.kp_driving.value"].float())
    js = _to(rec["infer.kp_source.jacobian"].float())
    jd = _to(rec["infer.kp_driving.jacobian"].float())
    size = tuple(rec["infer.dm.mask"].shape[2:])
    check("infer.dm.sparse_motion", sparse_motions(kp_s[:n], kp_d[:n], js[:n], jd[:n], size=size, backend=backend))
    check("infer.dm.driving_kp_heatmap", keypoint_heatmaps(kp_d[:n], size, backend=backend))
    # softmax(log(mask)) = mask (it sums to 1 over the groups): the flow composition alone
    n = rec["infer.kp_source.value"].shape[0]
    logits = _to(rec["infer.dm.mask"].float().log())
    check("infer.dm.deformation", compose_flow(logits, kp_s, kp_d, js, jd, backend=backend))


# ----------------------------------------------------------------------------- registration
@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_ops_pass_opcheck(backend):
    """Schema, fake-tensor and autograd registration of every custom op."""
    _require(backend)
    from mcc_fast.ops import dense_motion as dm

    source, kp_s, kp_d, js, jd, logits = (_to(t) for t in _problem(1, 2, 2, 5, 4, seed=10))
    req = [t.clone().requires_grad_(True) for t in (source, kp_s, kp_d, js, jd, logits)]
    flow, stats = dm._compose_flow_op(logits, kp_s, kp_d, js, jd, backend)
    out = dm._dense_motion_input_op(source, kp_s, kp_d, js, jd, False, 0.01, backend)
    cases = [
        (dm._keypoint_heatmaps_op, (req[1], 5, 4, 0.01, backend)),
        (dm._sparse_motions_op, (req[1], req[2], req[3], req[4], 5, 4, backend)),
        (dm._sparse_motions_op, (req[1], req[2], None, None, 5, 4, backend)),
        (dm._dense_motion_input_op, (req[0], req[1], req[2], req[3], req[4], False, 0.01, backend)),
        (dm._dense_motion_input_op, (req[0], req[1], req[2], None, None, True, 0.02, backend)),
        (dm._compose_flow_op, (req[5], req[1], req[2], req[3], req[4], backend)),
        (dm._dense_motion_input_backward_op, (torch.ones_like(out), source, kp_s, kp_d, js, jd, False, 0.01, True,
                                              backend)),
        (dm._compose_flow_backward_op, (torch.ones_like(flow), logits, flow, stats, kp_s, kp_d, js, jd, backend)),
    ]
    for i, (op, args) in enumerate(cases):
        utils = ["test_schema", "test_autograd_registration", "test_faketensor"]
        if i in (3, 5):  # the two training-path ops: also autograd under AOT dispatch, dynamic shapes
            utils.append("test_aot_dispatch_dynamic")
        torch.library.opcheck(op, args, test_utils=tuple(utils))


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_fullgraph_forward_and_backward(backend):
    _require(backend)
    source, kp_s, kp_d, js, jd, logits = _problem(1, 3, 3, 6, 5, seed=11)

    def step(src, lg, a, b, c, d):
        x = dense_motion_input(src, a, b, c, d, backend=backend)
        flow = compose_flow(lg, a, b, c, d, backend=backend)
        return x.square().sum() + flow.sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    args = [_to(t, grad=True) for t in (source, logits, kp_s, kp_d, js, jd)]
    loss = compiled(*args)
    grads = torch.autograd.grad(loss, args)
    eager_args = [_to(t, grad=True) for t in (source, logits, kp_s, kp_d, js, jd)]
    eager_grads = torch.autograd.grad(step(*eager_args), eager_args)
    _close(loss, step(*eager_args), 1e-6, "compiled loss")
    for g, e in zip(grads, eager_grads):
        _close(g, e, 1e-6, "compiled grad")


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_torch_compile_dynamic_keeps_the_resolution_symbolic(backend):
    """dynamic=True: a new (H, W) reuses the graph (the size checks must not specialise H and W),
    and torch.export with dynamic H and W succeeds and runs at another resolution."""
    import torch._dynamo.testing

    _require(backend)
    counter = torch._dynamo.testing.CompileCounter()

    def step(src, lg, a, b):
        return dense_motion_input(src, a, b, backend=backend), compose_flow(lg, a, b, backend=backend)

    compiled = torch.compile(step, fullgraph=True, dynamic=True, backend=counter)
    for h, w in ((7, 9), (11, 10)):  # sizes that differ from every other dimension (no duck sizing)
        source, kp_s, kp_d, _, _, logits = (_to(t) for t in _problem(3, 4, 6, h, w, jac=None, seed=12))
        for got, want in zip(compiled(source, logits, kp_s, kp_d), step(source, logits, kp_s, kp_d)):
            _close(got, want, 1e-6, f"compiled at {(h, w)}")
    assert counter.frame_count == 1, f"recompiled for a new resolution ({counter.frame_count} graphs)"

    class Step(torch.nn.Module):
        def forward(self, src, lg, a, b):
            return step(src, lg, a, b)

    source, kp_s, kp_d, _, _, logits = (_to(t) for t in _problem(3, 4, 6, 7, 9, jac=None, seed=13))
    hh, ww = torch.export.Dim("H", min=2), torch.export.Dim("W", min=2)
    spatial = {2: hh, 3: ww}
    exported = torch.export.export(Step(), (source, logits, kp_s, kp_d),
                                   dynamic_shapes=(spatial, spatial, None, None))
    source, kp_s, kp_d, _, _, logits = (_to(t) for t in _problem(3, 4, 6, 8, 5, jac=None, seed=14))
    for got, want in zip(exported.module()(source, logits, kp_s, kp_d), step(source, logits, kp_s, kp_d)):
        _close(got, want, 1e-6, "exported at (8, 5)")


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_are_clear_errors():
    source, kp_s, kp_d, js, jd, logits = (_to(t, device="cpu") for t in _problem(2, 3, 3, 6, 5))
    with pytest.raises(ValueError, match="kp_driving"):
        compose_flow(logits, kp_s, kp_d[:, :2], js, jd)
    with pytest.raises(ValueError, match="kp_driving"):
        dense_motion_input(source, kp_s, kp_d[:, :2], js, jd)
    with pytest.raises(ValueError, match="jac_driving"):
        compose_flow(logits, kp_s, kp_d, js, jd[:, :2])
    with pytest.raises(ValueError, match="jac_source"):
        dense_motion_input(source, kp_s, kp_d, js[..., :1], jd)
    with pytest.raises(ValueError, match="both"):
        compose_flow(logits, kp_s, kp_d, js, None)
    with pytest.raises(ValueError, match="mask_logits.*K\\+1"):
        compose_flow(logits[:, :3], kp_s, kp_d, js, jd)
    with pytest.raises(ValueError, match="mask_logits"):
        compose_flow(logits[0], kp_s, kp_d, js, jd)
    with pytest.raises(ValueError, match="source"):
        dense_motion_input(source[:1], kp_s, kp_d, js, jd)
    with pytest.raises(ValueError, match="source"):
        dense_motion_input(source[..., :1], kp_s, kp_d, js, jd)
    with pytest.raises(ValueError, match="kp_source"):
        dense_motion_input(source, kp_s[..., :1], kp_d[..., :1])
    with pytest.raises(TypeError, match="kp_source"):
        compose_flow(logits, kp_s.long(), kp_d, js, jd)
    with pytest.raises(TypeError, match="mask_logits"):
        compose_flow(logits.numpy(), kp_s, kp_d, js, jd)
    with pytest.raises(ValueError, match="size"):
        keypoint_heatmaps(kp_s, (1, 5))
    with pytest.raises(ValueError, match="kp must hold at least one keypoint"):
        keypoint_heatmaps(kp_s[:, :0], (4, 5))
    with pytest.raises(ValueError, match="kp_source must hold at least one keypoint"):
        sparse_motions(kp_s[:, :0], kp_d[:, :0], size=(4, 5))
    with pytest.raises(ValueError, match="variance"):
        keypoint_heatmaps(kp_s, (4, 5), variance=0.0)
    with pytest.raises(ValueError, match="variance"):
        keypoint_heatmaps(kp_s, (4, 5), variance=True)
    for size in ((4.9, 5.9), "45", (4, 5, 6), 4, (True, 5), torch.tensor([4, 5])):
        with pytest.raises(ValueError, match="size must be a pair"):
            keypoint_heatmaps(kp_s, size)
    with pytest.raises(ValueError, match="size must be a pair"):
        sparse_motions(kp_s, kp_d, size=(4.0, 5))
    for flag in ("False", None, 0):
        with pytest.raises(TypeError, match="align_corners must be a bool"):
            dense_motion_input(source, kp_s, kp_d, js, jd, flag)
    with pytest.raises(ValueError, match="device"):
        compose_flow(logits, kp_s, kp_d.to("meta"), js, jd)
    with pytest.raises(ValueError, match="backend"):
        compose_flow(logits, kp_s, kp_d, js, jd, backend="numpy")
    with pytest.raises(RuntimeError, match="cuda"):
        compose_flow(logits, kp_s, kp_d, js, jd, backend="cuda")  # CPU tensors


def test_integer_like_sizes_are_accepted():
    np = pytest.importorskip("numpy")
    kp = _to(_problem(1, 2, 3, 5, 4)[1], device="cpu")
    want = keypoint_heatmaps(kp, (4, 5))
    torch.testing.assert_close(keypoint_heatmaps(kp, (np.int64(4), np.int32(5))), want, rtol=0, atol=0)
    torch.testing.assert_close(keypoint_heatmaps(kp, torch.Size([4, 5])), want, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["torch", *BACKENDS])
def test_output_dtypes_follow_the_documented_rule_for_mixed_inputs(backend):
    """sparse_motions: kp_source's dtype; compose_flow: promote(mask_logits, kp_source);
    dense_motion_input: source's dtype — on every backend, whatever the other inputs are."""
    _require(backend)
    source, kp_s, kp_d, js, jd, logits = _problem(1, 2, 3, 5, 4, seed=21)
    half = torch.float16
    assert sparse_motions(_to(kp_s, half), _to(kp_d), size=(4, 5), backend=backend).dtype == half
    assert compose_flow(_to(logits, half), _to(kp_s, half), _to(kp_d), _to(js), _to(jd),
                        backend=backend).dtype == half
    assert dense_motion_input(_to(source, half), _to(kp_s), _to(kp_d), _to(js), _to(jd),
                              backend=backend).dtype == half
    if backend == "torch":  # float64 jacobians run on the reference only
        out = sparse_motions(_to(kp_s), _to(kp_d), _to(js, torch.float64), _to(jd, torch.float64), size=(4, 5),
                             backend="torch")
        assert out.dtype == torch.float32



@pytest.mark.parametrize("backend", ["torch", *BACKENDS])
@pytest.mark.parametrize("js_dtype,jd_dtype", [(torch.float32, torch.float16), (torch.bfloat16, torch.float32)])
def test_jacobians_of_different_dtypes(backend, js_dtype, jd_dtype):
    """jac_source and jac_driving need not share a dtype (the kernels read both as float32)."""
    _require(backend)
    source, kp_s, kp_d, js, jd, logits = _problem(1, 2, 3, 5, 4, jac="far", seed=22)
    js, jd = js.to(js_dtype).double(), jd.to(jd_dtype).double()  # the oracle sees the rounded values
    args = (_to(kp_s), _to(kp_d), _to(js, js_dtype), _to(jd, jd_dtype))
    _close(sparse_motions(*args, size=(5, 4), backend=backend), ref.sparse_motions(kp_s, kp_d, js, jd, size=(5, 4)),
           1e-5, "sparse_motions")
    _close(compose_flow(_to(logits), *args, backend=backend), ref.compose_flow(logits, kp_s, kp_d, js, jd), 1e-5,
           "compose_flow")
    _close(dense_motion_input(_to(source), *args, backend=backend), ref.dense_motion_input(source, kp_s, kp_d, js, jd),
           1e-5, "dense_motion_input")

def test_float64_runs_the_reference_or_is_refused_by_the_kernels():
    source, kp_s, kp_d, js, jd, logits = _problem(1, 2, 3, 5, 4)
    out = compose_flow(logits, kp_s, kp_d, js, jd)  # auto: float64 stays on the reference
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref.compose_flow(logits, kp_s, kp_d, js, jd))
    if mcc_fast.backends()["triton"].available and not HAS_GPU:
        with pytest.raises(TypeError, match="float64"):
            dense_motion_input(source, kp_s, kp_d, js, jd, backend="triton")


def test_torch_backend_is_the_reference():
    source, kp_s, kp_d, js, jd, logits = _problem(1, 2, 3, 5, 4)
    torch.testing.assert_close(dense_motion_input(source, kp_s, kp_d, js, jd, backend="torch"),
                               ref.dense_motion_input(source, kp_s, kp_d, js, jd), rtol=0, atol=0)
    torch.testing.assert_close(compose_flow(logits, kp_s, kp_d, js, jd, backend="torch"),
                               ref.compose_flow(logits, kp_s, kp_d, js, jd), rtol=0, atol=0)


# ----------------------------------------------------------------------------- GPU only
@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_full_size_kernels_agree_with_reference_on_gpu(backend):
    _require(backend)
    source, kp_s, kp_d, js, jd, logits = _problem(4, 15, 3, 64, 64, jac="near", seed=12)
    ours = [_to(t, grad=True) for t in (source, kp_s, kp_d, js, jd)]
    out = dense_motion_input(*ours, backend=backend)
    _close(out, ref.dense_motion_input(source, kp_s, kp_d, js, jd), 2e-5, "dense motion input 64x64")
    grad_out = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    grads = torch.autograd.grad(out, ours, _to(grad_out))
    _, expected = _ref_grads(ref.dense_motion_input, (source, kp_s, kp_d, js, jd), grad_out)
    for g, e in zip(grads, expected):
        _close(g, e, 5e-5, "dense motion input grad 64x64")
    lg = _to(logits, grad=True)
    kps = [_to(t, grad=True) for t in (kp_s, kp_d, js, jd)]
    flow = compose_flow(lg, *kps, backend=backend)
    _close(flow, ref.compose_flow(logits, kp_s, kp_d, js, jd), 1e-5, "flow 64x64")
    grads = torch.autograd.grad(flow.sum(), [lg, *kps])
    ones = torch.ones(flow.shape, dtype=torch.float64)
    _, expected = _ref_grads(ref.compose_flow, (logits, kp_s, kp_d, js, jd), ones)
    for g, e in zip(grads, expected):
        _close(g, e, 5e-5, "flow grad 64x64")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_cuda_graph_capture_forward_and_backward(backend):
    _require(backend)
    source, kp_s, kp_d, js, jd, logits = (_to(t) for t in _problem(2, 15, 3, 64, 64, seed=13))
    kps = [t.clone().requires_grad_(True) for t in (kp_s, kp_d, js, jd)]
    lg = logits.clone().requires_grad_(True)

    def step():
        x = dense_motion_input(source, *kps, backend=backend)
        flow = compose_flow(lg, *kps, backend=backend)
        loss = x.square().mean() + flow.square().mean()
        return (flow.detach(), *torch.autograd.grad(loss, [lg, *kps]))

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            eager = step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = step()
    graph.replay()
    torch.cuda.synchronize()
    for s, e in zip(static, eager):
        torch.testing.assert_close(s, e, rtol=1e-5, atol=1e-6)


def test_source_gradient_alert_follows_the_deterministic_setting():
    """The alert's rule on any machine (the CUDA test below runs it for real): CUDA sources only;
    an error under use_deterministic_algorithms(True), a warning with warn_only, else nothing."""
    import types
    import warnings

    from mcc_fast.ops.dense_motion import _alert_source_grad_not_deterministic as alert

    on_cuda = types.SimpleNamespace(device=torch.device("cuda"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alert(on_cuda)  # deterministic algorithms off: silent
        with deterministic_algorithms():
            alert(torch.zeros(1))  # a CPU source: its backward is the reference's
            with pytest.raises(RuntimeError, match="deterministic"):
                alert(on_cuda)
            torch.use_deterministic_algorithms(True, warn_only=True)
            with pytest.warns(UserWarning, match="deterministic"):
                alert(on_cuda)


@pytest.mark.gpu
@needs_gpu
def test_source_gradient_alerts_under_deterministic_algorithms():
    _require("cuda")
    source, kp_s, kp_d, js, jd, _ = (_to(t) for t in _problem(1, 3, 3, 8, 8))
    src = source.clone().requires_grad_(True)
    kp = kp_s.clone().requires_grad_(True)
    with deterministic_algorithms():
        out = dense_motion_input(src, kp, kp_d, js, jd, backend="cuda")
        with pytest.raises(RuntimeError, match="deterministic"):
            out.sum().backward()
        # keypoint gradients alone are deterministic: allowed, and bitwise repeatable
        g1 = torch.autograd.grad(dense_motion_input(source, kp, kp_d, js, jd, backend="cuda").sum(), kp)[0]
        g2 = torch.autograd.grad(dense_motion_input(source, kp, kp_d, js, jd, backend="cuda").sum(), kp)[0]
        assert torch.equal(g1, g2)
