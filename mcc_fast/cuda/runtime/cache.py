"""On-disk cache of NVRTC-compiled images, so the run-time path compiles each kernel family
once per machine rather than once per process.

Folder: $MCC_FAST_CACHE_DIR/nvrtc, else $XDG_CACHE_HOME/mcc_fast/nvrtc, else
~/.cache/mcc_fast/nvrtc; MCC_FAST_NVRTC_CACHE=0 turns it off. An entry is keyed by the
program (which holds a digest of every csrc header), the options, the name expressions,
NVRTC's version and the cuda_fp16.h / cuda_bf16.h it compiles against; it is two files
written atomically (the image, then a JSON record of its SHA-256 and the mangled names), and
an entry whose image does not match its record is ignored. Writing is best effort: a
read-only cache folder only costs the compile.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ...io.atomic import atomic_write_bytes
from .nvrtc import Compiled


def cache_dir() -> Path | None:
    """The cache folder, or None when MCC_FAST_NVRTC_CACHE=0."""
    if os.environ.get("MCC_FAST_NVRTC_CACHE", "1").strip() in ("0", "false", "no", "off"):
        return None
    base = os.environ.get("MCC_FAST_CACHE_DIR")
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "mcc_fast")
    return Path(base).expanduser() / "nvrtc"


def entry_key(source: str, options: list[str], names: list[str], nvrtc_version: tuple[int, int]) -> str:
    """SHA-256 over everything that decides the compiled image (the CUDA headers are read from
    the options' -I folders)."""
    h = hashlib.sha256()
    for part in (source, "\0".join(options), "\0".join(names), repr(nvrtc_version)):
        h.update(part.encode() + b"\1")
    for folder in (o[2:] for o in options if o.startswith("-I")):
        for name in ("cuda_fp16.h", "cuda_fp16.hpp", "cuda_bf16.h", "cuda_bf16.hpp"):
            path = Path(folder) / name
            if path.is_file():
                h.update(name.encode() + path.read_bytes())
    return h.hexdigest()


def _paths(stem: str, key: str) -> tuple[Path, Path] | None:
    folder = cache_dir()
    if folder is None:
        return None
    base = folder / f"{stem}-{key[:24]}"
    return base.with_suffix(".bin"), base.with_suffix(".json")


def load(stem: str, key: str) -> Compiled | None:
    """The cached image for `key`, or None (missing, disabled, or not matching its record)."""
    paths = _paths(stem, key)
    if paths is None:
        return None
    image_path, record_path = paths
    try:
        record = json.loads(record_path.read_text())
        image = image_path.read_bytes()
    except (OSError, ValueError):
        return None
    if record.get("key") != key or record.get("sha256") != hashlib.sha256(image).hexdigest():
        return None
    return Compiled(image, bool(record["is_cubin"]), dict(record["lowered"]), "(from the NVRTC cache)")


def store(stem: str, key: str, compiled: Compiled) -> Path | None:
    """Write `compiled` under `key`; returns the record's path, or None when nothing was written."""
    paths = _paths(stem, key)
    if paths is None:
        return None
    image_path, record_path = paths
    record = {"key": key, "sha256": hashlib.sha256(compiled.image).hexdigest(), "is_cubin": compiled.is_cubin,
              "lowered": compiled.lowered}
    try:
        atomic_write_bytes(image_path, compiled.image)
        atomic_write_bytes(record_path, json.dumps(record, indent=1).encode())
    except OSError:
        return None
    return record_path
