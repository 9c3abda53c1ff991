"""Kernel families compiled at run time: argument types, name expressions, per-device modules.

A Family is one csrc/*_kernels.cuh header and the kernels the launchers use from it; each
Kernel names its template (`{T}` stands for the element type) and its parameter types, in
order, as ctypes types. The NVRTC-compiled image is built once per (family, architecture) and
loaded once per device.
"""
from __future__ import annotations

import ctypes
import functools
import glob
import hashlib
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from . import cache, driver, nvrtc

PTR = ctypes.c_uint64   # any device pointer (0 = nullptr)
I64 = ctypes.c_int64
I32 = ctypes.c_int32
F32 = ctypes.c_float
BOOL = ctypes.c_bool

# csrc/common.h DType code -> the C++ element type of the kernels' T.
ELEMENT_TYPES = {0: "float", 1: "__half", 2: "__nv_bfloat16"}

# The flags the compiled module is built with (CMakeLists.txt), in NVRTC's spelling; NVRTC's
# defaults (no fast math, -ftz=false, -prec-div=true, -fmad=true) match nvcc's.
BASE_OPTIONS = ("-std=c++17", "-lineinfo")


def source_dir() -> Path:
    """Folder holding csrc/'s headers: mcc_fast/cuda/csrc in an install (a link to the
    repository's csrc/ in a source checkout)."""
    return Path(__file__).resolve().parents[1] / "csrc"


def source_files(folder: Path | None = None) -> list[Path]:
    """The headers NVRTC may read (*.h, *.cuh) in `folder` (default: source_dir())."""
    folder = folder or source_dir()
    return sorted([*folder.glob("*.h"), *folder.glob("*.cuh")])


_HEADERS = ("cuda_fp16.h", "cuda_bf16.h", "mma.h")


def cuda_include_dirs() -> list[str]:
    """The folder with the CUDA headers the kernels include (cuda_fp16.h, cuda_bf16.h, mma.h;
    NVRTC has no built-in copy): the CUDA toolkit, NVIDIA's runtime wheels, or Triton's copy."""
    dirs = []
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            dirs.append(os.path.join(home, "include"))
    for entry in sys.path:
        dirs.extend(sorted(glob.glob(os.path.join(entry, "nvidia", "*", "include"))))
        dirs.append(os.path.join(entry, "triton", "backends", "nvidia", "include"))
    for d in dirs:
        if all(os.path.isfile(os.path.join(d, h)) for h in _HEADERS):
            return [d]
    return []


@dataclass(frozen=True)
class Kernel:
    """One __global__ function: `name` as a C++ name expression (with `{T}` for templated
    element types) and its parameters as ctypes types (a ctypes.Structure for structs)."""

    name: str
    params: tuple

    def expression(self, dtype: int | None = None) -> str:
        if "{T}" not in self.name:
            return self.name
        if dtype not in ELEMENT_TYPES:
            raise ValueError(f"unsupported dtype code {dtype!r} (csrc/common.h DType)")
        return self.name.format(T=ELEMENT_TYPES[dtype])

    def expressions(self) -> list[str]:
        if "{T}" not in self.name:
            return [self.name]
        return [self.expression(code) for code in ELEMENT_TYPES]

    def pack(self, args) -> list:
        if len(args) != len(self.params):
            raise TypeError(f"{self.name}: {len(self.params)} arguments expected, got {len(args)}")
        return [a if isinstance(a, ctypes.Structure) else typ(a) for typ, a in zip(self.params, args)]


class Family:
    """The kernels of one csrc/*_kernels.cuh header."""

    def __init__(self, header: str, kernels: dict[str, Kernel]):
        self.header = header
        self.kernels = kernels
        self._lock = threading.RLock()
        self._images: dict[str, nvrtc.Compiled] = {}
        self._functions: dict[int, dict[str, int]] = {}

    def name_expressions(self) -> list[str]:
        return [e for k in self.kernels.values() for e in k.expressions()]

    def source(self) -> str:
        """The program NVRTC compiles: the header, plus a digest of every csrc header it may read."""
        digest = hashlib.sha256()
        for path in source_files():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        return f'// csrc digest {digest.hexdigest()}\n#include "{self.header}"\n'

    def options(self, arch: str) -> list[str]:
        """NVRTC options for `arch` ("sm_90" for a cubin, "compute_90" for PTX)."""
        includes = [f"-I{source_dir()}", *(f"-I{d}" for d in cuda_include_dirs())]
        return [f"-arch={arch}", *BASE_OPTIONS, *includes]

    def compile(self, arch: str) -> nvrtc.Compiled:
        """Compile every kernel of the family for `arch` (kept in memory, and on disk: cache.py)."""
        with self._lock:
            if arch not in self._images:
                if not source_dir().is_dir():
                    raise FileNotFoundError(f"the CUDA sources are missing: {source_dir()}")
                source, options, names = self.source(), self.options(arch), self.name_expressions()
                stem = f"{self.header.split('.')[0]}-{arch}"
                key = cache.entry_key(source, options, names, nvrtc.version())
                compiled = cache.load(stem, key)
                if compiled is None:
                    compiled = nvrtc.compile_program(source, self.header.replace(".cuh", ".cu"), options, names)
                    cache.store(stem, key, compiled)
                self._images[arch] = compiled
            return self._images[arch]

    def _functions_on(self, device: int) -> dict[str, int]:
        funcs = self._functions.get(device)
        if funcs is None:
            with self._lock:
                if device not in self._functions:
                    compiled = self.compile(target_architecture(device))
                    loaded = driver.load_functions(device, compiled.image, list(compiled.lowered.values()))
                    self._functions[device] = {expr: loaded[mangled] for expr, mangled in compiled.lowered.items()}
                funcs = self._functions[device]
        return funcs

    def launch(self, kernel: str, grid, block, stream: int, *args, dtype: int | None = None) -> None:
        """Launch `kernel` (a key of `kernels`) on the current CUDA device."""
        import torch

        spec = self.kernels[kernel]
        device = torch.cuda.current_device()
        function = self._functions_on(device)[spec.expression(dtype)]
        driver.launch(device, function, dims(grid), dims(block), stream, spec.pack(args))


def dims(shape) -> tuple[int, int, int]:
    """A grid or block shape (an int or a tuple of up to 3) as (x, y, z)."""
    if isinstance(shape, tuple):
        return tuple(int(v) for v in (*shape, 1, 1)[:3])
    return (int(shape), 1, 1)


@functools.cache
def target_architecture(device: int) -> str:
    """"sm_XY" of the device when NVRTC can emit its machine code, else PTX for the newest
    architecture NVRTC knows (the driver compiles it)."""
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    cc = major * 10 + minor
    archs = nvrtc.supported_architectures()
    if cc in archs:
        return f"sm_{cc}"
    older = [a for a in archs if a <= cc]
    if not older:
        raise RuntimeError(f"NVRTC {nvrtc.version()} cannot target compute capability {major}.{minor}")
    return f"compute_{max(older)}"
