"""NVRTC through ctypes: compile the csrc/ kernel headers to a cubin (or PTX) at run time.

The library is found without a CUDA toolkit: torch's CUDA wheels depend on NVIDIA's
`nvidia-cuda-nvrtc` wheel (site-packages/nvidia/cu13/lib or nvidia/cuda_nvrtc/lib), which is
looked at first; then $MCC_FAST_NVRTC (a path to libnvrtc.so), $CUDA_HOME/lib64 and the
loader's search path. Compiling needs no GPU, so CPU-only machines test this module too.
"""
from __future__ import annotations

import ctypes
import functools
import glob
import os
import sys
from dataclasses import dataclass
from pathlib import Path

_SONAMES = ("libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so")


class NVRTCError(RuntimeError):
    """NVRTC is missing, or a compilation failed (the message holds the compiler log)."""


def _site_dirs() -> list[Path]:
    dirs = []
    for entry in sys.path:
        base = Path(entry) / "nvidia"
        if base.is_dir():
            dirs.append(base)
    return dirs


def library_candidates() -> list[Path]:
    """Paths of libnvrtc.so* to try, most specific first."""
    found: list[Path] = []
    env = os.environ.get("MCC_FAST_NVRTC")
    if env:
        found.append(Path(env))
    for base in _site_dirs():
        for sub in ("cu13/lib", "cuda_nvrtc/lib", "cu12/lib"):
            found.extend(Path(p) for p in sorted(glob.glob(str(base / sub / "libnvrtc.so*"))) if "builtins" not in p
                         and ".alt." not in p)
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            found.extend(Path(p) for p in sorted(glob.glob(os.path.join(home, "lib64", "libnvrtc.so*")))
                         if "builtins" not in p and ".alt." not in p)
    return found


@functools.lru_cache(maxsize=1)
def _load() -> tuple[ctypes.CDLL | None, str | None]:
    tried = []
    for path in [*library_candidates(), *map(Path, _SONAMES)]:
        if path.is_absolute() and not path.exists():
            continue
        try:
            # libnvrtc dlopens libnvrtc-builtins by name: load the one beside it first.
            if path.is_absolute():
                for builtins in sorted(path.parent.glob("libnvrtc-builtins.so*")):
                    if ".alt." not in builtins.name:
                        ctypes.CDLL(str(builtins), mode=ctypes.RTLD_GLOBAL)
                        break
            lib = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            text = str(exc)  # dlopen's message usually starts with the name already
            tried.append(text if text.startswith(str(path)) else f"{path}: {text}")
            continue
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        lib.nvrtcGetLoweredName.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p)]
        return lib, None
    detail = "; ".join(tried) if tried else "no libnvrtc.so found"
    return None, ("NVRTC is not available (pip install nvidia-cuda-nvrtc, or set MCC_FAST_NVRTC to "
                  f"libnvrtc.so): {detail}")


def unavailable_reason() -> str | None:
    """None when libnvrtc loads, else why not."""
    return _load()[1]


def _lib() -> ctypes.CDLL:
    lib, err = _load()
    if lib is None:
        raise NVRTCError(err)
    return lib


def version() -> tuple[int, int]:
    """NVRTC's (major, minor)."""
    major, minor = ctypes.c_int(), ctypes.c_int()
    _check(_lib().nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
    return major.value, minor.value


def supported_architectures() -> list[int]:
    """Compute capabilities NVRTC can target, e.g. [75, 80, 86, 89, 90, ...]."""
    lib = _lib()
    n = ctypes.c_int()
    _check(lib.nvrtcGetNumSupportedArchs(ctypes.byref(n)), "nvrtcGetNumSupportedArchs")
    archs = (ctypes.c_int * n.value)()
    _check(lib.nvrtcGetSupportedArchs(archs), "nvrtcGetSupportedArchs")
    return list(archs)


def _check(status: int, what: str) -> None:
    if status != 0:
        msg = _lib().nvrtcGetErrorString(status)
        raise NVRTCError(f"{what} failed: {msg.decode() if msg else status}")


@dataclass(frozen=True)
class Compiled:
    """One compiled program: `image` (cubin for -arch=sm_XY, PTX text for compute_XY) and the
    mangled name of every name expression."""

    image: bytes
    is_cubin: bool
    lowered: dict[str, str]
    log: str


def compile_program(source: str, name: str, options: list[str], name_expressions: list[str]) -> Compiled:
    """Compile `source` with NVRTC. options: e.g. ["-arch=sm_90", "-std=c++17", "-I..."]."""
    lib = _lib()
    prog = ctypes.c_void_p()
    _check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None),
           "nvrtcCreateProgram")
    try:
        for expr in name_expressions:
            _check(lib.nvrtcAddNameExpression(prog, expr.encode()), f"nvrtcAddNameExpression({expr})")
        opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
        status = lib.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        _check(lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "nvrtcGetProgramLogSize")
        log_buf = ctypes.create_string_buffer(size.value)
        _check(lib.nvrtcGetProgramLog(prog, log_buf), "nvrtcGetProgramLog")
        log = log_buf.value.decode(errors="replace")
        if status != 0:
            raise NVRTCError(f"NVRTC could not compile {name} ({' '.join(options)}):\n{log}")
        lowered = {}
        for expr in name_expressions:
            out = ctypes.c_char_p()
            _check(lib.nvrtcGetLoweredName(prog, expr.encode(), ctypes.byref(out)), f"nvrtcGetLoweredName({expr})")
            lowered[expr] = out.value.decode()
        is_cubin = any(o.startswith(("-arch=sm_", "--gpu-architecture=sm_")) for o in options)
        get_size, get = (lib.nvrtcGetCUBINSize, lib.nvrtcGetCUBIN) if is_cubin else (lib.nvrtcGetPTXSize,
                                                                                     lib.nvrtcGetPTX)
        _check(get_size(prog, ctypes.byref(size)), "nvrtcGet(CUBIN|PTX)Size")
        image = ctypes.create_string_buffer(size.value)
        _check(get(prog, image), "nvrtcGet(CUBIN|PTX)")
        return Compiled(image.raw, is_cubin, lowered, log)
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
