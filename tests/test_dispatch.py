"""Backend dispatch: auto choice, availability report, clear errors."""
from __future__ import annotations

import pytest
import torch

import mcc_fast
from mcc_fast._dispatch import BACKENDS, resolve_backend


def test_backends_report_every_backend_with_reason():
    report = mcc_fast.backends()
    assert set(report) == set(BACKENDS)
    assert report["torch"].available
    for status in report.values():
        assert isinstance(status.reason, str) and status.reason


def test_cpu_tensors_default_to_torch():
    x = torch.zeros(2, 3)
    assert resolve_backend(None, x, op="t") == "torch"


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="backend must be None or one of"):
        resolve_backend("metal", torch.zeros(1), op="t")


def test_unsupported_backend_for_op():
    with pytest.raises(RuntimeError, match="not implemented for this op"):
        resolve_backend("cuda", torch.zeros(1), op="t", supported=("torch",))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error path")
def test_cuda_backend_without_gpu_names_the_reason():
    z, cb = torch.randn(4, 8), torch.randn(16, 8)
    with pytest.raises(RuntimeError, match="cuda backend is unavailable"):
        mcc_fast.ops.nearest_code(z, cb, backend="cuda")


def test_triton_on_cpu_needs_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if torch.cuda.is_available():
        pytest.skip("with a GPU present triton is available; the CPU-tensor check is tested below")
    with pytest.raises(RuntimeError, match="triton backend"):
        resolve_backend("triton", torch.zeros(1), op="t")


def test_triton_with_cpu_tensors_is_refused_without_the_interpreter(monkeypatch):
    """Triton available (a GPU is present) but the tensors are on the CPU and TRITON_INTERPRET is off:
    a RuntimeError naming the device, not a launch of GPU kernels on CPU memory."""
    import mcc_fast._dispatch as dispatch

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(dispatch, "triton_status", lambda: dispatch.BackendStatus("triton", True, "test"))
    with pytest.raises(RuntimeError, match="triton backend needs CUDA tensors.*cpu"):
        resolve_backend("triton", torch.zeros(1), op="t")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_backend("triton", torch.zeros(1), op="t") == "triton"


def test_mixed_devices_rejected():
    a = torch.zeros(1)
    b = torch.zeros(1, device="meta")
    with pytest.raises(ValueError, match="one device"):
        resolve_backend(None, a, b, op="t")


def _jvp_cases():
    """(name, fn(backend, primal), primal) for one op of each kernel family."""
    from mcc_fast import ops

    x, cb = torch.randn(1, 2, 3, 4), torch.randn(5, 3)
    kd = torch.rand(1, 2, 2) * 2 - 1
    logits = torch.randn(1, 3, 3, 4)
    return [
        ("grid_sample", lambda b, g: ops.grid_sample(x, g, backend=b), torch.rand(1, 2, 2, 2) * 2 - 1),
        ("quantize", lambda b, z: ops.quantize(z, cb, backend=b).z_q, torch.randn(4, 3)),
        ("compose_flow", lambda b, kp: ops.compose_flow(logits, kp, kd, backend=b),
         torch.rand(1, 2, 2) * 2 - 1),
        ("group_norm_swish", lambda b, t: ops.group_norm_swish(t, 1, backend=b), x),
    ]


@pytest.mark.parametrize("case", range(4))
def test_forward_mode_ad_on_a_kernel_backend_is_refused_not_dropped(case):
    """A kernel custom op has no forward derivative: jvp must raise, never return a zero tangent."""
    name, fn, primal = _jvp_cases()[case]
    with pytest.raises(NotImplementedError, match=f"{name}: forward-mode AD"):
        torch.func.jvp(lambda p: fn("triton", p), (primal,), (torch.randn_like(primal),))
    with pytest.raises(NotImplementedError, match="forward-mode AD"):
        with torch.autograd.forward_ad.dual_level():
            fn("triton", torch.autograd.forward_ad.make_dual(primal, torch.randn_like(primal)))


def _sampling_jvp_cases():
    """(name, fn(backend, primal), primal) for every op that samples through grid_sample."""
    from mcc_fast import ops

    x, grid = torch.randn(1, 2, 3, 4), torch.rand(1, 2, 2, 2) * 2 - 1
    kp = torch.rand(1, 2, 2) * 2 - 1
    return [
        ("grid_sample", lambda b, t: ops.grid_sample(t, grid, backend=b), x),
        ("warp", lambda b, t: ops.warp(t, grid, backend=b), x),
        ("warp_many", lambda b, t: ops.warp_many(t, grid.unsqueeze(1), backend=b), x),
        ("dense_motion_input", lambda b, t: ops.dense_motion_input(t, kp, kp.flip(-1), backend=b), x),
    ]


@pytest.mark.parametrize("case", range(4))
def test_forward_mode_ad_refusal_of_a_sampling_op_suggests_what_works(case):
    """torch's grid_sample has no forward derivative either: the refusal must not send the user to
    backend='torch' (which fails too), and the reverse mode it suggests gives the gradient."""
    name, fn, primal = _sampling_jvp_cases()[case]
    tangent = torch.randn_like(primal)
    with pytest.raises(NotImplementedError, match=f"{name}: forward-mode AD") as refused:
        torch.func.jvp(lambda p: fn("triton", p), (primal,), (tangent,))
    assert not str(refused.value).endswith("use backend='torch' or backend=None")
    assert "use reverse mode" in str(refused.value)
    with pytest.raises(NotImplementedError):  # torch's own limit: the reason for the message
        torch.func.jvp(lambda p: fn("torch", p), (primal,), (tangent,))
    got = torch.func.vjp(lambda p: fn("torch", p), primal)[1](torch.ones_like(fn("torch", primal)))[0]
    assert got.shape == primal.shape


def test_auto_backend_sends_forward_mode_ad_to_torch(monkeypatch):
    """backend=None on CUDA tensors: inputs with a tangent run on the torch reference."""
    import mcc_fast._dispatch as dispatch

    ok = dispatch.BackendStatus("x", True, "test")
    monkeypatch.setattr(dispatch, "cuda_status", lambda device=None: ok)
    monkeypatch.setattr(dispatch, "_device_of", lambda tensors: torch.device("cuda"))
    t = torch.randn(3)
    assert resolve_backend(None, t, op="t") == "cuda"
    with torch.autograd.forward_ad.dual_level():
        assert resolve_backend(None, torch.autograd.forward_ad.make_dual(t, torch.ones(3)), op="t") == "torch"
        assert resolve_backend(None, t, op="t") == "cuda"


@pytest.mark.parametrize("case", range(4))
def test_torch_func_gradient_transforms_on_a_kernel_backend_name_the_op(case):
    """torch.func.grad / vjp / jacrev over a kernel op: a clear error naming the op, and the torch
    backend gives the gradient (custom ops' autograd formulas do not run under torch.func)."""
    name, fn, primal = _jvp_cases()[case]
    for transform in (torch.func.grad, torch.func.jacrev):
        with pytest.raises(NotImplementedError, match=f"{name}: torch.func gradient transforms"):
            transform(lambda p: fn("triton", p).sum())(primal)
    got = torch.func.grad(lambda p: fn("torch", p).sum())(primal)
    leaf = primal.clone().requires_grad_()
    want, = torch.autograd.grad(fn("torch", leaf).sum(), leaf)
    torch.testing.assert_close(got, want)



def _double_backward_cases():
    """(name, fn(backend, primal), primal) for every kernel op whose backward is itself a custom op."""
    from mcc_fast import ops

    x, cb = torch.randn(1, 2, 3, 4), torch.randn(5, 3)
    kp, grid, flows = torch.rand(1, 2, 2) * 2 - 1, torch.rand(1, 2, 2, 2) * 2 - 1, torch.rand(1, 2, 2, 2, 2) * 2 - 1
    return [
        ("grid_sample", lambda b, t: ops.grid_sample(t, grid, backend=b), x),
        ("warp", lambda b, t: ops.warp(t, grid, backend=b), x),
        ("warp_many", lambda b, t: ops.warp_many(t, flows, backend=b), x),
        ("quantize", lambda b, z: ops.quantize(z, cb, backend=b).loss, torch.randn(4, 3)),
        ("compose_flow", lambda b, t: ops.compose_flow(t, kp, kp.flip(-1), backend=b), torch.randn(1, 3, 3, 4)),
        ("dense_motion_input", lambda b, t: ops.dense_motion_input(t, kp, kp.flip(-1), backend=b), x),
    ]


@pytest.mark.parametrize("case", range(6))
def test_double_backward_on_a_kernel_backend_names_the_op(case):
    """A second derivative through a kernel op's gradient (create_graph=True) raises a
    NotImplementedError naming the op and the way out (it said only that mcc_fast::..._backward had
    no autograd formula, and to register one); the first derivative with create_graph=True works."""
    name, fn, primal = _double_backward_cases()[case]
    leaf = primal.clone().requires_grad_()
    g, = torch.autograd.grad(fn("triton", leaf).pow(2).sum(), leaf, create_graph=True)
    want, = torch.autograd.grad(fn("torch", leaf).pow(2).sum(), leaf)
    torch.testing.assert_close(g.detach(), want, atol=1e-4, rtol=1e-4)
    with pytest.raises(NotImplementedError, match=f"{name}: double backward .* use backend='torch'"):
        torch.autograd.grad(g.pow(2).sum(), leaf)

def test_auto_backend_sends_torch_func_gradient_transforms_to_torch(monkeypatch):
    import mcc_fast._dispatch as dispatch

    ok = dispatch.BackendStatus("x", True, "test")
    monkeypatch.setattr(dispatch, "cuda_status", lambda device=None: ok)
    monkeypatch.setattr(dispatch, "_device_of", lambda tensors: torch.device("cuda"))
    chosen = []

    def probe(t):
        chosen.append(resolve_backend(None, t, op="t"))
        return t.sum()

    torch.func.grad(probe)(torch.randn(3))
    torch.func.vjp(probe, torch.randn(3))
    torch.func.vmap(probe)(torch.randn(2, 3))  # vmap alone keeps the kernels
    assert chosen == ["torch", "torch", "cuda"]
    assert resolve_backend(None, torch.randn(3), op="t") == "cuda"


def test_backend_choice_for_cuda_tensors_is_traceable_by_torch_compile(monkeypatch):
    """An op on CUDA tensors under torch.compile(fullgraph=True) resolves its backend at trace time: the
    availability probes (they import modules and query the driver) run eagerly, not traced."""
    import mcc_fast._dispatch as dispatch

    monkeypatch.setattr(dispatch, "_device_of", lambda tensors: torch.device("cuda"))  # the probes stay real

    def step(t):
        return t * len(resolve_backend(None, t, op="t"))

    compiled = torch.compile(step, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(torch.ones(3)), step(torch.ones(3)))
