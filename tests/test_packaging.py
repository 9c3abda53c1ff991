"""One import namespace: mcc_fast (kernels and training only as mcc_fast.kernels / mcc_fast.training)."""
from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mcc_fast


def test_subpackages_live_under_mcc_fast():
    for name in ("mcc_fast.kernels", "mcc_fast.training", "mcc_fast.ops", "mcc_fast.reference"):
        module = importlib.import_module(name)
        assert Path(module.__file__).resolve().parent.name in {name.split(".")[-1], "kernels", "training"}


def test_no_top_level_kernels_or_training_installed():
    site = Path(mcc_fast.__file__).resolve().parent.parent
    # In an installed (non-editable) layout mcc_fast sits in site-packages: nothing else of ours there.
    if site.name == "site-packages":
        assert not (site / "kernels").exists()
        assert not (site / "training").exists()
    for dist_file in site.glob("mcc_fast-*.dist-info/top_level.txt"):
        assert dist_file.read_text().split() == ["mcc_fast"]


def test_version_and_backends_from_a_fresh_interpreter():
    code = "import mcc_fast, sys; print(mcc_fast.__version__); print(sorted(mcc_fast.backends()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(mcc_fast.__file__).resolve().parent.parent)).stdout.split("\n")
    assert out[0] == mcc_fast.__version__
    assert out[1] == "['cuda', 'torch', 'triton']"


def test_import_is_light_and_has_no_side_effects(tmp_path):
    """`import mcc_fast` loads torch and the ops, nothing heavier: not torch._dynamo (seconds; it also
    creates the inductor cache folder and sets $TORCHINDUCTOR_CACHE_DIR), not triton, no CUDA
    context, no warning, no change to the environment."""
    code = (
        "import os, sys, warnings\n"
        "warnings.simplefilter('error')\n"
        "env = dict(os.environ)\n"
        "import mcc_fast, torch\n"
        "assert dict(os.environ) == env, set(os.environ.items()) ^ set(env.items())\n"
        "heavy = [m for m in ('torch._dynamo', 'triton', 'mcc_fast.model', 'mcc_fast.fast', 'av', 'PIL') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert not torch.cuda.is_initialized()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True, cwd=tmp_path, env=env)
    assert list(tmp_path.iterdir()) == []


def test_the_backend_probes_carry_torch_compiles_constant_result_mark():
    # _dispatch marks its probes without importing torch._dynamo: the mark must be the one torch sets
    import torch

    from mcc_fast import _dispatch

    def probe():
        return None

    marked = dict(vars(torch.compiler.assume_constant_result(probe)))
    assert marked and marked.items() <= vars(_dispatch.triton_status).items()
    assert marked.items() <= vars(_dispatch.cuda_status).items()


def test_installed_metadata_version_is_the_package_version():
    # the version is written once (mcc_fast.__version__); pip's metadata reads it from there
    from importlib.metadata import version

    assert version("mcc_fast") == mcc_fast.__version__


REPO = Path(__file__).resolve().parents[1]


def _setup_module():
    """setup.py's helpers (its setup() call runs only as __main__, as pip's backend runs it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mcc_fast_setup", REPO / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_BUILD_OUTPUTS = ("build", "dist", "__pycache__", ".pytest_cache", ".hypothesis", ".benchmarks")


def _is_build_output(rel: Path) -> bool:
    folders = rel.parts[:-1]
    return any(p in _BUILD_OUTPUTS or p.endswith(".egg-info") for p in folders) or rel.suffix in (".pyc", ".so")


def _source_files(root: Path = REPO) -> list[str]:
    """The source tree's files, relative to `root` (POSIX names): git's tracked files in a checkout;
    in an unpacked sdist (PKG-INFO at its root, no .git; its symlinks are copies there) every file but
    build outputs and *.egg-info/. Skips the test when `root` is neither."""
    if (root / ".git").exists():
        out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
        return sorted(filter(None, out.decode().split("\0")))
    if not (root / "PKG-INFO").is_file():
        pytest.skip(f"{root} is neither a git checkout nor an unpacked source distribution")
    files = (p.relative_to(root) for p in root.rglob("*") if p.is_file())
    return sorted(rel.as_posix() for rel in files if not _is_build_output(rel))


def _tracked_copy(dest: Path, root: Path = REPO) -> Path:
    """The source tree's files (a clean checkout, or an unpacked sdist) copied to `dest`, symlinks kept."""
    import shutil

    for name in _source_files(root):
        src, out = root / name, dest / name
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            out.symlink_to(os.readlink(src))
        elif src.is_file():
            shutil.copy2(src, out)
    return dest


def _build_env(**extra: str) -> dict:
    return {**os.environ, "MCC_FAST_NO_CUDA": "1", "MCC_FAST_REQUIRE_CUDA_BUILD": "0", **extra}


def test_sdist_carries_the_cuda_sources_tests_and_docs_and_builds_a_wheel(tmp_path):
    """The sdist must build the extension where nvcc exists (CMakeLists.txt, every csrc/ file)
    and run the test suite (tests/ with its helpers and data, bench/, docs/); the wheel built
    from it holds csrc/'s headers (mcc_fast/cuda/csrc, for NVRTC at run time), the Triton
    kernels and trainer as mcc_fast subpackages, and nothing at top level."""
    import tarfile
    import zipfile

    src = _tracked_copy(tmp_path / "src")
    proc = subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
                           "print(b.build_sdist(sys.argv[1]))", str(tmp_path / "sdist")],
                          cwd=src, capture_output=True, text=True, env=_build_env(), check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sdist,) = (tmp_path / "sdist").glob("mcc_fast-*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    tracked = _source_files()
    wanted = {n for n in tracked if n.startswith(("csrc/", "tests/", "bench/", "docs/", "kernels/", "training/"))
              and not n.startswith("bench/results/")}
    wanted |= {"CMakeLists.txt", "CITATION.cff", "LICENSE", "NOTICE", "README.md", "setup.py", "pyproject.toml"}
    assert not wanted - members, sorted(wanted - members)[:10]
    with tarfile.open(sdist) as tar:  # the suite runs from the unpacked sdist too (no git there)
        tar.extractall(tmp_path / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    assert not wanted - set(_source_files(unpacked)), sorted(wanted - set(_source_files(unpacked)))[:10]

    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps",
                           "-w", str(tmp_path / "dist"), str(sdist)], capture_output=True, text=True,
                          env=_build_env(), check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("mcc_fast-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    headers = {p.name for p in [*(REPO / "csrc").glob("*.h"), *(REPO / "csrc").glob("*.cuh")]}
    assert "warp_kernels.cuh" in headers and {f"mcc_fast/cuda/csrc/{h}" for h in headers} <= names
    assert not any(n.endswith((".cu", ".cpp", ".so")) for n in names)  # only what NVRTC reads; no module
    assert "mcc_fast/cuda/runtime/launch.py" in names and "mcc_fast/kernels/vq_search.py" in names
    assert "mcc_fast/training/trainer.py" in names and "mcc_fast/training/configs/smoke.yaml" in names
    assert not any(n.startswith(("kernels/", "training/", "csrc/", "tests/")) for n in names)


def test_a_build_without_cuda_drops_an_earlier_builds_module(tmp_path):
    import sysconfig
    import zipfile

    src = _tracked_copy(tmp_path / "src")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    stale = [src / "build" / f"lib.{plat}-cpython-{sys.version_info.major}{sys.version_info.minor}" / "mcc_fast"
             / f"_cuda{suffix}" for plat in (sysconfig.get_platform(),)]
    for p in stale:
        p.parent.mkdir(parents=True)
        p.write_bytes(b"an earlier CUDA build")
        # Modules an earlier build copied there that the sources no longer have (deleted or renamed since).
        (p.parent / "kernels").mkdir()
        (p.parent / "kernels" / "renamed_since.py").write_text("raise ImportError('stale')\n")
        (p.parent / "removed_since.py").write_text("raise ImportError('stale')\n")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True,
                          env=_build_env(), check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("mcc_fast-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.endswith(".so")]
    assert not [n for n in names if n.endswith("_since.py")]
    assert "mcc_fast/kernels/warp.py" in names
    assert "building WITHOUT the CUDA extension" in proc.stderr  # shown by pip without -v


def test_cuda_architecture_lists():
    setup = _setup_module()
    assert setup.cuda_architectures(None) == setup.cuda_architectures("  ") == setup.DEFAULT_ARCHS
    assert setup.cuda_architectures("8.6 9.0+PTX") == "86-real;90-real;90-virtual"
    assert setup.cuda_architectures("86;sm_90a") == "86-real;90a-real"
    assert setup.cuda_architectures("compute_90") == "90-virtual"  # PTX only
    assert setup.cuda_architectures("native") == "native" and setup.cuda_architectures("ALL") == "all"
    for bad, match in (("foo", "cannot parse architecture 'foo'"), ("7", "cannot parse"), (";;", "no architecture")):
        with pytest.raises(ValueError, match=match):
            setup.cuda_architectures(bad, "TORCH_CUDA_ARCH_LIST")


def test_build_flags_and_nvcc_lookup(tmp_path, monkeypatch):
    setup = _setup_module()
    for value, expected in (("1", True), ("yes", True), ("0", False), ("false", False), ("", False)):
        monkeypatch.setenv("MCC_FAST_NO_CUDA", value)
        assert setup.env_flag("MCC_FAST_NO_CUDA") is expected
    monkeypatch.setenv("MCC_FAST_NO_CUDA", "maybe")
    with pytest.raises(ValueError, match="MCC_FAST_NO_CUDA='maybe'"):
        setup.env_flag("MCC_FAST_NO_CUDA")
    monkeypatch.delenv("MCC_FAST_NO_CUDA")
    # CUDA_HOME first (an error when it holds no nvcc), then PATH.
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "no-toolkit"))
    with pytest.raises(RuntimeError, match="CUDA_HOME=.*no-toolkit.*holds no bin/nvcc"):
        setup.find_nvcc()
    fake = tmp_path / "toolkit" / "bin" / "nvcc"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "toolkit"))
    assert setup.find_nvcc() == str(fake)
    monkeypatch.delenv("CUDA_HOME")
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    assert setup.find_nvcc() == str(fake)


def test_required_cuda_build_without_nvcc_fails(monkeypatch):
    from setuptools import Distribution

    setup = _setup_module()
    monkeypatch.setattr(setup, "find_nvcc", lambda: None)
    monkeypatch.delenv("MCC_FAST_NO_CUDA", raising=False)
    monkeypatch.setenv("MCC_FAST_REQUIRE_CUDA_BUILD", "1")
    command = setup.CMakeBuild(Distribution({"ext_modules": [setup.CMakeExtension("mcc_fast._cuda")]}))
    command.ensure_finalized()
    with pytest.raises(RuntimeError, match="MCC_FAST_REQUIRE_CUDA_BUILD=1, but .* nvcc was not found"):
        command.run()
    monkeypatch.setenv("MCC_FAST_REQUIRE_CUDA_BUILD", "0")
    with pytest.warns(UserWarning, match="building WITHOUT the CUDA extension"):
        command.run()


def test_a_missing_build_requirement_is_named(monkeypatch, tmp_path):
    """With --no-build-isolation pip fetches nothing: a CUDA build without pybind11 or CMake says
    which is missing and how to go on, instead of a traceback (ModuleNotFoundError, FileNotFoundError)."""
    import types

    from setuptools import Distribution

    setup = _setup_module()
    monkeypatch.setattr(setup, "find_nvcc", lambda: "/nonexistent/nvcc")
    ext = setup.CMakeExtension("mcc_fast._cuda")
    command = setup.CMakeBuild(Distribution({"ext_modules": [ext]}))
    command.build_temp, command.build_lib = str(tmp_path / "temp"), str(tmp_path / "lib")
    command.ensure_finalized()
    monkeypatch.setitem(sys.modules, "pybind11", None)  # `import pybind11` raises ImportError
    with pytest.raises(RuntimeError, match=r"needs pybind11 \(pip install pybind11.*MCC_FAST_NO_CUDA=1"):
        command.build_extension(ext)
    monkeypatch.setitem(sys.modules, "pybind11", types.ModuleType("pybind11"))  # installed or not here
    monkeypatch.setitem(sys.modules, "cmake", None)
    monkeypatch.setattr(setup.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"needs cmake \(pip install cmake.*MCC_FAST_NO_CUDA=1"):
        command.build_extension(ext)
