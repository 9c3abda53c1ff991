"""Nearest-code search and vector quantisation: every backend against the torch reference
and a brute-force float64 oracle (Triton under the interpreter on CPU, CUDA on a GPU)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mcc_fast
from mcc_fast.ops import Quantized, VQStats, nearest_code, quantize, quantize_multiscale
from mcc_fast.reference import vq as reference
from kernel_helpers import CUDA_EMULATED, deterministic_algorithms

HAS_GPU = torch.cuda.is_available()
DEV = torch.device("cuda" if HAS_GPU else "cpu")
KERNEL_BACKENDS = ["triton", pytest.param("cuda", marks=pytest.mark.gpu), CUDA_EMULATED]
ALL_BACKENDS = ["torch", *KERNEL_BACKENDS]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _rand(*shape, seed=0, scale=1.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype).to(DEV)


def _oracle(z: torch.Tensor, cb: torch.Tensor, start: int, num: int) -> torch.Tensor:
    """(N, num) float64 squared distances of the (already rounded) inputs."""
    z64 = z.detach().double().cpu()
    e64 = cb.detach()[start:start + num].double().cpu()
    return ((z64[:, None, :] - e64[None, :, :]) ** 2).sum(-1)


def _check_search(idx, dist, z, cb, start, num, rtol=2e-5):
    """idx/dist are a correct nearest-code answer for every row (float64 brute force)."""
    idx, dist = idx.cpu(), dist.cpu()
    n = z.shape[0]
    assert idx.dtype == torch.int64 and dist.dtype == torch.float32
    assert idx.shape == (n,) and dist.shape == (n,)
    if n == 0:
        return
    assert bool(((idx >= start) & (idx < start + num)).all()), idx
    table = _oracle(z, cb, start, num)
    z64 = z.detach().double().cpu()
    e64 = cb.detach()[start:start + num].double().cpu()
    scale = (z64.norm(dim=1) + e64.norm(dim=1).max()) ** 2
    tol = rtol * scale + 1e-300
    got = table[torch.arange(n), idx - start]
    best, arg = table.min(1)
    assert bool((got <= best + tol).all()), (got - best).max()
    if num > 1:
        second = table.topk(2, dim=1, largest=False).values[:, 1]
        clear = (second - best) > 2 * tol
        assert torch.equal((idx - start)[clear], arg[clear])
    assert bool((dist >= 0).all())
    torch.testing.assert_close(dist.double(), got, atol=float(tol.max()), rtol=1e-4)


# --------------------------------------------------------------------------- search


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d", [(67, 32), (131, 256), (45, 7), (33, 33)])
def test_nearest_code_matches_float64_oracle(backend, dtype, n, d):
    z = _rand(n, d, seed=1, dtype=dtype)
    cb = _rand(150, d, seed=2, dtype=dtype)
    for start, num in [(0, None), (0, 64), (17, 100), (149, 1)]:
        idx, dist = nearest_code(z, cb, num, start, backend=backend)
        _check_search(idx, dist, z, cb, start, num or 150 - start)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_every_prefix_and_start_matches_reference(backend):
    z = _rand(70, 16, seed=3)
    cb = _rand(40, 16, seed=4)
    for start in range(0, 40, 7):
        for num in (1, 2, 15, 16, 17, 40 - start):
            if start + num > 40:
                continue
            idx, dist = nearest_code(z, cb, num, start, backend=backend)
            ref_idx, ref_dist = nearest_code(z, cb, num, start, backend="torch")
            _check_search(idx, dist, z, cb, start, num)
            torch.testing.assert_close(dist, ref_dist, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_exact_ties_go_to_the_lowest_index(backend, dtype):
    d = 24
    base = _rand(10, d, seed=5, dtype=dtype)
    cb = torch.cat([base, base[3:4], base, base[3:4].repeat(70, 1)])  # many duplicates past a 64-code tile
    z = (base + 0.01 * _rand(10, d, seed=6)).to(dtype)
    idx, _ = nearest_code(z, cb, backend=backend)
    assert torch.equal(idx.cpu(), torch.arange(10)), idx
    idx, _ = nearest_code(z, cb, 60, 10, backend=backend)  # the first copies are outside the range
    expected = torch.arange(11, 21)
    expected[3] = 10
    assert torch.equal(idx.cpu(), expected), idx
    # a zero query is equidistant from e and -e: the lower index wins
    cb2 = torch.cat([_rand(1, d, seed=7, scale=5.0, dtype=dtype), base[:1], -base[:1], base[:1]])
    idx, dist = nearest_code(torch.zeros(3, d, dtype=dtype, device=DEV), cb2, backend=backend)
    assert torch.equal(idx.cpu(), torch.tensor([1, 1, 1]))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_zero_vectors(backend):
    d = 32
    cb = _rand(50, d, seed=8)
    cb[20] = 0
    z = torch.zeros(9, d, device=DEV)
    idx, dist = nearest_code(z, cb, backend=backend)
    assert torch.equal(idx.cpu(), torch.full((9,), 20))
    assert torch.equal(dist.cpu(), torch.zeros(9))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("scale", [1e17, 1e-15])
def test_huge_and_tiny_magnitudes(backend, scale):
    z = _rand(40, 32, seed=9, scale=scale)
    cb = _rand(90, 32, seed=10, scale=scale)
    # distances beyond float32 range: -1 (documented), never a finite guess
    idx, dist = nearest_code(z / scale * 1e30, cb / scale * 1e30, backend=backend)
    assert bool((idx == -1).all()) and bool(torch.isnan(dist).all())
    idx, dist = nearest_code(z, cb, backend=backend)
    _check_search(idx, dist, z, cb, 0, 90)
    # a large common offset (|z|^2 cancellation in the expanded formula): with fp32 products
    # ("ieee") the exact re-ranking recovers the true nearest code wherever the candidate
    # window holds it; with TF32 products (the default) the answer stays within the TF32
    # window, 2 * 2^-8 |z||e| (the candidates themselves are that coarse)
    off = _rand(1, 32, seed=11) * 100
    z2, cb2 = z / scale + off, cb / scale + off
    table = _oracle(z2, cb2, 0, 90)
    best, arg = table.min(1)
    z_norm, e_norm = z2.double().norm(dim=1).cpu(), cb2.double().norm(dim=1).max().cpu()
    tf32_idx, _ = nearest_code(z2, cb2, backend=backend)
    assert bool((table[torch.arange(40), tf32_idx.cpu()] <= best + 2 * 2.0 ** -8 * z_norm * e_norm).all())
    idx2, dist2 = nearest_code(z2, cb2, backend=backend, precision="ieee")
    top3 = table.topk(3, dim=1, largest=False).values
    tau = 2.0 ** -20 * (z_norm + e_norm) ** 2
    got = table[torch.arange(40), idx2.cpu()]
    assert bool((got <= best + 2 * tau).all())
    if backend != "torch":  # (the reference, without re-ranking, misses some of these)
        safe = ((top3[:, 2] - best) > 2 * tau) & ((top3[:, 1] - best) > 1e-4)
        assert torch.equal(idx2.cpu()[safe], arg[safe])
        torch.testing.assert_close(dist2.double().cpu(), got, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_non_contiguous_inputs(backend):
    big = _rand(60, 64, seed=12)
    z = big[:, ::2]  # stride (64, 2)
    cb = _rand(32, 80, seed=13).t()  # (80, 32) with strides (1, 80)
    idx, dist = nearest_code(z, cb, 70, 5, backend=backend)
    idx_c, dist_c = nearest_code(z.contiguous(), cb.contiguous(), 70, 5, backend=backend)
    assert torch.equal(idx, idx_c)
    torch.testing.assert_close(dist, dist_c)
    _check_search(idx, dist, z, cb, 5, 70)
    zq = quantize(big.view(6, 10, 64)[..., ::2], cb, 70, 5, backend=backend)
    zq_c = quantize(z.contiguous().view(6, 10, 32), cb.contiguous(), 70, 5, backend=backend)
    torch.testing.assert_close(zq.z_q, zq_c.z_q, rtol=0, atol=0)
    torch.testing.assert_close(zq.loss, zq_c.loss)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_empty_input(backend):
    cb = _rand(10, 8, seed=14)
    idx, dist = nearest_code(torch.zeros(0, 8, device=DEV), cb, backend=backend)
    assert idx.shape == (0,) and dist.shape == (0,)


def test_emulated_tf32_candidates_are_reranked_exactly():
    """TF32-rounded candidate distances + exact re-ranking (interpreter emulation of the
    tensor-core path): never worse than TF32 error allows, exact where the top-2 holds the
    true nearest code."""
    from mcc_fast.kernels import vq_search

    if DEV.type != "cpu":
        pytest.skip("the TF32 emulation flag is for the interpreter")
    d = 64
    base = _rand(100, d, seed=15)
    cb = torch.cat([base, base + 2e-3 * _rand(100, d, seed=16)])  # near-duplicate pairs: near-ties
    z = torch.cat([base, base[:50]]) + 0.5 * _rand(150, d, seed=17)
    res = vq_search.search([vq_search.Segment(z, 0, 200)], cb, fused=False, _emulate_tf32=True)
    table = _oracle(z, cb, 0, 200)
    best, arg = table.min(1)
    top3 = table.topk(3, dim=1, largest=False).values
    zn = z.double().norm(dim=1)
    en = cb.double().norm(dim=1).max()
    tau = 2.0 ** -8 * zn * en  # bound on the TF32 distance error (operands truncated to 10 bits)
    got = table[torch.arange(150), res.indices]
    assert bool((got <= best + 2 * tau).all())
    safe = (top3[:, 2] - best) > 2 * tau  # at most one rival inside the TF32 window
    clear = (top3[:, 1] - best) > 1e-6 * (zn * en)
    assert safe.sum() > 100
    assert torch.equal(res.indices[safe & clear], arg[safe & clear])
    # the re-ranking matters here: TF32 alone picks a different code on some rows
    zt = (z.view(torch.int32) & -8192).view(torch.float32).double()
    et = (cb.view(torch.int32) & -8192).view(torch.float32).double()
    approx_arg = ((et * et).sum(1)[None] - 2 * zt @ et.t()).argmin(1)
    assert bool((approx_arg != arg).any())


# --------------------------------------------------------------------------- non-finite


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_nan_and_inf_rows_get_minus_one_never_a_finite_index(backend):
    z = _rand(20, 16, seed=18)
    cb = _rand(30, 16, seed=19)
    z[3, 5] = float("nan")
    z[7] = float("nan")
    z[11, 0] = float("inf")
    z[12, 15] = -float("inf")
    bad = torch.zeros(20, dtype=torch.bool)
    bad[[3, 7, 11, 12]] = True
    idx, dist = nearest_code(z, cb, backend=backend)
    idx, dist = idx.cpu(), dist.cpu()
    assert torch.equal(idx[bad], torch.full((4,), -1))
    assert bool(torch.isnan(dist[bad]).all())
    _check_search(idx[~bad], dist[~bad], z[~bad.to(DEV)], cb, 0, 30)
    q = quantize(z, cb, backend=backend)
    assert torch.equal(q.indices.cpu(), idx)
    assert bool(torch.isnan(q.z_q[bad.to(DEV)]).all()) and bool(torch.isfinite(q.z_q[~bad.to(DEV)]).all())
    assert math.isnan(q.loss.item())
    assert q.stats.counts.sum().item() == 16


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_non_finite_codebook_rows_are_never_chosen(backend):
    z = _rand(25, 16, seed=20)
    cb = _rand(30, 16, seed=21)
    nearest, _ = nearest_code(z, cb, backend="torch")
    cb[nearest[0]] = float("nan")
    cb[nearest[1], 3] = float("inf")
    idx, dist = nearest_code(z, cb, backend=backend)
    finite = torch.isfinite(cb).all(1).cpu()
    assert bool(finite[idx.cpu()].all())
    keep = finite.nonzero().squeeze(1).to(DEV)
    # equal to searching only the finite rows
    idx_f, _ = nearest_code(z, cb[keep], backend="torch")
    assert torch.equal(idx.cpu(), keep.cpu()[idx_f.cpu()])
    # nothing finite to choose: -1 everywhere
    idx, dist = nearest_code(z, torch.full_like(cb, float("nan")), backend=backend)
    assert bool((idx == -1).all()) and bool(torch.isnan(dist).all())


# --------------------------------------------------------------------------- quantize forward


def _ref_quantize(z, cb, num, start, beta=0.25):
    return reference.quantize(z, cb, start, num if num is not None else cb.shape[0] - start, beta)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,k,num,start", [((2, 37, 32), 64, 48, 0), ((3, 5, 7, 256), 80, 40, 30),
                                                ((19, 9), 30, None, 4)])
def test_quantize_forward_matches_reference(backend, dtype, shape, k, num, start):
    z = _rand(*shape, seed=22, dtype=dtype)
    cb = _rand(k, shape[-1], seed=23, dtype=dtype)
    q = quantize(z, cb, num, start, beta=0.3, backend=backend)
    r = _ref_quantize(z, cb, num, start, beta=0.3)
    assert isinstance(q, Quantized) and isinstance(q.stats, VQStats)
    z_q, indices, loss, stats = q  # unpacks like a tuple
    assert z_q.shape == z.shape and z_q.dtype == dtype
    assert indices.shape == shape[:-1] and indices.dtype == torch.int64
    assert loss.shape == () and loss.dtype == torch.float32
    if torch.equal(indices, r.indices):
        # same rounding as the reference's z + (e - z): bitwise equal
        assert torch.equal(z_q, r.z_q)
    else:  # a near-tie resolved differently: both are nearest within tolerance
        _check_search(indices.reshape(-1), stats.sq_distances.reshape(-1), z.reshape(-1, shape[-1]), cb, start,
                      num or k - start)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(loss, r.loss.float(), **tol)
    assert torch.equal(stats.counts, r.stats.counts) or not torch.equal(indices, r.indices)
    assert stats.counts.dtype == torch.int64 and stats.counts.shape == ((num or k - start),)
    torch.testing.assert_close(stats.perplexity, r.stats.perplexity, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats.usage, r.stats.usage)
    torch.testing.assert_close(stats.sq_distances, r.stats.sq_distances, rtol=1e-4, atol=1e-4)
    assert stats.sq_distances.shape == shape[:-1]


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_quantize_values_are_codebook_rows_and_loss_formula(backend):
    z = _rand(4, 16, 32, seed=24)
    cb = _rand(64, 32, seed=25)
    q = quantize(z, cb, 32, 16, beta=0.25, backend=backend)
    e = cb[q.indices]
    torch.testing.assert_close(q.z_q, e, rtol=0, atol=1e-6)
    expected = 1.25 * ((e - z) ** 2).mean()
    torch.testing.assert_close(q.loss, expected)
    p = q.stats.counts.double() / z[..., 0].numel()
    torch.testing.assert_close(q.stats.perplexity.double(), torch.exp(-(p * torch.log(p + 1e-10)).sum()),
                               rtol=1e-5, atol=1e-5)
    assert q.stats.usage.item() == pytest.approx((q.stats.counts > 0).float().mean().item())


# --------------------------------------------------------------------------- gradients


def _grads(fn, z, cb, seed=0):
    z = z.detach().clone().requires_grad_()
    cb = cb.detach().clone().requires_grad_()
    q = fn(z, cb)
    g = _rand(*q.z_q.shape, seed=seed + 100, dtype=q.z_q.dtype)
    (q.z_q * g).sum().backward(retain_graph=True)
    gz1 = z.grad.clone()
    (q.loss * 1.7).backward()
    return q, gz1, z.grad, cb.grad


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d,k,num,start,beta", [(300, 32, 64, 40, 0, 0.25), (45, 256, 50, 30, 20, 0.6),
                                                  (77, 13, 20, None, 3, 1.3)])  # beta weighs the z gradient
def test_gradients_match_autograd_through_reference(backend, deterministic, dtype, n, d, k, num, start, beta):
    z = _rand(n, d, seed=26, dtype=dtype)
    cb = _rand(k, d, seed=27, dtype=dtype)
    q, gz1, gz, gcb = _grads(lambda a, b: quantize(a, b, num, start, beta, deterministic=deterministic,
                                                   backend=backend), z, cb)
    r, rgz1, rgz, rgcb = _grads(lambda a, b: _ref_quantize(a, b, num, start, beta), z, cb)
    assert torch.equal(q.indices, r.indices)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-3)
    assert gz.dtype == dtype and gcb.dtype == dtype
    torch.testing.assert_close(gz1, rgz1, rtol=0, atol=0)  # straight-through: the upstream gradient
    torch.testing.assert_close(gz.float(), rgz.float(), **tol)
    # float64 autograd of the same formula (the reference in low precision rounds more)
    r64, _, gz64, gcb64 = _grads(lambda a, b: _ref_quantize(a, b, num, start, beta), z.double(), cb.double())
    torch.testing.assert_close(gcb.double(), gcb64, rtol=1e-4 if dtype == torch.float32 else 2e-2,
                               atol=1e-6 if dtype == torch.float32 else 1e-3)
    torch.testing.assert_close(gcb.float(), rgcb.float(), **tol)
    outside = torch.ones(k, dtype=torch.bool)
    outside[start:start + (num or k - start)] = False
    assert bool((gcb[outside.to(DEV)] == 0).all())


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_deterministic_codebook_gradient_is_bitwise_reproducible(backend):
    z = _rand(700, 24, seed=28)
    cb = _rand(40, 24, seed=29)
    z[:500] = cb[3] + 1e-3 * _rand(500, 24, seed=30)  # one code over several 128-row chunks
    outs = []
    for _ in range(2):
        _, _, gz, gcb = _grads(lambda a, b: quantize(a, b, deterministic=True, backend=backend), z, cb)
        outs.append((gz, gcb))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    with deterministic_algorithms():
        _, _, gz, gcb = _grads(lambda a, b: quantize(a, b, backend=backend), z, cb)
    assert torch.equal(gcb, outs[0][1])
    _, _, _, gcb_atomic = _grads(lambda a, b: quantize(a, b, deterministic=False, backend=backend), z, cb)
    torch.testing.assert_close(gcb_atomic, gcb, rtol=1e-5, atol=1e-7)
    _, _, _, rgcb = _grads(lambda a, b: _ref_quantize(a, b, None, 0), z, cb)
    torch.testing.assert_close(gcb, rgcb, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_unused_outputs_and_partial_requires_grad(backend):
    z = _rand(50, 16, seed=31).requires_grad_()
    cb = _rand(20, 16, seed=32)
    q = quantize(z, cb, backend=backend)  # codebook needs no gradient
    q.loss.backward()
    z2 = z.detach().requires_grad_()
    _ref_quantize(z2, cb, None, 0).loss.backward()
    torch.testing.assert_close(z.grad, z2.grad)
    z.grad = None
    quantize(z, cb, backend=backend).z_q.sum().backward()  # loss unused
    assert torch.equal(z.grad, torch.ones_like(z))
    with torch.no_grad():
        q = quantize(z, cb, backend=backend)
    assert not q.z_q.requires_grad



@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_z_q_alone_gives_the_codebook_no_gradient(backend):
    """z_q = z + sg(e - z): with the loss unused the codebook's gradient is None on every backend
    (as autograd through the reference formula gives), never a tensor of zeros that an optimizer
    with momentum or weight decay would step on."""
    z, cb = _rand(30, 8, seed=37).requires_grad_(), _rand(12, 8, seed=38).requires_grad_()
    quantize(z, cb, backend=backend).z_q.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z)) and cb.grad is None
    q0, q1 = quantize_multiscale([z, z[:5]], cb, [6, 12], backend=backend)
    assert torch.autograd.grad(q0.z_q.sum() + q1.z_q.sum(), [z, cb], allow_unused=True, retain_graph=True)[1] is None
    assert torch.autograd.grad(q0.z_q.sum() + q1.loss, cb)[0].abs().sum() > 0  # the loss still reaches it


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_statistics_carry_no_gradient(backend):
    """perplexity, usage, counts and distances are constants on every backend (as the reference's)."""
    z, cb = _rand(30, 8, seed=33).requires_grad_(), _rand(12, 8, seed=34).requires_grad_()
    for q in (quantize(z, cb, backend=backend), *quantize_multiscale([z, z[:5]], cb, [6, 12], backend=backend)):
        assert q.z_q.requires_grad and q.loss.requires_grad
        assert not any(t.requires_grad for t in (q.indices, *q.stats))
        with pytest.raises(RuntimeError, match="does not require grad"):
            torch.autograd.grad(q.stats.perplexity, [z, cb])


class _NoGrad(torch.autograd.Function):
    """Sums its inputs; its backward gives them no gradient (None)."""

    @staticmethod
    def forward(ctx, *ts):
        return sum(t.float().sum() for t in ts)

    @staticmethod
    def backward(ctx, grad):
        return (None,) * len(ctx.needs_input_grad)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_backward_with_no_gradient_for_z_q_or_loss(backend):
    """Autograd may reach the op with no gradient for either output: nothing flows, no error."""
    z, cb = _rand(30, 8, seed=35).requires_grad_(), _rand(12, 8, seed=36).requires_grad_()
    q = quantize(z, cb, backend=backend)
    out = _NoGrad.apply(q.z_q, q.loss) + (z.detach() * 0).sum()
    out.backward()
    assert z.grad is None and cb.grad is None


# --------------------------------------------------------------------------- multi-scale


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("starts", [None, [0, 16, 32, 48]])
def test_multiscale_equals_separate_calls(backend, starts):
    cb = _rand(64, 32, seed=33)
    zs = [_rand(b, 8, 32, seed=40 + b) for b in (3, 1, 4, 2)]
    nums = [16, 32, 48, 64] if starts is None else [16] * 4
    st_ = starts or [0] * 4

    def run(multi):
        cbg = cb.detach().clone().requires_grad_()
        zg = [z.detach().clone().requires_grad_() for z in zs]
        if multi:
            outs = quantize_multiscale(zg, cbg, nums, starts, deterministic=True, backend=backend)
        else:
            outs = [quantize(z, cbg, n, s, deterministic=True, backend=backend) for z, n, s in zip(zg, nums, st_)]
        total = sum((o.z_q * (i + 1)).sum() + o.loss * (i + 2) for i, o in enumerate(outs))
        total.backward()
        return outs, [z.grad for z in zg], cbg.grad

    multi, gzm, gcbm = run(True)
    single, gzs, gcbs = run(False)
    for a, b in zip(multi, single):
        assert torch.equal(a.indices, b.indices)
        assert torch.equal(a.z_q, b.z_q)
        torch.testing.assert_close(a.loss, b.loss)
        assert torch.equal(a.stats.counts, b.stats.counts)
        torch.testing.assert_close(a.stats.perplexity, b.stats.perplexity)
    for a, b in zip(gzm, gzs):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(gcbm, gcbs, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_multiscale_more_than_four_inputs(backend):
    cb = _rand(40, 16, seed=50)
    zs = [_rand(10 + i, 16, seed=51 + i) for i in range(6)]
    outs = quantize_multiscale(zs, cb, [5, 10, 15, 20, 30, 40], backend=backend)
    for z, n, o in zip(zs, [5, 10, 15, 20, 30, 40], outs):
        r = _ref_quantize(z, cb, n, 0)
        assert torch.equal(o.indices, r.indices)
        torch.testing.assert_close(o.loss, r.loss)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_mixed_dtypes_promote(backend):
    z = _rand(30, 16, seed=60, dtype=torch.bfloat16).requires_grad_()
    cb = _rand(20, 16, seed=61).requires_grad_()
    q = quantize(z, cb, backend=backend)
    assert q.z_q.dtype == torch.float32
    q.loss.backward()
    assert z.grad.dtype == torch.bfloat16 and cb.grad.dtype == torch.float32
    z_ref = z.detach().float().requires_grad_()
    cb_ref = cb.detach().clone().requires_grad_()
    r = _ref_quantize(z_ref, cb_ref, None, 0)
    assert torch.equal(q.indices, r.indices)
    torch.testing.assert_close(q.loss, r.loss.detach(), rtol=1e-5, atol=1e-7)
    r.loss.backward()
    torch.testing.assert_close(z.grad.float(), z_ref.grad, rtol=1.6e-2, atol=1e-4)  # rounded once to bf16
    torch.testing.assert_close(cb.grad, cb_ref.grad, rtol=1e-5, atol=1e-7)


def test_float64_runs_on_the_torch_backend():
    z = torch.randn(10, 8, dtype=torch.float64, device=DEV)
    cb = torch.randn(12, 8, dtype=torch.float64, device=DEV)
    q = quantize(z, cb)
    assert q.loss.dtype == torch.float64 and q.z_q.dtype == torch.float64
    with pytest.raises(TypeError, match="float64"):
        nearest_code(z, cb, backend="triton")


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", ["nearest_code", "quantize"])
def test_bad_input_errors_name_the_argument(fn):
    op = getattr(mcc_fast.ops, fn)
    z, cb = torch.randn(5, 8), torch.randn(10, 8)
    cases = [
        (dict(z=z, codebook=cb[None]), ValueError, "codebook must have 2 dimensions"),
        (dict(z=z, codebook=cb[0]), ValueError, "codebook must have 2 dimensions"),
        (dict(z=torch.randn(5, 7), codebook=cb), ValueError, "d=7"),
        (dict(z=z, codebook=cb, num_codes=11), ValueError, "num_codes"),
        (dict(z=z, codebook=cb, num_codes=0), ValueError, "num_codes"),
        (dict(z=z, codebook=cb, start=8, num_codes=3), ValueError, "num_codes"),
        (dict(z=z, codebook=cb, start=10), ValueError, "start"),
        (dict(z=z, codebook=cb, start=-1), ValueError, "start"),
        (dict(z=z, codebook=cb, start=1.0), ValueError, "start"),
        (dict(z=z.long(), codebook=cb), TypeError, "z must be a floating tensor"),
        (dict(z=z, codebook=cb.int()), TypeError, "codebook must be a floating tensor"),
        (dict(z=z, codebook=cb.to("meta")), ValueError, "z on cpu, codebook on meta"),
        (dict(z=z.numpy(), codebook=cb), TypeError, "z must be a torch.Tensor"),
        (dict(z=z, codebook=cb, precision="fp8"), ValueError, "precision"),
        (dict(z=z, codebook=cb, backend="metal"), ValueError, "backend"),
    ]
    if fn == "nearest_code":
        cases.append((dict(z=z[None], codebook=cb), ValueError, "z must have 2 dimensions"))
    else:
        cases.append((dict(z=torch.tensor(1.0), codebook=cb), ValueError, "z must have at least 1 dimension"))
    for kwargs, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            op(**kwargs)


def test_multiscale_bad_input():
    cb = torch.randn(10, 8)
    with pytest.raises(ValueError, match="num_codes must have one entry per input"):
        quantize_multiscale([torch.randn(3, 8)] * 2, cb, [4])
    with pytest.raises(ValueError, match="starts must have one entry per input"):
        quantize_multiscale([torch.randn(3, 8)] * 2, cb, [4, 4], [0])
    with pytest.raises(ValueError, match=r"zs\[1\] has d=7"):
        quantize_multiscale([torch.randn(3, 8), torch.randn(3, 7)], cb, [4, 4])
    with pytest.raises(ValueError, match=r"num_codes\[1\]"):
        quantize_multiscale([torch.randn(3, 8)] * 2, cb, [4, 40])
    with pytest.raises(ValueError, match="at least one"):
        quantize_multiscale([], cb, [])


@pytest.mark.parametrize("backend", [None, "torch", "triton"])
def test_quantize_under_vmap_is_a_clear_error_and_nearest_code_maps(backend):
    """quantize's loss and statistics are over the whole batch: under vmap it says so (it failed deep
    in the reference or in the custom op's missing batching rule); nearest_code equals a loop."""
    z, cb = _rand(3, 5, 8, seed=1), _rand(10, 8, seed=2)
    with pytest.raises(NotImplementedError, match="quantize does not run under torch.func.vmap"):
        torch.func.vmap(lambda t: quantize(t, cb, backend=backend).z_q)(z)
    with pytest.raises(NotImplementedError, match="quantize_multiscale does not run under torch.func.vmap"):
        torch.func.vmap(lambda t: quantize_multiscale([t], cb, [None], backend=backend)[0].z_q)(z)
    idx, _ = torch.func.vmap(lambda t: nearest_code(t, cb, backend=backend))(z)
    assert torch.equal(idx, torch.stack([nearest_code(t, cb, backend=backend)[0] for t in z]))


# --------------------------------------------------------------------------- properties


@st.composite
def _problems(draw):
    n = draw(st.integers(0, 40))
    d = draw(st.integers(1, 20))
    k = draw(st.integers(1, 40))
    start = draw(st.integers(0, k - 1))
    num = draw(st.integers(1, k - start))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**31 - 1))
    dup = draw(st.booleans())
    return n, d, k, start, num, dtype, seed, dup


@settings(max_examples=50, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(_problems())
def test_property_search_and_quantize(problem):
    n, d, k, start, num, dtype, seed, dup = problem
    g = torch.Generator().manual_seed(seed)
    cb = torch.randn(k, d, generator=g).to(dtype)
    if dup and k > 1:
        cb[k // 2:] = cb[: k - k // 2].clone()  # duplicate rows: ties
    z = torch.randn(n, d, generator=g).to(dtype)
    if dup and n > 0:
        z[: n // 2] = cb[torch.randint(0, k, (n // 2,), generator=g)]  # exact hits
    z, cb = z.to(DEV), cb.to(DEV)
    idx, dist = nearest_code(z, cb, num, start, backend="triton")
    _check_search(idx, dist, z, cb, start, num)
    ref_idx, ref_dist = nearest_code(z, cb, num, start, backend="torch")
    if n:
        # equal up to near-ties (both nearest to float tolerance); exact ties agree
        table = _oracle(z, cb, start, num)
        exact_tie_rows = (table == table.min(1, keepdim=True).values).sum(1) > 1
        assert torch.equal(idx.cpu()[exact_tie_rows], ref_idx.cpu()[exact_tie_rows])
    q = quantize(z, cb, num, start, backend="triton")
    assert torch.equal(q.indices, idx)
    assert q.stats.counts.sum().item() == n
    if n:
        torch.testing.assert_close(q.z_q.float(), cb[idx].float(), rtol=0,
                                   atol=1e-6 if dtype == torch.float32 else 0.05)
        assert 1.0 - 1e-4 <= q.stats.perplexity.item() <= num * (1 + 1e-4)


# --------------------------------------------------------------------------- torch.library ops


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_torch_compile_fullgraph_forward_and_backward(backend):
    z, cb = _rand(21, 8, seed=80), _rand(12, 8, seed=81)

    def step(a, e):
        q = quantize(a, e, 9, 2, backend=backend)
        return (q.z_q.square().sum() + q.loss) * q.stats.perplexity.detach(), q.indices

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    args = [z.clone().requires_grad_(True), cb.clone().requires_grad_(True)]
    loss, idx = compiled(*args)
    grads = torch.autograd.grad(loss, args)
    eager = [z.clone().requires_grad_(True), cb.clone().requires_grad_(True)]
    want_loss, want_idx = step(*eager)
    assert torch.equal(idx, want_idx)
    torch.testing.assert_close(loss, want_loss)
    for g, w in zip(grads, torch.autograd.grad(want_loss, eager)):
        torch.testing.assert_close(g, w)
    found = torch.compile(lambda a, e: nearest_code(a, e, backend=backend), fullgraph=True, backend="aot_eager")
    assert torch.equal(found(z, cb)[0], nearest_code(z, cb, backend=backend)[0])


def test_custom_ops_pass_opcheck():
    from mcc_fast.ops import vq as ops_vq

    z, cb = _rand(7, 4, seed=82), _rand(6, 4, seed=83)
    torch.library.opcheck(ops_vq._nearest_code_op, (z, cb, 1, 4, "tf32", "triton"),
                          test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(ops_vq._quantize_op, (cb, [z, z[:3]], [0, 1], [6, 4], 0.25, "tf32", "triton", False),
                          test_utils=("test_schema", "test_faketensor"))
    idx = nearest_code(z, cb)[0]
    torch.library.opcheck(ops_vq._quantize_bwd_op, (cb, idx, [z], torch.ones_like(z), torch.ones(1, device=DEV),
                                                    [0], [6], 0.25, "triton", True, True),
                          test_utils=("test_schema", "test_faketensor"))



@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("grads", ["loss atomic", "loss sorted", "z_q only"])
def test_backward_op_fake_matches_a_transposed_codebook(backend, grads):
    """A codebook parameter stored (d, K) and passed transposed: the codebook gradient's fake
    (what torch.compile plans with) has the real one's strides (inductor asserted on them)."""
    from mcc_fast.ops import vq as ops_vq

    z, cb = _rand(7, 4, seed=84), _rand(4, 6, seed=85).t()
    idx = nearest_code(z, cb, backend=backend)[0]
    grad_loss = None if grads == "z_q only" else torch.ones(1, device=DEV)
    torch.library.opcheck(ops_vq._quantize_bwd_op, (cb, idx, [z], torch.ones_like(z), grad_loss, [0], [6], 0.25,
                                                    backend, grads == "loss sorted", True),
                          test_utils=("test_schema", "test_faketensor"))

def test_meta_tensors_give_output_shapes():
    z, cb = torch.empty(5, 3, 8, device="meta"), torch.empty(10, 8, device="meta")
    q = quantize(z, cb, 6, backend="triton")
    assert q.z_q.shape == (5, 3, 8) and q.indices.shape == (5, 3) and q.indices.dtype == torch.int64
    assert q.loss.shape == () and q.stats.counts.shape == (6,) and q.z_q.device.type == "meta"
    idx, dist = nearest_code(z[0], cb, backend="triton")
    assert idx.shape == (3,) and dist.dtype == torch.float32


# --------------------------------------------------------------------------- reviewed edge cases


def test_reference_unchosen_non_finite_codebook_row_stays_out_of_the_result():
    z, cb = _rand(6, 4, seed=84), _rand(8, 4, seed=85)
    z = torch.where(torch.arange(6, device=DEV)[:, None] < 3, z, -z)
    far = cb.clone()
    far[3] = float("nan")
    far[5, 1] = float("inf")
    cb_grad = far.clone().requires_grad_(True)
    q = quantize(z, cb_grad, backend="torch")
    assert not bool(((q.indices == 3) | (q.indices == 5)).any())
    assert bool(torch.isfinite(q.z_q).all()) and bool(torch.isfinite(q.loss))
    q.loss.backward()
    assert bool(torch.isfinite(cb_grad.grad).all())
    assert bool((cb_grad.grad[3] == 0).all()) and bool((cb_grad.grad[5] == 0).all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reference_loss_is_computed_in_float32(dtype):
    z = torch.full((4, 4), 300.0, device=DEV).to(dtype)
    cb = torch.zeros(3, 4, device=DEV).to(dtype)
    q = quantize(z, cb, backend="torch")
    assert q.loss.dtype == torch.float32
    assert q.loss.item() == pytest.approx(1.25 * 300.0 ** 2)  # fp16 would overflow: 1.125e5 > 65504
    z = _rand(30, 16, seed=86, dtype=dtype)
    cb = _rand(20, 16, seed=87, dtype=dtype)
    exact = quantize(z.float(), cb.float(), backend="torch").loss
    torch.testing.assert_close(quantize(z, cb, backend="torch").loss, exact, rtol=1e-6, atol=0)


def test_kernel_backends_run_in_the_promoted_dtype():
    z, cb = _rand(5, 8, seed=88), _rand(6, 8, seed=89, dtype=torch.float64)
    with pytest.raises(TypeError, match="float64"):
        nearest_code(z, cb, backend="triton")
    idx, _ = nearest_code(z, cb)  # auto: the torch backend in float64
    assert torch.equal(idx, nearest_code(z.double(), cb)[0])


def test_integer_like_arguments_and_strict_flags():
    np = pytest.importorskip("numpy")
    z, cb = _rand(9, 4, seed=90), _rand(10, 4, seed=91)
    want = nearest_code(z, cb, 4, 3)
    got = nearest_code(z, cb, np.int64(4), np.int32(3))
    assert torch.equal(got[0], want[0])
    assert torch.equal(quantize(z, cb, np.int64(4), np.int64(3)).indices, want[0])
    with pytest.raises(ValueError, match="num_codes"):
        nearest_code(z, cb, torch.tensor(4))
    with pytest.raises(TypeError, match="deterministic must be True, False or None"):
        quantize(z, cb, deterministic="no")
    with pytest.raises(TypeError, match="num_codes must be a list or tuple"):
        quantize_multiscale([z], cb, 3)
    with pytest.raises(TypeError, match="zs must be a list or tuple"):
        quantize_multiscale(z, cb, [3] * 9)  # a tensor is not a list of inputs


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_overflowing_norm_with_finite_products_is_documented(backend):
    """|z|^2 overflows float32 but |z||e| does not: the kernels still find the nearest code
    (distance +inf); the torch reference's expanded formula gives -1 / NaN (module docstring)."""
    z = torch.full((1, 4), 1e30, device=DEV)
    cb = _rand(5, 4, seed=92)
    idx, dist = nearest_code(z, cb, backend=backend)
    want = int((cb.double() @ torch.ones(4, dtype=torch.float64, device=DEV)).argmax())  # max z.e wins
    assert idx.tolist() == [want] and dist.tolist() == [float("inf")]
    ref_idx, ref_dist = nearest_code(z, cb, backend="torch")
    assert ref_idx.tolist() == [-1] and bool(torch.isnan(ref_dist).all())


def test_nearest_code_passes_no_gradient():
    """nearest_code is a search: its distances carry no graph back to z or the codebook (docstring),
    on the torch backend too (the reference's arithmetic would otherwise record one)."""
    z = torch.randn(6, 4, requires_grad=True)
    codebook = torch.randn(9, 4, requires_grad=True)
    backends = ["torch"] + (["triton"] if mcc_fast.backends()["triton"].available else [])
    for backend in backends:
        indices, distances = nearest_code(z, codebook, backend=backend)
        assert not distances.requires_grad and distances.grad_fn is None, backend
        assert indices.dtype == torch.int64
