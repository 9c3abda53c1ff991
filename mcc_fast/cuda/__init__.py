"""Python side of the CUDA kernels in csrc/.

Two ways to run them, with one API (raw device pointers, sizes, strides and the stream):
  - "compiled": the module `mcc_fast._cuda`, built by `pip install` with nvcc;
  - "nvrtc": the same kernel sources compiled at run time (mcc_fast.cuda.runtime), for an
    install made without nvcc.
MCC_FAST_CUDA_RUNTIME chooses: "auto" (default: compiled, else nvrtc), "compiled" or "nvrtc".
The wrappers in this package check arguments, allocate outputs with torch and pass pointers.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os

RUNTIMES = ("auto", "compiled", "nvrtc")
_override: list[str] = []


def requested_runtime() -> str:
    """The runtime asked for: the innermost `using(...)`, else $MCC_FAST_CUDA_RUNTIME, else "auto"."""
    if _override:
        return _override[-1]
    value = os.environ.get("MCC_FAST_CUDA_RUNTIME", "auto").strip().lower() or "auto"
    if value not in RUNTIMES:
        raise ValueError(f"MCC_FAST_CUDA_RUNTIME must be one of {RUNTIMES}, got {value!r}")
    return value


@functools.lru_cache(maxsize=1)
def _compiled():
    try:
        return importlib.import_module("mcc_fast._cuda"), None
    except ImportError as exc:
        return None, (
            "the compiled module mcc_fast._cuda is not installed (built without nvcc or with "
            f"MCC_FAST_NO_CUDA=1; reinstall with nvcc on PATH): {exc}"
        )


@functools.lru_cache(maxsize=1)
def _nvrtc():
    from . import runtime

    err = runtime.unavailable_reason()
    if err:
        return None, f"the run-time compiled kernels are unavailable: {err}"
    return runtime.module(), None


@functools.lru_cache(maxsize=None)
def _image_error(module, device: int) -> str | None:
    """None when the compiled module's kernels can run on CUDA device `device`, else why not."""
    import torch

    with torch.cuda.device(device):
        err = module.kernel_image_error()
    if not err:
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return (f"the compiled module mcc_fast._cuda cannot run on cuda:{device} (compute capability {major}.{minor}; "
            f"built for {module.architectures}; rebuild with MCC_FAST_CUDA_ARCH, see the README): {err}")


def _cuda_index(device) -> int | None:
    """The index of a CUDA `device` (torch.device, "cuda:N" or int); None for None or a non-CUDA device."""
    if device is None or isinstance(device, int):
        return device
    import torch

    device = torch.device(device)
    return device.index if device.type == "cuda" else None


def _compiled_on_device(device=None):
    """_compiled(), and when a GPU is visible, whether its kernels run on `device` (the tensors'
    CUDA device; None: the current one): an architecture missing from the build or a driver too
    old for its runtime would otherwise fail at the first launch instead of falling back. Only
    `device` is probed (no CUDA context is made on another GPU)."""
    module, err = _compiled()
    if module is None or not hasattr(module, "kernel_image_error"):
        return module, err
    import torch

    if not torch.cuda.is_available():
        return module, None
    index = _cuda_index(device)
    err = _image_error(module, torch.cuda.current_device() if index is None else index)
    return (None, err) if err else (module, None)


def _load(kind: str, device=None):
    if kind == "compiled":
        return _compiled_on_device(device)
    if kind == "nvrtc":
        return _nvrtc()
    module, err = _compiled_on_device(device)
    if module is not None:
        return module, None
    fallback, err2 = _nvrtc()
    if fallback is not None:
        return fallback, None
    return None, f"{err}; and {err2}"


def extension_error(kind: str | None = None, device=None) -> str | None:
    """None when the kernels can be loaded (`kind`: a RUNTIMES name, default the requested one)
    and run on `device` (a CUDA device; None: the current one), else why not."""
    return _load(kind or requested_runtime(), device)[1]


def extension(kind: str | None = None, device=None):
    """The kernel module (compiled, or run-time compiled) for tensors on `device` (None: the
    current CUDA device); RuntimeError naming the reason when unavailable."""
    module, err = _load(kind or requested_runtime(), device)
    if module is None:
        raise RuntimeError(f"mcc_fast cuda backend unavailable: {err}")
    return module


def runtime_name(kind: str | None = None, device=None) -> str | None:
    """"compiled" or "nvrtc": which one `extension(kind, device)` returns (None when neither loads)."""
    module, _ = _load(kind or requested_runtime(), device)
    if module is None:
        return None
    return getattr(module, "runtime", "compiled")


@contextlib.contextmanager
def using(kind: str):
    """Run the cuda backend on `kind` ("compiled" or "nvrtc") inside the block (tests, benchmarks)."""
    if kind not in RUNTIMES:
        raise ValueError(f"kind must be one of {RUNTIMES}, got {kind!r}")
    _override.append(kind)
    try:
        yield
    finally:
        _override.pop()
