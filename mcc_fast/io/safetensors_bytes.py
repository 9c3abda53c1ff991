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

__all__ = ["safetensors_bytes", "safetensors_chunks"]

_HEADER_SIZE_BYTES = 8  # a little-endian u64: the JSON header's length


def safetensors_chunks(tensors: Mapping[str, torch.Tensor],
                       metadata: Mapping[str, str] | None = None) -> tuple[bytes, memoryview]:
    """The safetensors file of ``tensors`` (name -> CPU contiguous tensor) and ``metadata``
    (str -> str), identical for identical inputs, as (size + header, tensor bytes): written one
    after the other, without joining them (no second copy of the weights in memory)."""
    from safetensors.torch import save

    data = save(dict(tensors), metadata=None if metadata is None else dict(metadata))
    end = _HEADER_SIZE_BYTES + int.from_bytes(data[:_HEADER_SIZE_BYTES], "little")
    return _sorted_metadata(data[:end]), memoryview(data)[end:]


def safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """:func:`safetensors_chunks` joined into one bytes object."""
    return b"".join(safetensors_chunks(tensors, metadata))


def _sorted_metadata(head: bytes) -> bytes:
    """The size field and header `head` with the ``__metadata__`` map sorted, same length."""
    size = len(head) - _HEADER_SIZE_BYTES
    header = json.loads(head[_HEADER_SIZE_BYTES:])
    if "__metadata__" not in header:
        return head
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) > size:  # never expected (same content, reordered); keep what safetensors wrote
        return head
    return head[:_HEADER_SIZE_BYTES] + text + b" " * (size - len(text))
