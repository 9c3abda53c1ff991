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
