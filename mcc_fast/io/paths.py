"""Checks of the output folders named on the command line (errors name the option)."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["output_folder", "writable_folder_error"]


def output_folder(path: str | os.PathLike, option: str) -> Path:
    """`path` as a Path after checking it can be a folder: not empty, and neither it nor a
    parent an existing file. Raises ValueError / NotADirectoryError naming `option`."""
    text = os.fspath(path)
    if not str(text).strip():
        raise ValueError(f"{option} is empty: expected a folder path")
    folder = Path(text)
    for p in (folder, *folder.parents):
        if p.exists() and not p.is_dir():
            where = "it" if p == folder else f"its parent {str(p)!r}"
            raise NotADirectoryError(f"{option} {text!r}: expected a folder, but {where} is an existing file")
    return folder


def writable_folder_error(folder: str | os.PathLike) -> str | None:
    """Why no file can be created in the existing folder `folder` (read-only file system, no
    permission; tried with an unnamed temporary file, so root's rights are honoured), or None."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
