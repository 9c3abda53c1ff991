"""mcc_fast.ops.group_norm_swish: the Triton kernel (interpreter on CPU) against the torch reference."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mcc_fast.ops import group_norm_swish
from mcc_fast.ops.group_norm import group_norm_swish_reference

pytest.importorskip("triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def _input(shape, dtype=torch.float32, channels_last=False, seed=0, offset=3.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 2 + offset).to(DEVICE, dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(shape[1], generator=g).to(DEVICE)
    b = torch.randn(shape[1], generator=g).to(DEVICE)
    return x, w, b


def _check(out, ref, dtype):
    assert out.shape == ref.shape and out.dtype == ref.dtype and out.stride() == ref.stride()
    scale = max(1.0, ref.float().abs().max().item())
    assert (out.float() - ref.float()).abs().max().item() <= TOL[dtype] * scale


@pytest.mark.parametrize("shape,groups", [((2, 8, 5, 7), 4), ((1, 12, 6, 6), 4), ((3, 6, 10), 3), ((2, 64, 4, 4), 32)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("swish", [True, False])
def test_triton_matches_the_reference(shape, groups, channels_last, swish):
    if channels_last and len(shape) != 4:
        pytest.skip("channels-last is 4-D only")
    x, w, b = _input(shape, channels_last=channels_last)
    out = group_norm_swish(x, groups, w, b, 1e-6, swish=swish, backend="triton")
    _check(out, group_norm_swish_reference(x, groups, w, b, 1e-6, swish), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_keep_their_dtype(dtype):
    x, w, b = _input((2, 16, 6, 6), dtype=dtype, channels_last=True)
    out = group_norm_swish(x, 8, w, b, backend="triton")
    _check(out, group_norm_swish_reference(x, 8, w, b), dtype)


def test_chunked_statistics_with_a_large_mean():
    """Several statistics chunks per sample (Chan's combination) and |mean| >> std."""
    from mcc_fast.kernels import group_norm_swish as kernel

    x, w, b = _input((2, 12, 9, 11), seed=3, offset=1000.0)
    out = kernel.group_norm_swish(x, w, b, 4, 1e-6, True, chunks=5, block_p=8)
    ref = group_norm_swish_reference(x.double(), 4, w.double(), b.double()).float()
    assert (out - ref).abs().max().item() <= 1e-3


def test_reference_is_group_norm_then_silu():
    x, w, b = _input((2, 8, 4, 4))
    expected = F.silu(F.group_norm(x, 4, w, b, 1e-6))
    assert torch.allclose(group_norm_swish(x, 4, w, b, backend="torch"), expected, atol=1e-6)
    assert torch.allclose(group_norm_swish(x, 4, backend="torch"), F.silu(F.group_norm(x, 4, eps=1e-6)), atol=1e-6)
    cl = x.contiguous(memory_format=torch.channels_last)
    assert group_norm_swish(cl, 4, w, b, backend="torch").is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("eps", [1e-6, 0.5])
def test_eps_matters_large_eps_and_a_constant_group(eps):
    x, w, b = _input((2, 8, 5, 7))
    x[:, :2] = 1.25  # group 0 constant: variance 0, so 1/sqrt(eps) scales it
    _check(group_norm_swish(x, 4, w, b, eps, backend="triton"), group_norm_swish_reference(x, 4, w, b, eps),
           torch.float32)


def test_inputs_whose_strides_differ_from_the_output():
    g = torch.Generator().manual_seed(4)
    w, b = torch.randn(8, generator=g).to(DEVICE), torch.randn(8, generator=g).to(DEVICE)
    channel_sliced = torch.randn(2, 16, 5, 7, generator=g).to(DEVICE)[:, ::2]
    batch_sliced = torch.randn(4, 8, 5, 7, generator=g).to(DEVICE)[::2]
    transposed = torch.randn(2, 8, 7, 5, generator=g).to(DEVICE).transpose(2, 3)
    for x in (channel_sliced, batch_sliced, transposed):
        out = group_norm_swish(x, 4, w, b, backend="triton")
        want = group_norm_swish_reference(x, 4, w, b)
        assert out.shape == want.shape
        assert (out - want).abs().max().item() <= TOL[torch.float32] * max(1.0, want.abs().max().item())



@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "hw_transposed", "c_between_h_and_w"])
def test_fake_kernel_gives_the_kernel_output_layout(layout):
    """torch.compile plans with the fake kernel's strides: they must be the kernel's, for every layout
    (an input whose H and W do not merge is made contiguous by the kernel)."""
    from mcc_fast.ops.group_norm import _group_norm_swish_op

    g = torch.Generator().manual_seed(6)
    base = torch.randn(2, 8, 5, 7, generator=g).to(DEVICE)
    x = {"contiguous": base, "channels_last": base.contiguous(memory_format=torch.channels_last),
         "hw_transposed": base.transpose(2, 3).contiguous().transpose(2, 3),
         "c_between_h_and_w": base.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)}[layout]
    w, b = torch.randn(8, generator=g).to(DEVICE), torch.randn(8, generator=g).to(DEVICE)
    torch.library.opcheck(_group_norm_swish_op, (x, w, b, 4, 1e-6, True),
                          test_utils=("test_schema", "test_faketensor"))

def test_weight_none_on_triton():
    x, _, _ = _input((2, 8, 3, 3))
    _check(group_norm_swish(x, 2, backend="triton"), group_norm_swish_reference(x, 2), torch.float32)


def test_strided_and_expanded_weight_and_bias_on_triton():
    x, w, b = _input((1, 4, 3, 3), seed=5)
    every_other = torch.randn(8, device=DEVICE)[::2]  # stride 2
    one_value = torch.tensor([2.0], device=DEVICE).expand(4)  # stride 0
    for weight, bias in ((every_other, b), (one_value, b), (w, every_other), (w, one_value)):
        out = group_norm_swish(x, 2, weight, bias, backend="triton")
        _check(out, group_norm_swish_reference(x, 2, weight, bias), torch.float32)


def test_gradients_run_the_differentiable_reference():
    x, w, b = (t.double().requires_grad_(True) for t in _input((2, 8, 3, 3)))
    out = group_norm_swish(x, 4, w, b)  # auto: a gradient is needed -> torch
    go = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(DEVICE)
    got = torch.autograd.grad(out, (x, w, b), go)
    want = torch.autograd.grad(F.silu(F.group_norm(x, 4, w, b, 1e-6)), (x, w, b), go)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, rtol=1e-7, atol=1e-9)
    assert torch.autograd.gradcheck(lambda a, c, d: group_norm_swish(a, 4, c, d), (x, w, b))
    with pytest.raises(RuntimeError, match="forward only"):
        group_norm_swish(x, 4, w, b, backend="triton")


def test_bad_arguments_name_themselves():
    x, w, b = _input((2, 8, 3, 3))
    with pytest.raises(ValueError, match="num_groups=3 must divide"):
        group_norm_swish(x, 3, w[:6], b[:6])
    with pytest.raises(ValueError, match="weight must have shape"):
        group_norm_swish(x, 4, w[:6], b)
    with pytest.raises(ValueError, match="x must have shape"):
        group_norm_swish(x[0, 0, 0], 1)
    with pytest.raises(ValueError, match="num_groups"):
        group_norm_swish(x, 0)
    for bad in (2.0, True, torch.tensor(2), "2"):
        with pytest.raises(ValueError, match="num_groups must be a positive int"):
            group_norm_swish(x, bad)
    import numpy as np

    torch.testing.assert_close(group_norm_swish(x, np.int64(4), w, b), group_norm_swish(x, 4, w, b), rtol=0, atol=0)
    with pytest.raises(TypeError, match="x must be a floating"):
        group_norm_swish(x.long(), 4)
    for bad in (-1e-6, float("nan"), "1e-6", True, None):
        for backend in ("torch", "triton"):
            with pytest.raises(ValueError, match="eps must be a number >= 0"):
                group_norm_swish(x, 4, w, b, eps=bad, backend=backend)
    with pytest.raises(ValueError, match="backend"):
        group_norm_swish(x, 4, backend="fortran")
    for bad in (1, "False", None):  # a flag, as align_corners of the other ops
        with pytest.raises(TypeError, match="swish must be a bool"):
            group_norm_swish(x, 4, w, b, swish=bad)
    with pytest.raises(RuntimeError, match="not implemented"):
        group_norm_swish(x, 4, backend="cuda")


@pytest.mark.gpu
def test_full_size_channels_last_bf16_on_gpu():
    x, w, b = _input((8, 64, 256, 256), dtype=torch.bfloat16, channels_last=True)
    _check(group_norm_swish(x, 32, w, b), group_norm_swish_reference(x, 32, w, b), torch.bfloat16)


@pytest.mark.parametrize("chunks", [None, 3])
def test_a_huge_constant_group_is_exactly_beta_not_nan(chunks):
    """|x| past 1.8e19 (x^2 overflows float32) in a constant group: GroupNorm gives exactly beta
    (the statistics' first update multiplied an infinite delta^2 by a zero count: NaN). The
    float64 oracle is the exact beta: torch's CPU group_norm is itself off by far more here."""
    from mcc_fast.kernels import group_norm_swish as kernel

    x, w, b = _input((1, 4, 3, 5), seed=7)
    x[:, :2] = 1e30
    x[:, 2:] = -2e20
    out = kernel.group_norm_swish(x, w, b, 2, 1e-6, True, chunks=chunks, block_p=16 if chunks else None)
    torch.testing.assert_close(out, F.silu(b).view(1, 4, 1, 1).expand_as(x), rtol=1e-6, atol=1e-7)


def test_a_constant_group_with_eps_zero_is_nan_like_the_reference():
    """eps=0 and variance 0: 0/0, NaN as in the reference (the kernel's rounded mean gave a finite -1);
    with eps > 0 the constant group is exactly beta, whatever the constant."""
    x, w, b = _input((2, 4, 3, 3), seed=8)
    x[:, :2] = 0.1  # not a sum of exactly representable parts
    for eps, swish in ((0.0, False), (0.0, True), (1e-6, False)):
        out = group_norm_swish(x, 2, w, b, eps, swish=swish, backend="triton")
        want = group_norm_swish_reference(x, 2, w, b, eps, swish)
        assert torch.equal(torch.isnan(out), torch.isnan(want)), eps
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("offset", [1e4, -3e5])
def test_a_large_mean_keeps_float32_accuracy(offset):
    """|mean| >> std: y = (x - mean) * rstd keeps the accuracy of the data; the fused
    x * scale + shift form lost |mean| / std * 2^-24 (about 1e-3 at 1e4)."""
    x, w, b = _input((2, 8, 6, 6), seed=9, offset=offset)
    out = group_norm_swish(x, 4, w, b, swish=False, backend="triton")
    want = group_norm_swish_reference(x.double(), 4, w.double(), b.double(), swish=False)
    assert (out.double() - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item())
