"""Build script: the Python package plus the optional CUDA extension `mcc_fast._cuda`.

The extension is built by CMake (pybind11 + nvcc) from csrc/. Without nvcc, or with
MCC_FAST_NO_CUDA=1, the package installs without it and runs on Triton and PyTorch;
MCC_FAST_REQUIRE_CUDA_BUILD=1 makes a missing nvcc an error instead. nvcc is looked for in
$CUDA_HOME/bin (or $CUDA_PATH/bin; set but without nvcc: an error), then on PATH, then in
/usr/local/cuda/bin. Architectures: MCC_FAST_CUDA_ARCH (e.g. "86;90", "8.6 9.0+PTX", "9.0a",
"native", "all") or TORCH_CUDA_ARCH_LIST; default SASS for sm_86 and sm_90 plus compute_90 PTX.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_namespace_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
DEFAULT_ARCHS = "86-real;90-real;90-virtual"


_CMAKE_KEYWORDS = ("native", "all", "all-major")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def env_flag(name: str) -> bool:
    """A boolean environment variable: 1/true/yes/on or 0/false/no/off/unset (else ValueError)."""
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={os.environ[name]!r}: expected 1/true/yes/on or 0/false/no/off")


def cuda_architectures(spec: str | None, source: str = "MCC_FAST_CUDA_ARCH") -> str:
    """Turn "8.6 9.0+PTX" / "86;90" / "sm_90a" / "compute_90" style lists into CMake
    CUDA_ARCHITECTURES ("compute_XX" is PTX only; "native", "all", "all-major" pass through)."""
    if spec is None or not spec.strip():
        return DEFAULT_ARCHS
    if spec.strip().lower() in _CMAKE_KEYWORDS:
        return spec.strip().lower()
    out = []
    for raw in re.split(r"[;,\s]+", spec.strip()):
        if not raw:
            continue
        ptx = raw.endswith("+PTX")
        item = raw.removesuffix("+PTX")
        virtual_only = item.startswith("compute_")
        item = item.replace(".", "").removeprefix("sm_").removeprefix("compute_")
        if not re.fullmatch(r"\d{2,3}[af]?", item):
            raise ValueError(f"{source}={spec!r}: cannot parse architecture {raw!r} (expected e.g. 86, 8.6, "
                             "sm_90a, compute_90, 9.0+PTX, native or all)")
        if not virtual_only:
            out.append(f"{item}-real")
        if ptx or virtual_only:
            out.append(f"{item}-virtual")
    if not out:
        raise ValueError(f"{source}={spec!r}: no architecture given (unset it for the default {DEFAULT_ARCHS})")
    return ";".join(out)


def find_nvcc() -> str | None:
    """nvcc from $CUDA_HOME / $CUDA_PATH (RuntimeError when set but holding none), else PATH,
    else /usr/local/cuda; None when there is none."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home:
            nvcc = Path(home) / "bin" / "nvcc"
            if not nvcc.is_file():
                raise RuntimeError(f"{var}={home!r} holds no bin/nvcc: point it at a CUDA toolkit, or unset it")
            return str(nvcc)
    found = shutil.which("nvcc")
    if found:
        return found
    fallback = Path("/usr/local/cuda/bin/nvcc")
    return str(fallback) if fallback.is_file() else None


def _note(message: str) -> None:
    """A build message pip shows without -v (it hides the build's stdout)."""
    import warnings

    print(message, flush=True)
    warnings.warn(message, stacklevel=2)


def _missing(package: str) -> RuntimeError:
    """The error for a build requirement that is not installed (--no-build-isolation fetches none)."""
    return RuntimeError(f"building the CUDA extension needs {package} (pip install {package}; with "
                        "--no-build-isolation pip installs no build requirements), or set MCC_FAST_NO_CUDA=1 "
                        "to install without the compiled kernels")


def cmake_executable() -> str:
    """CMake from the PyPI package when installed, else from PATH (RuntimeError when neither)."""
    try:
        import cmake  # the PyPI package, when installed

        return str(Path(cmake.CMAKE_BIN_DIR) / "cmake")
    except ImportError:
        found = shutil.which("cmake")
        if found is None:
            raise _missing("cmake") from None
        return found


class FreshBuildPy(build_py):
    """Copies the package into build/ afresh: a module deleted or renamed since an earlier build in
    this folder (pip builds a local folder in place) must not ship in this one. build_ext runs after
    it and puts the extension back (CMake's own build folder is kept, so that stays incremental)."""

    def run(self):
        if not getattr(self, "editable_mode", False):
            shutil.rmtree(Path(self.build_lib) / "mcc_fast", ignore_errors=True)
        super().run()


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configures and builds csrc/ with CMake; skips cleanly when CUDA is unavailable."""

    def run(self):
        reason = None
        if env_flag("MCC_FAST_NO_CUDA"):
            reason = "MCC_FAST_NO_CUDA is set"
        elif find_nvcc() is None:
            reason = "nvcc was not found (looked in $CUDA_HOME/bin, on PATH and in /usr/local/cuda/bin)"
            if env_flag("MCC_FAST_REQUIRE_CUDA_BUILD"):
                raise RuntimeError(f"MCC_FAST_REQUIRE_CUDA_BUILD=1, but the CUDA extension cannot be built: {reason}")
        if reason:
            self._remove_stale_extensions()
            _note(f"mcc_fast: building WITHOUT the CUDA extension ({reason}); "
                  "the Triton and PyTorch backends will be used.")
            return
        super().run()

    def _remove_stale_extensions(self) -> None:
        """An earlier CUDA build's module in build/ (or in place) must not ship in this one."""
        for ext in self.extensions:
            targets = [Path(self.get_ext_fullpath(ext.name))]
            if self.inplace:
                targets.append(ROOT / self.get_ext_filename(ext.name))
            for target in targets:
                target.unlink(missing_ok=True)

    def build_extension(self, ext: Extension) -> None:
        try:
            import pybind11
        except ImportError:
            raise _missing("pybind11") from None
        cmake = cmake_executable()
        nvcc = find_nvcc()
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        out_dir.mkdir(parents=True, exist_ok=True)
        build_temp = Path(self.build_temp).resolve() / "cmake"
        build_temp.mkdir(parents=True, exist_ok=True)
        source = "MCC_FAST_CUDA_ARCH" if os.environ.get("MCC_FAST_CUDA_ARCH", "").strip() else "TORCH_CUDA_ARCH_LIST"
        archs = cuda_architectures(os.environ.get(source), source)
        _note(f"mcc_fast: building the CUDA extension for {archs} with {nvcc}")
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
        jobs = os.environ.get("MAX_JOBS") or str(os.cpu_count() or 2)
        try:
            subprocess.check_call([cmake, "-S", str(ROOT), "-B", str(build_temp), *cfg])
            subprocess.check_call([cmake, "--build", str(build_temp), "--parallel", jobs])
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"building the CUDA extension failed ({exc}); the log above says why. "
                               "MCC_FAST_NO_CUDA=1 installs without the compiled kernels") from None


def _has_ninja_module() -> bool:
    try:
        import ninja  # noqa: F401

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        return True
    except ImportError:
        return False


if __name__ == "__main__":  # pip's build backend runs this file as __main__; tests import its helpers
    setup(
        packages=find_namespace_packages(include=["mcc_fast", "mcc_fast.*"]),
        ext_modules=[CMakeExtension("mcc_fast._cuda")],
        cmdclass={"build_py": FreshBuildPy, "build_ext": CMakeBuild},
    )
