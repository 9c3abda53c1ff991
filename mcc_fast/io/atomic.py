"""Atomic file writes: a hidden temporary file in the target's folder, fsync, then rename, so a
reader never sees a half-written file and an interrupted write leaves the old one intact.

Temporary names carry the writer's pid (`.<stem>.<pid>-<random>.tmp<suffix>`): one left by a
killed writer (no such process here, older than an hour) is removed by the next write to the
same target. A target that is a symbolic link is written through (its file is replaced).
"""
from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path

#: A leftover temporary file this old (seconds) whose writer is gone is removed.
STALE_AFTER_S = 3600.0


def real_target(path: str | os.PathLike) -> Path:
    """`path`, or the file it links to when it is a symbolic link (so a write replaces that file
    and keeps the link)."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _writer_gone(pid: int | None) -> bool:
    if pid is None:
        return True
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, another user's
        return False
    return False


def remove_stale_temporaries(path: Path) -> None:
    """Delete the temporary siblings of `path` left by writers that were killed (see above)."""
    pattern = re.compile(re.escape(f".{path.stem}.") + r"(?:(\d+)-)?[0-9a-f]{12}"
                         + re.escape(f".tmp{path.suffix}") + "$")
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return
    now = time.time()
    for candidate in siblings:
        match = pattern.match(candidate.name)
        if not match:
            continue
        try:
            if not candidate.is_file() or now - candidate.stat().st_mtime < STALE_AFTER_S:
                continue
            if _writer_gone(int(match.group(1)) if match.group(1) else None):
                candidate.unlink()
        except OSError:
            continue


def temporary_sibling(path: Path) -> Path:
    """A hidden, unused path next to `path` with the same suffix (stale ones of earlier, killed
    writers removed first)."""
    path = Path(path)
    remove_stale_temporaries(path)
    return path.parent / f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp{path.suffix}"


def write_chunks(handle, data) -> None:
    """Write `data` (bytes-like, or a sequence of bytes-like chunks, one after the other) to the
    open binary file `handle`."""
    for chunk in (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data:
        handle.write(chunk)


def atomic_write_bytes(path: Path, data) -> None:
    """Write `data` (bytes-like, or a sequence of bytes-like chunks written one after the other)
    to `path` via a temporary file in the same folder, fsync and rename. The file gets the usual
    permissions (0666 less the umask), like any file the user writes."""
    path = real_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        with open(tmp, "xb") as f:
            write_chunks(f, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
