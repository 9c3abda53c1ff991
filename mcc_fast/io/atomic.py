"""Atomic file writes: a hidden temporary file in the target's folder, fsync, then rename, so a
reader never sees a half-written file and an interrupted write leaves the old one intact."""
from __future__ import annotations

import os
import uuid
from pathlib import Path


def temporary_sibling(path: Path) -> Path:
    """A hidden, unused path next to `path` with the same suffix."""
    return path.parent / f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder, fsync and rename.
    The file gets the usual permissions (0666 less the umask), like any file the user writes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
