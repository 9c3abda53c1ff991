"""The public API as a user sees it: `__all__` of mcc_fast and its public subpackages."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PUBLIC = ("mcc_fast", "mcc_fast.ops", "mcc_fast.model", "mcc_fast.fast", "mcc_fast.inference",
          "mcc_fast.evaluation", "mcc_fast.io")


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_exists(name):
    module = importlib.import_module(name)
    for attr in module.__all__:
        assert not attr.startswith("_") or attr == "__version__", f"{name}.{attr}"
        getattr(module, attr)  # the lazy ones too


def test_dir_and_help_list_the_lazy_names_before_first_use():
    # in a fresh interpreter: a lazy name is not yet in the module's globals
    code = (
        "import importlib, pydoc\n"
        f"for name in {PUBLIC!r}:\n"
        "    module = importlib.import_module(name)\n"
        "    missing = set(module.__all__) - set(dir(module))\n"
        "    assert not missing, (name, missing)\n"
        "text = pydoc.render_doc(importlib.import_module('mcc_fast'), renderer=pydoc.plaintext)\n"
        "assert 'class Model(' in text and 'class ModelConfig(' in text\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
