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


def test_the_entry_points_annotate_what_they_return():
    # py.typed ships: a type checker reads these (names under TYPE_CHECKING resolved here by hand)
    import collections.abc
    import typing

    import numpy as np
    import torch

    import mcc_fast
    from mcc_fast.fast import FastModel, GraphedRenderer

    names = {"FastModel": FastModel, "GraphedRenderer": GraphedRenderer, "np": np}
    hints = typing.get_type_hints(mcc_fast.Model.fast, localns=names)
    assert hints["return"] is FastModel
    assert typing.get_type_hints(FastModel.cuda_graph, localns=names)["return"] is GraphedRenderer
    animate = typing.get_type_hints(mcc_fast.Model.animate, localns=names)["return"]
    assert typing.get_origin(animate) is collections.abc.Iterator

    model = mcc_fast.Model(mcc_fast.ModelConfig.small(64)).eval()
    assert isinstance(model.fast(), FastModel)
    frames = model.animate(np.zeros((64, 64, 3), np.uint8), np.zeros((1, 64, 64, 3), np.uint8))
    assert isinstance(frames, collections.abc.Iterator) and isinstance(next(frames), np.ndarray)
    assert isinstance(model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64)), torch.Tensor)


@pytest.mark.parametrize("name, lazy", [("mcc_fast", None), ("mcc_fast.fast", {"GraphedRenderer"})])
def test_lazy_names_are_imported_for_type_checkers(name, lazy):
    # a name served by a module __getattr__ is Any to mypy / pyright unless imported under TYPE_CHECKING
    import ast
    import inspect

    module = importlib.import_module(name)
    lazy = set(module._LAZY) if lazy is None else lazy
    typed = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            typed |= {alias.asname or alias.name for stmt in node.body if isinstance(stmt, ast.ImportFrom)
                      for alias in stmt.names}
    assert lazy <= typed, lazy - typed
