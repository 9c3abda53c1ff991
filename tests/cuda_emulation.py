"""Run csrc/'s CUDA kernels on the CPU, behind the real launchers, for tests without a GPU.

`build(family, tmp_dir)` compiles a kernel family's header (csrc/*_kernels.cuh) with g++ and
tests/cuda_emulation.h (threads for CUDA threads, barriers for __syncthreads and shuffles;
tests/cuda_emulation_mma.h for the tensor-core wmma calls),
with one C entry point per kernel and element type generated from the run-time launcher's own
parameter list (mcc_fast.cuda.runtime). `install(monkeypatch, *libs)` then makes the run-time
launchers call those entry points instead of the driver, and points the wrappers in
mcc_fast.cuda at the run-time module, so mcc_fast.cuda.{vq,warp,dense_motion} run on CPU
tensors exactly as on a GPU, up to the host's libm and the order of atomics.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from mcc_fast.cuda.runtime import launch

CSRC = Path(__file__).resolve().parents[1] / "csrc"
PRELUDE = Path(__file__).resolve().parent / "cuda_emulation.h"
MMA = Path(__file__).resolve().parent / "cuda_emulation_mma.h"  # stands in for <mma.h>
_SUFFIX = {0: "_f32", 1: "_f16", 2: "_bf16"}
_DIMS = (ctypes.c_uint,) * 6
# Device-code keywords -> host C++ (the kernels are otherwise compiled as written).
_HOST_SPELLING = ((r"__launch_bounds__\([^)]*\)", ""), (r"\b__global__\b", ""), (r"\b__device__\b", ""),
                  (r"\b__forceinline__\b", "inline"), (r"\b__restrict__\b", "__restrict"),
                  (r"\b__shared__\b", "static"), (r"__align__\((\d+)\)", r"__attribute__((aligned(\1)))"))


def _cpp_type(typ) -> str:
    if isinstance(typ, type) and issubclass(typ, ctypes.Structure):
        return f"mcc::{typ.__name__}"
    return {launch.PTR: "unsigned long long", launch.I64: "long long", launch.I32: "int", launch.F32: "float",
            launch.BOOL: "bool"}[typ]


def _entry_points(family: launch.Family) -> str:
    out = []
    for key, kernel in family.kernels.items():
        params = [f"{_cpp_type(t)} a{i}" for i, t in enumerate(kernel.params)]
        args = [f"emu::Ptr{{a{i}}}" if t is launch.PTR else f"a{i}" for i, t in enumerate(kernel.params)]
        dtypes = [None] if "{T}" not in kernel.name else list(_SUFFIX)
        for dtype in dtypes:
            name = f"emu_{key}{_SUFFIX.get(dtype, '')}"
            out.append(f'extern "C" void {name}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, '
                       f'unsigned bz, {", ".join(params)}) {{\n'
                       f'  emu::launch({{gx, gy, gz}}, {{bx, by, bz}}, [&] {{ {kernel.expression(dtype)}'
                       f'({", ".join(args)}); }});\n}}')
    return "\n".join(out)


_PTR = """namespace emu {
struct Ptr {  // a device pointer passed as an integer, converted to the kernel's pointer type
  unsigned long long v;
  template <typename T> operator T*() const { return reinterpret_cast<T*>(v); }
};
}  // namespace emu
"""


def build(family: launch.Family, out_dir: Path) -> ctypes.CDLL:
    """g++-compiled emulation of `family`; skips the test where g++ or the CUDA headers are missing."""
    gxx = shutil.which("g++")
    include = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"
    if gxx is None or not (include / "cuda_fp16.h").exists():
        pytest.skip("needs g++ and the CUDA headers")
    headers = out_dir / "csrc"
    headers.mkdir(parents=True, exist_ok=True)
    for path in launch.source_files(CSRC):
        text = path.read_text()
        for pattern, repl in _HOST_SPELLING:
            text = re.sub(pattern, repl, text)
        (headers / path.name).write_text(text)
    shutil.copy(MMA, headers / "mma.h")
    src = out_dir / f"emu_{family.header.split('.')[0]}.cpp"
    src.write_text(f'#include "{PRELUDE}"\n#include "{family.header}"\n{_PTR}{_entry_points(family)}\n')
    lib = out_dir / f"lib{src.stem}.so"
    proc = subprocess.run([gxx, "-O1", "-std=c++20", "-pthread", "-shared", "-fPIC", "-ffp-contract=off",
                           f"-I{headers}", f"-I{include}", str(src), "-o", str(lib)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return ctypes.CDLL(str(lib))


def _emulated_launch(libs: dict[str, ctypes.CDLL]):
    def run(self, kernel, grid, block, stream, *args, dtype=None):
        spec = self.kernels[kernel]
        fn = getattr(libs[self.header], f"emu_{kernel}{_SUFFIX.get(dtype, '') if '{T}' in spec.name else ''}")
        fn.argtypes, fn.restype = [*_DIMS, *spec.params], None
        fn(*launch.dims(grid), *launch.dims(block), *spec.pack(args))

    return run


def install(monkeypatch, *families_and_libs) -> None:
    """Route the run-time launchers of the given (family, lib) pairs to the emulation, and the
    wrappers in mcc_fast.cuda to the run-time module, on CPU tensors."""
    import importlib

    from mcc_fast.cuda import runtime

    libs = {family.header: lib for family, lib in families_and_libs}
    monkeypatch.setattr(launch.Family, "launch", _emulated_launch(libs))
    for name in ("vq", "warp", "dense_motion"):
        wrappers = importlib.import_module(f"mcc_fast.cuda.{name}")
        monkeypatch.setattr(wrappers, "extension", lambda kind=None, device=None: runtime.module())
        monkeypatch.setattr(wrappers, "current_stream", lambda t: 0)
    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
