"""Python side of the compiled CUDA kernels in csrc/ (module `mcc_fast._cuda`).

The compiled functions take raw device pointers, sizes, strides and the stream; the
wrappers in this package check arguments, allocate outputs with torch and pass pointers.
"""
from __future__ import annotations

import functools
import importlib


@functools.lru_cache(maxsize=1)
def _load():
    try:
        return importlib.import_module("mcc_fast._cuda"), None
    except ImportError as exc:
        return None, (
            "the compiled module mcc_fast._cuda is not installed (built without nvcc or with "
            f"MCC_FAST_NO_CUDA=1; reinstall with nvcc on PATH): {exc}"
        )


def extension_error() -> str | None:
    """None when the compiled module loads, else why not."""
    return _load()[1]


def extension():
    """The compiled module; RuntimeError naming the reason when it is unavailable."""
    module, err = _load()
    if module is None:
        raise RuntimeError(f"mcc_fast cuda backend unavailable: {err}")
    return module
