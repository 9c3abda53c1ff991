"""Build script: the Python package plus the optional CUDA extension `mcc_fast._cuda`.

The extension is built by CMake (pybind11 + nvcc) from csrc/. Without nvcc, or with
MCC_FAST_NO_CUDA=1, the package installs without it and runs on Triton and PyTorch.
Architectures: MCC_FAST_CUDA_ARCH (e.g. "86;90" or "8.6 9.0+PTX") or TORCH_CUDA_ARCH_LIST;
default SASS for sm_86 and sm_90 plus compute_90 PTX.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
DEFAULT_ARCHS = "86-real;90-real;90-virtual"


def cuda_architectures(spec: str | None) -> str:
    """Turn "8.6 9.0+PTX" / "86;90" style lists into CMake CUDA_ARCHITECTURES."""
    if not spec:
        return DEFAULT_ARCHS
    out = []
    for item in re.split(r"[;,\s]+", spec.strip()):
        if not item:
            continue
        ptx = item.endswith("+PTX")
        item = item.removesuffix("+PTX").replace(".", "").replace("sm_", "").replace("compute_", "")
        if not item.isdigit():
            raise ValueError(f"MCC_FAST_CUDA_ARCH/TORCH_CUDA_ARCH_LIST: cannot parse architecture {item!r}")
        out.append(f"{item}-real")
        if ptx:
            out.append(f"{item}-virtual")
    return ";".join(out)


def find_nvcc() -> str | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = [Path(home) / "bin" / "nvcc"] if home else []
    candidates.append(Path("/usr/local/cuda/bin/nvcc"))
    for c in candidates:
        if c.is_file():
            return str(c)
    return shutil.which("nvcc")


def cmake_executable() -> str:
    try:
        import cmake  # the PyPI package, when installed

        return str(Path(cmake.CMAKE_BIN_DIR) / "cmake")
    except ImportError:
        return shutil.which("cmake") or "cmake"


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configures and builds csrc/ with CMake; skips cleanly when CUDA is unavailable."""

    def run(self):
        reason = None
        if os.environ.get("MCC_FAST_NO_CUDA", "0") not in ("", "0"):
            reason = "MCC_FAST_NO_CUDA is set"
        elif find_nvcc() is None:
            reason = "nvcc was not found (set CUDA_HOME)"
        if reason:
            print(f"mcc_fast: building WITHOUT the CUDA extension ({reason}); "
                  "the Triton and PyTorch backends will be used.", flush=True)
            return
        super().run()

    def build_extension(self, ext: Extension) -> None:
        import pybind11

        nvcc = find_nvcc()
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        out_dir.mkdir(parents=True, exist_ok=True)
        build_temp = Path(self.build_temp).resolve() / "cmake"
        build_temp.mkdir(parents=True, exist_ok=True)
        archs = cuda_architectures(os.environ.get("MCC_FAST_CUDA_ARCH") or os.environ.get("TORCH_CUDA_ARCH_LIST"))
        print(f"mcc_fast: building the CUDA extension for {archs} with {nvcc}", flush=True)
        cfg = [
            f"-DCMAKE_CUDA_COMPILER={nvcc}",
            f"-DMCC_FAST_CUDA_ARCHITECTURES={archs}",
            f"-DMCC_FAST_OUTPUT_DIR={out_dir}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DPython3_EXECUTABLE={sys.executable}",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
        if shutil.which("ninja") or _has_ninja_module():
            cfg.append("-GNinja")
        cmake = cmake_executable()
        subprocess.check_call([cmake, "-S", str(ROOT), "-B", str(build_temp), *cfg])
        jobs = os.environ.get("MAX_JOBS") or str(os.cpu_count() or 2)
        subprocess.check_call([cmake, "--build", str(build_temp), "--parallel", jobs])


def _has_ninja_module() -> bool:
    try:
        import ninja  # noqa: F401

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        return True
    except ImportError:
        return False


setup(
    packages=find_packages(include=["mcc_fast", "mcc_fast.*"]),
    ext_modules=[CMakeExtension("mcc_fast._cuda")],
    cmdclass={"build_ext": CMakeBuild},
)
