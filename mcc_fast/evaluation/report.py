"""Writing evaluation results: strict JSON and CSV, atomically (temp file, fsync, rename).

JSON has no infinity or NaN, so non-finite floats are written as the strings ``"inf"``,
``"-inf"`` and ``"nan"`` (``float()`` reads them back); ``None`` is ``null``.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

from ..io.atomic import real_target, temporary_sibling

__all__ = ["json_safe", "write_text_atomic", "write_json", "write_csv"]


def json_safe(value):
    """A copy of ``value`` (dicts, lists, numbers, strings) with non-finite floats as strings."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder,
    fsync'd and renamed over ``path``: readers see the old file or the new one, never half.
    A ``path`` that is a symbolic link is written through (its file is replaced, the link kept),
    as every atomic writer of :mod:`mcc_fast.io.atomic`; returns ``path``."""
    link = Path(path)
    path = real_target(link)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable where the platform allows it
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return link


def write_json(path: str | os.PathLike, results: dict) -> Path:
    """``results`` as indented strict JSON at ``path`` (atomic)."""
    return write_text_atomic(path, json.dumps(json_safe(results), indent=2, allow_nan=False) + "\n")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    return str(value)


def write_csv(path: str | os.PathLike, results: dict) -> Path:
    """One row per video (``name, status, num_frames, <metrics>``), failed videos with
    their error as status, and a last ``MEAN`` row with the dataset values and how many videos
    they cover (atomic)."""
    metrics = list(results["metrics"])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "status", "num_frames", *metrics])
    for video in results["videos"]:
        writer.writerow([video["name"], "ok", video["num_frames"], *(_cell(video.get(m)) for m in metrics)])
    for failed in results["failed"]:
        writer.writerow([failed["name"], f"error: {failed['error']}", 0, *([""] * len(metrics))])
    mean = results["mean"]
    failed = len(results["failed"])
    status = f"mean of {results['num_videos']} videos" + (f"; {failed} failed, left out" if failed else "")
    writer.writerow(["MEAN", status, results["num_frames"], *(_cell(mean.get(m)) for m in metrics)])
    return write_text_atomic(path, buffer.getvalue())
