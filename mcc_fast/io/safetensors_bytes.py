"""Safetensors files whose bytes depend only on their contents.

safetensors writes the ``__metadata__`` map in a random order (a Rust HashMap), so two saves of
the same weights and metadata differ byte for byte and so do their sha256 digests. Here the map
is rewritten with sorted keys inside the same header length (padded with spaces, as the format
allows), leaving every tensor's offsets as they are.
"""
from __future__ import annotations

import json
from collections.abc import Mapping

import torch

__all__ = ["safetensors_bytes"]

_HEADER_SIZE_BYTES = 8  # a little-endian u64: the JSON header's length


def safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """The safetensors file of ``tensors`` (name -> CPU contiguous tensor) and ``metadata``
    (str -> str), identical for identical inputs."""
    from safetensors.torch import save

    return _sorted_metadata(save(dict(tensors), metadata=None if metadata is None else dict(metadata)))


def _sorted_metadata(data: bytes) -> bytes:
    size = int.from_bytes(data[:_HEADER_SIZE_BYTES], "little")
    end = _HEADER_SIZE_BYTES + size
    header = json.loads(data[_HEADER_SIZE_BYTES:end])
    if "__metadata__" not in header:
        return data
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) > size:  # never expected (same content, reordered); keep what safetensors wrote
        return data
    return data[:_HEADER_SIZE_BYTES] + text + b" " * (size - len(text)) + data[end:]
