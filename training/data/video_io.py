"""Whole-clip video and image I/O for datasets, on top of :mod:`mcc_fast.io.video`.

The package's one video module, :mod:`mcc_fast.io.video`, owns opening, probing,
streaming decode, still images and the error type; this module adds what datasets and
the synthetic generator need: frame folders, whole-clip and random-access decode,
resizing, whole-clip encode. Frames are ``uint8`` RGB arrays: one frame ``(H, W, 3)``,
a clip ``(F, H, W, 3)``. Writers are atomic: they write a temporary file in the
destination folder and rename it over the target, so a crash never leaves a
half-written file under the final name.
"""
from __future__ import annotations

import os
import re
import shutil
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from mcc_fast.io.atomic import real_target
from mcc_fast.io.video import (
    IMAGE_EXTENSIONS,
    VideoInfo,
    VideoReadError,
    _av,
    _open_video,
    iter_video_frames,
    temporary_sibling,
    upright,
    probe_video,
    read_image,
)

#: File suffixes treated as video containers (anything else PyAV can open also works
#: when passed explicitly to :func:`read_video_frames`).
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".gif", ".mpg", ".mpeg", ".flv", ".wmv", ".ts"}
)

__all__ = [
    "VIDEO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "VideoInfo",
    "VideoReadError",
    "is_video_file",
    "is_image_file",
    "natural_key",
    "list_frame_files",
    "probe_video",
    "iter_video_frames",
    "read_video_frames",
    "read_video_frames_at",
    "read_image",
    "resize_frames",
    "atomic_path",
    "write_video",
    "write_image",
]


def is_video_file(path: str | os.PathLike) -> bool:
    """True when ``path`` has a video suffix (see :data:`VIDEO_EXTENSIONS`)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def is_image_file(path: str | os.PathLike) -> bool:
    """True when ``path`` has an image suffix (see :data:`IMAGE_EXTENSIONS`)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key ordering ``frame2.png`` before ``frame10.png``."""
    return tuple(int(p) if p.isdigit() else p.lower() for p in _DIGITS.split(name))


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """Image files of a frame folder in natural order (hidden files skipped)."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and is_image_file(p) and not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.name))


def read_video_frames(path: str | os.PathLike, max_frames: int | None = None, *,
                      transform: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Decode a whole video file (or a folder of frame images) to uint8 ``(F, H, W, 3)``.

    ``max_frames`` keeps only the first frames. ``transform`` (e.g. a resize) is applied to each
    uint8 ``(H, W, 3)`` frame as it is decoded, so only one frame at the file's own size is held at
    a time (the result is ``(F, H', W', 3)``). Raises :class:`VideoReadError` when the input is
    unreadable, has no frames, or its frames change size.
    """
    path = Path(path)
    if path.is_dir():
        files = list_frame_files(path)
        if max_frames is not None:
            files = files[:max_frames]
        source: Iterator[np.ndarray] = (read_image(f) for f in files)
    else:
        source = iter_video_frames(path, max_frames=max_frames, strict=True)  # as the random-access reader
    frames, first_shape = [], None
    try:
        for frame in source:
            first_shape = frame.shape if first_shape is None else first_shape
            if frame.shape != first_shape:
                _stack_frames([np.empty(first_shape, np.uint8), frame], path)  # raises, naming both sizes
            frames.append(frame if transform is None else transform(frame))
    finally:
        source.close()
    if not frames:
        raise VideoReadError(f"video {str(path)!r} has no frames")
    return _stack_frames(frames, path)


def _stack_frames(frames: Sequence[np.ndarray], path) -> np.ndarray:
    """(F, H, W, 3) of equally sized frames; VideoReadError naming `path` otherwise (a stream
    whose resolution changes is unusable, like an unreadable one)."""
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise VideoReadError(f"frames of {str(path)!r} have different sizes: {sorted(shapes)}")
    return np.stack(frames)


def read_video_frames_at(path: str | os.PathLike, indices: Sequence[int]) -> np.ndarray:
    """Decode only the frames ``indices`` (any order, repeats allowed) of a video file:
    uint8 ``(len(indices), H, W, 3)``.

    Decoding stops after the largest index; an index past the last decodable frame
    gives the last frame (containers may over-count). Raises :class:`VideoReadError`
    when the file is unreadable before that point or has no frames.
    """
    wanted = [int(i) for i in indices]
    if not wanted:
        raise ValueError("indices must not be empty")
    if min(wanted) < 0:
        raise ValueError(f"indices must be >= 0, got {min(wanted)}")
    last = max(wanted)
    picked: dict[int, np.ndarray] = {}
    need = set(wanted)
    av = _av()
    with _open_video(path, "video") as container:
        stream = container.streams.video[0]
        count = 0  # frames decoded so far
        final = None
        try:
            for frame in container.decode(stream):
                if count in need:
                    picked[count] = upright(frame)
                final = frame
                count += 1
                if count > last:
                    break
        except (av.error.FFmpegError, ValueError) as exc:
            raise VideoReadError(f"cannot decode video {str(path)!r} after {count} frames: {exc}") from exc
        if final is None:
            raise VideoReadError(f"video {str(path)!r} has no frames")
        if count <= last:  # ran out of frames: indices past the end get the final frame
            tail = picked[count - 1] if (count - 1) in picked else upright(final)
            for i in wanted:
                if i >= count:
                    picked[i] = tail
    return _stack_frames([picked[i] for i in wanted], path)


def resize_frames(frames: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize uint8 ``(F, H, W, 3)`` or ``(H, W, 3)`` to ``size`` = S or (H', W').

    Bicubic with PIL's antialiasing on downscale; a no-op (no copy) when the size
    already matches.
    """
    from PIL import Image

    out_h, out_w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    single = frames.ndim == 3
    clip = frames[None] if single else frames
    if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (F, H, W, 3) or (H, W, 3), got {frames.dtype} {frames.shape}")
    if clip.shape[1:3] == (out_h, out_w):
        return frames
    out = np.stack(
        [np.asarray(Image.fromarray(f).resize((out_w, out_h), Image.Resampling.BICUBIC)) for f in clip]
    )
    return out[0] if single else out


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (hidden, same suffix, not yet created);
    rename it onto ``path`` when the block succeeds, delete it when the block raises.
    Works for files and for folders created at the temporary path."""
    path = real_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = temporary_sibling(path)
    try:
        yield tmp_path
        if tmp_path.is_dir() and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp_path, path)
    except BaseException:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        else:
            tmp_path.unlink(missing_ok=True)
        raise


def _check_clip(frames: np.ndarray, name: str = "frames") -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (F, H, W, 3) array, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got {frames.dtype}")
    return np.ascontiguousarray(frames)


_CONTAINER_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi", ".webm": "webm"}


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | Sequence[np.ndarray],
    fps: float = 25.0,
    codec: str | None = None,
    crf: int | None = 18,
    pix_fmt: str | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode uint8 ``(F, H, W, 3)`` RGB frames to ``path`` atomically; returns the path.

    The container follows the suffix (.mp4, .mov, .mkv, .avi, .webm). Defaults: H.264
    (``libx264``, ``crf`` 18, yuv420p; yuv444p when a side is odd) for mp4/mov/mkv,
    VP9 for webm, MPEG-4 part 2 for avi. ``options`` are passed to the encoder.
    """
    av = _av()
    frames = _check_clip(np.stack(frames) if isinstance(frames, (list, tuple)) else frames)
    fps = float(fps)
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    path = Path(path)
    fmt = _CONTAINER_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"path must end with one of {sorted(_CONTAINER_FORMATS)}, got {str(path)!r}")
    if codec is None:
        codec = {"webm": "libvpx-vp9", "avi": "mpeg4"}.get(fmt, "libx264")
    _, height, width, _ = frames.shape
    if pix_fmt is None:
        pix_fmt = "yuv420p" if (height % 2 == 0 and width % 2 == 0) or codec != "libx264" else "yuv444p"
    opts = dict(options or {})
    if crf is not None and codec in ("libx264", "libx265", "libvpx-vp9"):
        opts.setdefault("crf", str(int(crf)))
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format=fmt) as container:
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
            if opts:
                stream.options = opts
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a uint8 ``(H, W, 3)`` RGB image atomically (format from the suffix)."""
    from PIL import Image

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    path = Path(path)
    if not is_image_file(path):
        raise ValueError(f"path must end with one of {sorted(IMAGE_EXTENSIONS)}, got {str(path)!r}")
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(path.suffix.lower(), None)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format=fmt or path.suffix.lower().lstrip(".").upper())
    return path
