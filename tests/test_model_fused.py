"""`Model.use_fused_ops()`: the training forward and backward on mcc_fast.ops' fused kernels give
the reference path's values and gradients (torch ops on CPU, the Triton kernels under the
interpreter, csrc/'s CUDA kernels on the CPU emulation; the same on a GPU)."""
from __future__ import annotations

import copy

import pytest
import torch
from kernel_helpers import CUDA_EMULATED
from kernel_helpers import require_backend as _require

import mcc_fast
from mcc_fast import ModelConfig
from mcc_fast.model.fused import FusedOps

HAS_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if HAS_GPU else "cpu")
BACKENDS = [None, "torch", "triton", pytest.param("cuda", marks=pytest.mark.gpu), CUDA_EMULATED]


def _model(seed: int = 0) -> mcc_fast.Model:
    torch.manual_seed(seed)
    model = mcc_fast.Model(ModelConfig.small(64))
    with torch.no_grad():  # well-separated codes: no near-ties, so every path picks the same ones
        for codebook in (model.generator.motion.codebook, model.generator.appearance.codebook):
            codebook.weight.normal_()
    return model.to(DEVICE).train()


def _batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return tuple((torch.rand(1, 3, 64, 64, generator=g) * 2 - 1).to(DEVICE) for _ in range(2))


def _training_step(model, source, driving):
    """A loss touching every training output; returns (outputs, {parameter name: gradient})."""
    model.zero_grad(set_to_none=True)
    out = model(source, driving, return_all=True, training=True)
    tr = out.generator.training
    loss = (out.frame.square().mean() + tr.low_res_frame.abs().mean() + sum(tr.motion_vq_losses)
            + sum(tr.appearance_vq_losses) + sum(r.square().mean() for r in tr.motion_reconstructions)
            + out.motion.deformation.square().mean())
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_training_step_matches_the_reference(backend):
    if backend is not None and backend != "torch" and not mcc_fast.backends()[backend].available:
        _require(backend)
    reference = _model()
    fused = copy.deepcopy(reference).use_fused_ops(backend=backend)
    source, driving = _batch()
    ref_out, ref_grads = _training_step(reference, source, driving)
    out, grads = _training_step(fused, source, driving)
    rt, ft = ref_out.generator.training, out.generator.training
    for a, b in zip(rt.motion_code_indices + rt.appearance_code_indices,
                    ft.motion_code_indices + ft.appearance_code_indices, strict=True):
        assert torch.equal(a, b)  # no near-ties in this problem: the same codes
    torch.testing.assert_close(out.frame, ref_out.frame, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.motion.deformation, ref_out.motion.deformation, rtol=1e-5, atol=1e-5)
    for a, b in zip(rt.motion_vq_losses + rt.appearance_vq_losses, ft.motion_vq_losses + ft.appearance_vq_losses,
                    strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    # each gradient within 1e-3 of its own size, or of 1e-4 of its network's largest (a tiny
    # gradient that is a sum of cancelling terms carries their rounding)
    network_scale = {net: max(g.abs().max().item() for n, g in ref_grads.items() if n.startswith(net))
                     for net in ("generator.", "motion_estimator.")}
    for name, g in ref_grads.items():
        scale = g.abs().max().item()
        err = (grads[name] - g).abs().max().item()
        floor = 1e-4 * network_scale[name.split(".")[0] + "."]
        assert err <= 1e-3 * scale + floor, f"{name}: {err:.3e} (max |grad| {scale:.3e}, floor {floor:.3e})"


def test_use_fused_ops_switches_every_part_and_back():
    model = _model()
    assert model.use_fused_ops(backend="torch") is model
    parts = [m for m in model.modules() if hasattr(type(m), "fused")]
    kinds = {type(m).__name__ for m in parts}
    assert kinds == {"Generator", "DenseMotionNetwork", "Codebook"}
    assert all(m.fused == FusedOps("torch") for m in parts)
    model.use_fused_ops(False)
    assert all(m.fused is None for m in parts)
    with pytest.raises(ValueError, match="backend must be None or one of"):
        model.use_fused_ops(backend="cudnn")
    with pytest.raises(TypeError, match="enabled must be True or False.*backend='torch'"):
        model.use_fused_ops("torch")  # the backend passed where the switch goes: not silently "auto"
    assert all(m.fused is None for m in parts)
    # the switch is not part of the weights
    assert set(model.state_dict()) == set(_model().state_dict())
