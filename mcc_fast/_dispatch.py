"""The one place that decides which backend runs an op: "cuda", "triton" or "torch".

`backend=None` picks the fastest available for the inputs' device: CUDA tensors run on
cuda, then triton, then torch; CPU tensors run on torch. Asking for a backend that cannot
run the inputs raises a RuntimeError naming the reason. The torch backend is the plain
PyTorch reference (the oracle in every test).

Forward-mode AD (`torch.func.jvp`, `torch.autograd.forward_ad`) and torch.func's gradient
transforms (`grad`, `vjp`, `jacrev`, `hessian`) run on the torch backend only: the kernels have
no forward derivative (a custom op would silently drop the tangent) and their autograd formulas
do not run under torch.func. With `backend=None` such calls run on torch; asking for a kernel
backend in them is a NotImplementedError. `torch.func.vmap` alone runs on every backend, for every
op but `quantize` / `quantize_multiscale` (a NotImplementedError: they already take any leading
dims, and their loss and statistics are over the whole batch).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import torch.autograd.forward_ad as fwAD

BACKENDS = ("cuda", "triton", "torch")


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend can run, and why not when it cannot."""

    name: str
    available: bool
    reason: str


def triton_interpreting() -> bool:
    """True when TRITON_INTERPRET=1: Triton kernels then run on CPU tensors (for testing)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=1)
def _triton_import_error() -> str | None:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"triton is not importable ({type(exc).__name__}: {exc})"
    return None


def _assume_constant_result(fn):
    """`torch.compiler.assume_constant_result(fn)` without its cost: that call imports torch._dynamo
    (seconds, and it creates the inductor cache folder and sets $TORCHINDUCTOR_CACHE_DIR), which
    `import mcc_fast` must not do. The mark is the attribute it sets (tests/test_packaging.py checks
    that it still is)."""
    fn._dynamo_marked_constant = True
    return fn


# The availability probes import modules, load libraries and query the driver: torch.compile must
# not trace them (importlib.import_module is untraceable: fullgraph=True would fail on every op call
# with CUDA tensors). Under torch.compile they run eagerly and their result is a constant.
@_assume_constant_result
def triton_status() -> BackendStatus:
    err = _triton_import_error()
    if err:
        return BackendStatus("triton", False, err)
    if torch.cuda.is_available():
        return BackendStatus("triton", True, "CUDA GPU present")
    if triton_interpreting():
        return BackendStatus("triton", True, "TRITON_INTERPRET=1: interpreter on CPU tensors (slow, for tests)")
    return BackendStatus("triton", False, "no CUDA GPU (set TRITON_INTERPRET=1 to run the kernels on CPU for testing)")


@_assume_constant_result
def cuda_status(device: torch.device | None = None) -> BackendStatus:
    """Whether the cuda backend can run on `device` (the tensors' CUDA device; None: the current one)."""
    from .cuda import extension_error, runtime_name

    err = extension_error(device=device)
    if err:
        return BackendStatus("cuda", False, err)
    if not torch.cuda.is_available():
        return BackendStatus("cuda", False, "the kernels are loadable but torch sees no CUDA GPU")
    if runtime_name(device=device) == "nvrtc":
        why = extension_error("compiled", device) or "MCC_FAST_CUDA_RUNTIME=nvrtc"
        return BackendStatus("cuda", True, f"csrc/ kernels compiled at run time by NVRTC ({why})")
    return BackendStatus("cuda", True, "compiled extension mcc_fast._cuda loaded")


def backends() -> dict[str, BackendStatus]:
    """Report every backend: {"cuda": BackendStatus, "triton": ..., "torch": ...}."""
    return {
        "cuda": cuda_status(),
        "triton": triton_status(),
        "torch": BackendStatus("torch", True, "plain PyTorch reference, always available"),
    }


def _device_of(tensors) -> torch.device:
    devices = {t.device for t in tensors if isinstance(t, torch.Tensor)}
    if len(devices) > 1:
        raise ValueError(f"all tensor arguments must be on one device, got {sorted(map(str, devices))}")
    return devices.pop() if devices else torch.device("cpu")


def _carries_tangent(tensors) -> bool:
    """True when a tensor may carry a forward-mode AD tangent (torch.func.jvp, forward_ad)."""
    if fwAD._current_level < 0:  # no dual level is open: the common case, no per-tensor look-up
        return False
    for t in tensors:
        if not isinstance(t, torch.Tensor):
            continue
        try:
            if fwAD.unpack_dual(t).tangent is not None:
                return True
        except RuntimeError:  # e.g. a vmap-batched tensor inside jvp: cannot tell, assume it does
            return True
    return False


def _active_transforms(*names: str) -> bool:
    """True when a torch.func transform of one of the TransformType `names` ("Grad", "Jvp",
    "Vmap", ...) is active, at any level."""
    if torch.compiler.is_compiling() or torch._C._functorch.maybe_current_level() is None:
        return False  # no torch.func transform is active (the common case: one cheap call)
    try:
        from torch._C._functorch import TransformType
        from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters
    except ImportError:  # pragma: no cover - a torch without these internals
        return False
    keys = {getattr(TransformType, name) for name in names}
    return any(i.key() in keys for i in retrieve_all_functorch_interpreters())


def _differentiating_transform() -> bool:
    """True inside a torch.func gradient transform (grad, vjp, jacrev, jvp, jacfwd, hessian): custom
    ops registered with torch.library's autograd do not run under them."""
    return _active_transforms("Grad", "Jvp")


def under_vmap() -> bool:
    """True inside torch.func.vmap (any level)."""
    return _active_transforms("Vmap")


#: Ops whose torch backend samples with F.grid_sample, which has no forward-mode derivative.
_NO_TORCH_FORWARD_AD = frozenset({"grid_sample", "warp", "warp_many", "dense_motion_input"})


def _refuse_forward_ad(backend: str, op: str, tensors) -> None:
    if _carries_tangent(tensors):
        fix = ("torch's grid_sample has none either, so no backend gives it: use reverse mode instead "
               "(torch.autograd.grad on any backend; torch.func.grad / vjp / jacrev with backend='torch' or None)"
               if op in _NO_TORCH_FORWARD_AD else "use backend='torch' or backend=None")
        raise NotImplementedError(
            f"{op}: forward-mode AD (torch.func.jvp / torch.autograd.forward_ad) is not implemented on the "
            f"{backend} backend (the tangent would be dropped); {fix}")
    if _differentiating_transform():
        raise NotImplementedError(
            f"{op}: torch.func gradient transforms (grad, vjp, jacrev, jvp, hessian) are not supported on the "
            f"{backend} backend (its custom op has a plain autograd formula); use backend='torch' or backend=None")


def refuse_double_backward(backward_op, op: str) -> None:
    """Give a kernel backward custom op an autograd formula that raises a NotImplementedError naming
    the public `op`: differentiating its gradient again (create_graph=True, then a second backward
    through it) is not implemented on the kernel backends; the torch backend runs it. (Without a
    formula torch says only that mcc_fast::..._backward has none and to register one.)"""
    def setup_context(ctx, inputs, output):
        pass

    def backward(ctx, *grads):
        raise NotImplementedError(
            f"{op}: double backward (a second derivative, through a gradient taken with create_graph=True) is "
            "not implemented on the triton and cuda backends; use backend='torch' for it")

    backward_op.register_autograd(backward, setup_context=setup_context)


def resolve_backend(backend: str | None, *tensors, op: str, supported: tuple[str, ...] = BACKENDS) -> str:
    """Choose the backend for `op` on `tensors` (all on one device); raise if it cannot run.

    backend: None (auto), "torch", "triton" or "cuda".
    supported: the backends this op implements.
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be None or one of {BACKENDS}, got {backend!r}")
    device = _device_of(tensors)
    if backend is None:
        if device.type == "cuda" and not _carries_tangent(tensors) and not _differentiating_transform():
            for name in ("cuda", "triton"):
                if name in supported and (cuda_status(device) if name == "cuda" else triton_status()).available:
                    return name
        return "torch"
    if backend not in supported:
        raise RuntimeError(f"{op}: backend {backend!r} is not implemented for this op (have {supported})")
    if backend == "torch":
        return backend
    if backend == "cuda":
        status = cuda_status(device)
        if not status.available:
            raise RuntimeError(f"{op}: the cuda backend is unavailable: {status.reason}")
        if device.type != "cuda":
            raise RuntimeError(f"{op}: the cuda backend needs CUDA tensors, got tensors on {device}")
        _refuse_forward_ad(backend, op, tensors)
        return backend
    status = triton_status()
    if not status.available:
        raise RuntimeError(f"{op}: the triton backend is unavailable: {status.reason}")
    if device.type != "cuda" and not triton_interpreting():
        raise RuntimeError(f"{op}: the triton backend needs CUDA tensors (or TRITON_INTERPRET=1), got {device}")
    _refuse_forward_ad(backend, op, tensors)
    return backend


def deterministic_requested(deterministic: bool | None) -> bool:
    """An explicit flag wins; otherwise follow torch.use_deterministic_algorithms().

    Anything but True, False or None is a TypeError naming `deterministic`."""
    if deterministic is not None:
        if not isinstance(deterministic, bool):
            raise TypeError(f"deterministic must be True, False or None, got {deterministic!r}")
        return deterministic
    return torch.are_deterministic_algorithms_enabled()
