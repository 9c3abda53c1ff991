"""The CUDA driver API through ctypes (libcuda.so.1, installed with the GPU driver): load a
compiled image into a device's primary context (the one torch uses) and launch kernels on
torch's streams. Nothing here runs without a GPU."""
from __future__ import annotations

import ctypes
import functools


class DriverError(RuntimeError):
    """A CUDA driver call failed (the message names the call and the driver's error)."""


@functools.lru_cache(maxsize=1)
def _load() -> tuple[ctypes.CDLL | None, str | None]:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        return None, f"the CUDA driver library libcuda.so.1 is not loadable: {exc}"
    lib.cuGetErrorString.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
    lib.cuLaunchKernel.argtypes = [ctypes.c_void_p, *([ctypes.c_uint] * 7), ctypes.c_void_p, ctypes.c_void_p,
                                   ctypes.c_void_p]
    return lib, None


def unavailable_reason() -> str | None:
    """None when libcuda loads, else why not."""
    return _load()[1]


def _lib() -> ctypes.CDLL:
    lib, err = _load()
    if lib is None:
        raise DriverError(err)
    return lib


def check(status: int, what: str) -> None:
    """Raise DriverError when a driver call returned an error."""
    if status != 0:
        msg = ctypes.c_char_p()
        _lib().cuGetErrorString(status, ctypes.byref(msg))
        raise DriverError(f"{what} failed: {msg.value.decode() if msg.value else f'CUresult {status}'}")


def device_count() -> int:
    """Number of CUDA devices the driver sees (0 when there is no driver or no GPU)."""
    lib = _load()[0]
    if lib is None or lib.cuInit(0) != 0:
        return 0
    n = ctypes.c_int()
    return n.value if lib.cuDeviceGetCount(ctypes.byref(n)) == 0 else 0


@functools.cache
def primary_context(device: int) -> int:
    """The device's primary context (retained once per process; torch uses the same one)."""
    lib = _lib()
    check(lib.cuInit(0), "cuInit")
    dev = ctypes.c_int()
    check(lib.cuDeviceGet(ctypes.byref(dev), device), "cuDeviceGet")
    ctx = ctypes.c_void_p()
    check(lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
    return ctx.value


class _Current:
    """Makes `context` current on this thread for the block, restoring the previous one."""

    def __init__(self, context: int):
        self.context = context

    def __enter__(self):
        check(_lib().cuCtxPushCurrent_v2(ctypes.c_void_p(self.context)), "cuCtxPushCurrent")

    def __exit__(self, *exc):
        popped = ctypes.c_void_p()
        check(_lib().cuCtxPopCurrent_v2(ctypes.byref(popped)), "cuCtxPopCurrent")


def load_functions(device: int, image: bytes, names: list[str]) -> dict[str, int]:
    """Load a cubin/PTX image on `device`; returns {mangled name: CUfunction handle}.
    The module stays loaded for the life of the process."""
    lib = _lib()
    with _Current(primary_context(device)):
        module = ctypes.c_void_p()
        check(lib.cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(image)), "cuModuleLoadData")
        out = {}
        for name in names:
            fn = ctypes.c_void_p()
            check(lib.cuModuleGetFunction(ctypes.byref(fn), module, name.encode()), f"cuModuleGetFunction({name})")
            out[name] = fn.value
    return out


def launch(device: int, function: int, grid: tuple[int, int, int], block: tuple[int, int, int], stream: int,
           args: list) -> None:
    """cuLaunchKernel with `args` (ctypes values, in the kernel's parameter order) on `stream`."""
    lib = _lib()
    params = (ctypes.c_void_p * max(len(args), 1))(*[ctypes.addressof(a) for a in args])
    with _Current(primary_context(device)):
        check(lib.cuLaunchKernel(ctypes.c_void_p(function), *grid, *block, 0, ctypes.c_void_p(stream or None),
                                 params, None), "cuLaunchKernel")
