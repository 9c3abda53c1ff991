"""One import namespace: mcc_fast (kernels and training only as mcc_fast.kernels / mcc_fast.training)."""
from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

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


def test_wheel_ships_the_kernel_sources_for_the_runtime_compiler(tmp_path):
    """A wheel built without nvcc still holds csrc/'s headers (mcc_fast/cuda/csrc), so the cuda
    backend can compile them at run time with NVRTC (mcc_fast.cuda.runtime), and the Triton
    kernels and trainer as mcc_fast subpackages."""
    import shutil
    import zipfile

    repo = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "CMakeLists.txt", "README.md", "LICENSE", "NOTICE"):
        shutil.copy2(repo / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info")
    for name in ("mcc_fast", "kernels", "training", "csrc"):
        shutil.copytree(repo / name, src / name, symlinks=True, ignore=ignore)
    env = {**__import__("os").environ, "MCC_FAST_NO_CUDA": "1"}
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, env=env,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("mcc_fast-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    headers = {p.name for p in [*(repo / "csrc").glob("*.h"), *(repo / "csrc").glob("*.cuh")]}
    assert "warp_kernels.cuh" in headers and {f"mcc_fast/cuda/csrc/{h}" for h in headers} <= names
    assert not any(n.endswith((".cu", ".cpp")) for n in names)  # only what NVRTC reads
    assert "mcc_fast/cuda/runtime/launch.py" in names and "mcc_fast/kernels/vq_search.py" in names
    assert "mcc_fast/training/trainer.py" in names
    assert not any(n.startswith(("kernels/", "training/", "csrc/")) for n in names)
