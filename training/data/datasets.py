"""Talking-head video datasets in the FOMM layout.

Layout: ``root/train/`` and ``root/test/``; each entry of a split folder is one video,
either a folder of frame images (png/jpg/...) or a video file (.mp4 and whatever PyAV
reads). Names ``ID#rest`` group videos by identity ``ID`` (FOMM's ``id_sampling``);
a name without ``#`` is its own identity. Hidden entries (``.name``) and other files
(e.g. ``.json``) are ignored.

Images leave the datasets as float32 ``(3, H, W)`` tensors in [-1, 1], resized to the
model's size. Per-item randomness comes from ``(seed, epoch, index)`` only, so any
number of DataLoader workers (and any sampler, e.g. ``DistributedSampler``) sees the
same pairs and augmentations for the same indices.
"""
from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Hashable

import numpy as np
import torch
from torch.utils.data import Dataset

from .video_io import (
    VIDEO_EXTENSIONS,
    IMAGE_EXTENSIONS,
    VideoReadError,
    is_video_file,
    list_frame_files,
    natural_key,
    read_image,
    probe_video,
    read_video_frames,
    read_video_frames_at,
    resize_frames,
)

__all__ = [
    "AspectRatioWarning",
    "UnreadableVideoWarning",
    "VideoEntry",
    "identity_of",
    "list_videos",
    "to_model_range",
    "FrameCache",
    "VideoFolder",
    "FramePairDataset",
    "VideoSequenceDataset",
]

_DEFAULT_CACHE_BYTES = 256 * 2**20


class UnreadableVideoWarning(RuntimeWarning):
    """A video was skipped because it could not be read or decoded."""


class AspectRatioWarning(UserWarning):
    """A video's frames were resized to another aspect ratio (stretched): crop them first."""


@dataclass(frozen=True)
class VideoEntry:
    """One video of a split folder: a frame folder (``is_dir``) or a video file."""

    path: Path
    name: str
    identity: str
    is_dir: bool


def identity_of(name: str) -> str:
    """Identity of a video name: the prefix before ``#`` (FOMM), else the name without
    its video suffix."""
    if "#" in name:
        return name.split("#", 1)[0]
    path = Path(name)
    return path.stem if path.suffix.lower() in VIDEO_EXTENSIONS else name


def _is_broken_link(path: Path) -> bool:
    """A symbolic link whose target does not exist."""
    return path.is_symlink() and not path.exists()


def list_videos(folder: str | os.PathLike) -> list[VideoEntry]:
    """Videos of one split folder, in natural name order. A broken symbolic link named
    like a video (or without a suffix, like a frame folder) is listed, so that reading it
    fails and it is reported and counted as unreadable instead of vanishing silently.

    Raises FileNotFoundError if ``folder`` is missing and ValueError (naming the folder)
    if it holds no frame folder or video file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"video folder {str(folder)!r} does not exist (expected a folder of videos)")
    entries = []
    for path in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            entries.append(VideoEntry(path, path.name, identity_of(path.name), True))
        elif (path.is_file() or _is_broken_link(path)) and is_video_file(path):
            entries.append(VideoEntry(path, path.name, identity_of(path.name), False))
        elif _is_broken_link(path) and not path.suffix:  # was it a frame folder? reported as unreadable
            entries.append(VideoEntry(path, path.name, identity_of(path.name), False))
    if not entries:
        raise ValueError(
            f"no videos in {str(folder)!r}: expected frame folders ({'/'.join(sorted(IMAGE_EXTENSIONS))}) "
            f"or video files ({'/'.join(sorted(VIDEO_EXTENSIONS))})"
        )
    return entries


def to_model_range(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``(..., H, W, 3)`` -> float32 ``(..., 3, H, W)`` in [-1, 1] (x / 127.5 - 1)."""
    x = np.moveaxis(np.asarray(frames), -1, -3).astype(np.float32)  # numpy: no thread hand-offs
    x *= np.float32(1 / 127.5)
    x -= np.float32(1.0)
    return torch.from_numpy(x)


class FrameCache:
    """Least-recently-used cache of numpy arrays bounded by total bytes (per process)."""

    def __init__(self, max_bytes: int = _DEFAULT_CACHE_BYTES):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes!r}")
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> np.ndarray | None:
        """The cached array for ``key`` (marked most recent) or None."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: Hashable, value: np.ndarray) -> None:
        """Store ``value``, evicting the least recent entries over the byte budget."""
        if value.nbytes > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes
        self._items[key] = value
        self._bytes += value.nbytes
        while self._bytes > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= dropped.nbytes


def _parse_size(size: int | tuple[int, int], name: str = "size") -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        hw = (int(size), int(size))
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        hw = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"{name} must be an int or (height, width), got {size!r}")
    if hw[0] <= 0 or hw[1] <= 0:
        raise ValueError(f"{name} must be positive, got {size!r}")
    return hw


class VideoFolder:
    """The videos of one folder, read at a fixed size through a small LRU cache.

    The cache (``cache_bytes``, per DataLoader worker) holds the resized frames of frame
    folders, one entry per frame image. Video files are decoded afresh for every item (up to
    the frames it needs): with shuffled access over many videos a decoded clip is rarely
    asked for again, so they do not fill the cache.

    Unreadable videos raise :class:`VideoReadError` from :meth:`frames`; they are
    recorded (once, with one :class:`UnreadableVideoWarning`) in a flag array in shared
    memory, so :attr:`num_unreadable` also counts failures seen by DataLoader workers.
    A video counts as unreadable once any read of it failed; a request that does not
    touch the broken part (an intact frame of a frame folder with one corrupt image, the
    frames before the point where a file stops decoding) still succeeds, so that every
    item is a fixed function of the files, whichever worker read what first.
    """

    def __init__(self, folder: str | os.PathLike, size: int | tuple[int, int] = 256,
                 cache_bytes: int = _DEFAULT_CACHE_BYTES):
        self.folder = Path(folder)
        self.size = _parse_size(size)
        self.entries = list_videos(self.folder)
        self.cache = FrameCache(cache_bytes)
        self._frame_files: dict[int, list[Path]] = {}
        self._file_counts: dict[int, int] = {}
        # Remembered failures, each a fixed function of the file, so that skipping a
        # known-bad file gives the same result as trying it again (worker-independent):
        self._open_failures: dict[int, str] = {}  # the container does not open
        self._decode_failures: dict[int, str] = {}  # a full decode fails
        self._bad = torch.zeros(len(self.entries), dtype=torch.uint8).share_memory_()
        self._warned: set[int] = set()
        self._stretched = torch.zeros(len(self.entries), dtype=torch.uint8).share_memory_()  # warned (any worker)
        self._last: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def _resize(self, frames: np.ndarray, index: int) -> np.ndarray:
        """resize_frames to the dataset's size, with one AspectRatioWarning per video (across
        DataLoader workers) when that stretches it (aspect ratios differ by more than 1%)."""
        h, w = frames.shape[-3:-1]
        out_h, out_w = self.size
        if not self._stretched[index] and h and w and abs((w / h) / (out_w / out_h) - 1) > 0.01:
            self._stretched[index] = 1
            warnings.warn(f"{self.entries[index].name}: {w}x{h} frames stretched to {out_w}x{out_h} "
                          "(another aspect ratio); crop the videos to the training aspect first",
                          AspectRatioWarning, stacklevel=3)
        return resize_frames(frames, self.size)

    @property
    def num_unreadable(self) -> int:
        """How many distinct videos failed to read so far (in any worker)."""
        return int(self._bad.sum())

    def unreadable_videos(self) -> list[str]:
        """Names of the videos that failed to read so far (in any worker)."""
        return [self.entries[i].name for i in torch.nonzero(self._bad).flatten().tolist()]

    def _mark_bad(self, index: int, reason: str) -> None:
        first = not bool(self._bad[index])
        self._bad[index] = 1
        if first and index not in self._warned:
            if str(self.entries[index].path) not in reason:
                reason = f"{str(self.entries[index].path)!r}: {reason}"
            warnings.warn(f"skipping unreadable video: {reason}",
                          UnreadableVideoWarning, stacklevel=3)
        self._warned.add(index)

    def _files(self, index: int) -> list[Path]:
        files = self._frame_files.get(index)
        if files is None:
            try:
                files = list_frame_files(self.entries[index].path)
            except OSError as exc:
                raise VideoReadError(f"cannot list frame folder {str(self.entries[index].path)!r}: {exc}") from exc
            if not files:
                raise VideoReadError(f"frame folder {str(self.entries[index].path)!r} has no images")
            self._frame_files[index] = files
        return files

    def _cached_clip(self, index: int) -> np.ndarray | None:
        clip = self.cache.get(("clip", index))
        if clip is None and self._last is not None and self._last[0] == index:
            clip = self._last[1]
        return clip

    def _file_count(self, index: int) -> int:
        # The container's frame count (decoding the file only when it records none): a
        # fixed function of the file, so sampling does not depend on the cache state.
        n = self._file_counts.get(index)
        if n is None:
            if index in self._open_failures:
                raise VideoReadError(self._open_failures[index])
            try:
                n = probe_video(self.entries[index].path).num_frames
            except VideoReadError as exc:
                self._open_failures[index] = str(exc)
                raise
            if n <= 0:
                n = len(self._clip(index))
            self._file_counts[index] = n
        return n

    def _clip(self, index: int, max_frames: int | None = None) -> np.ndarray:
        key = ("clip", index)
        clip = self._cached_clip(index)
        if clip is None:
            known = self._open_failures.get(index) or (self._decode_failures.get(index) if max_frames is None else None)
            if known:
                raise VideoReadError(known)
            try:
                clip = read_video_frames(self.entries[index].path, max_frames,  # resized frame by frame
                                         transform=lambda frame: self._resize(frame, index))
            except VideoReadError as exc:
                if max_frames is None:
                    self._decode_failures[index] = str(exc)
                raise
            if max_frames is not None:
                return clip  # partial decode: not cached
            self.cache.put(key, clip)
            self._last = (index, clip)  # the latest clip survives even a zero-byte cache
        return clip if max_frames is None else clip[:max_frames]

    def _frame(self, index: int, frame: int) -> np.ndarray:
        key = ("frame", index, frame)
        image = self.cache.get(key)
        if image is None:
            image = read_image(self._files(index)[frame])
            if image.shape[:2] != self.size:
                image = self._resize(image, index)
            self.cache.put(key, image)
        return image

    def num_frames(self, index: int) -> int:
        """Number of frames of video ``index`` (decodes a video file; raises
        VideoReadError and records the video when unreadable)."""
        try:
            if self.entries[index].is_dir:
                return len(self._files(index))
            return self._file_count(index)
        except VideoReadError as exc:
            self._mark_bad(index, str(exc))
            raise

    def clip(self, index: int, max_frames: int | None = None) -> np.ndarray:
        """uint8 ``(F, H, W, 3)``: all frames of video ``index`` in order (only the first
        ``max_frames`` decoded when given); raises VideoReadError and records the video
        when unreadable."""
        try:
            if self.entries[index].is_dir:
                files = self._files(index)
                n = len(files) if max_frames is None else min(len(files), max_frames)
                return np.stack([self._frame(index, i) for i in range(n)])
            return self._clip(index, max_frames)
        except VideoReadError as exc:
            self._mark_bad(index, str(exc))
            raise

    def frames(self, index: int, frame_indices=None) -> np.ndarray:
        """uint8 ``(k, H, W, 3)`` frames of video ``index`` at the folder's size (all
        frames when ``frame_indices`` is None). A video file is decoded only up to the
        largest index unless it is cached; an index past its last decodable frame
        gives that frame."""
        try:
            if self.entries[index].is_dir:
                n = len(self._files(index))
                idx = range(n) if frame_indices is None else frame_indices
                return np.stack([self._frame(index, int(i)) for i in idx])
            if frame_indices is None:
                return self._clip(index)
            idx = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
            clip = self._cached_clip(index)
            if clip is not None:
                return clip[np.minimum(idx, len(clip) - 1)]
            if index in self._open_failures:
                raise VideoReadError(self._open_failures[index])
            return self._resize(read_video_frames_at(self.entries[index].path, idx.tolist()), index)
        except VideoReadError as exc:
            self._mark_bad(index, str(exc))
            raise


def _split_folder(root: str | os.PathLike, split: str | None) -> Path:
    root = Path(root)
    if split is None:
        return root
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
    folder = root / split
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{str(folder)!r} does not exist: expected the FOMM layout root/train and root/test "
            f"(root={str(root)!r})"
        )
    return folder


class FramePairDataset(Dataset):
    """Training pairs: source and driving are two random frames of one video.

    Item ``index`` uses video ``index % len(videos)`` (or, with ``id_sampling``,
    identity ``index % len(identities)`` then a random video of it), so an epoch is
    ``repeats`` passes (the official ``dataset_enlarge_ratio`` 100). The two frame
    indices are drawn with replacement and sorted (FOMM); augmentations: horizontal
    flip of both frames (``hflip_prob``) and time flip, which swaps source and driving
    (``time_flip_prob``). An unreadable video is recorded, warned about once and
    replaced by another random video; ``max_attempts`` failures in a row raise.

    Items: ``source``, ``driving`` float32 (3, H, W) in [-1, 1]; ``name`` (video name),
    ``identity``; ``frame_idx`` int64 (2,) = (source frame, driving frame); ``hflip``,
    ``time_flip`` bools.
    """

    def __init__(self, root: str | os.PathLike, split: str | None = "train", size: int | tuple[int, int] = 256,
                 repeats: int = 100, id_sampling: bool = False, hflip_prob: float = 0.5,
                 time_flip_prob: float = 0.5, seed: int = 0, max_attempts: int = 20,
                 cache_bytes: int = _DEFAULT_CACHE_BYTES):
        if not (isinstance(repeats, (int, np.integer)) and repeats >= 1):
            raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
        for name, p in (("hflip_prob", hflip_prob), ("time_flip_prob", time_flip_prob)):
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p!r}")
        if not (isinstance(seed, (int, np.integer)) and seed >= 0):
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts!r}")
        self.videos = VideoFolder(_split_folder(root, split), size, cache_bytes)
        self.repeats = int(repeats)
        self.id_sampling = bool(id_sampling)
        self.hflip_prob = float(hflip_prob)
        self.time_flip_prob = float(time_flip_prob)
        self.seed = int(seed)
        self.max_attempts = int(max_attempts)
        groups: dict[str, list[int]] = {}
        for i, entry in enumerate(self.videos.entries):
            groups.setdefault(entry.identity, []).append(i)
        self.identities = sorted(groups, key=natural_key)
        self._groups = [groups[k] for k in self.identities]
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    @property
    def num_units(self) -> int:
        """Items per repeat: identities with ``id_sampling``, else videos."""
        return len(self._groups) if self.id_sampling else len(self.videos)

    def __len__(self) -> int:
        return self.repeats * self.num_units

    @property
    def epoch(self) -> int:
        """The epoch items are drawn for (set by `set_epoch`; shared with DataLoader workers)."""
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's randomness (call with the sampler's ``set_epoch``). Stored
        in shared memory, so persistent DataLoader workers see it too."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch!r}")
        self._epoch[0] = int(epoch)

    @property
    def num_unreadable(self) -> int:
        """Distinct unreadable videos met so far (all workers)."""
        return self.videos.num_unreadable

    def _rng(self, index: int, attempt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index), int(attempt)])

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        unit = index % self.num_units
        for attempt in range(self.max_attempts):
            rng = self._rng(index, attempt)
            if attempt == 0:
                group = self._groups[unit] if self.id_sampling else [unit]
                video = group[int(rng.integers(len(group)))]
            else:  # replacement for an unreadable video: any video
                video = int(rng.integers(len(self.videos)))
            u = rng.random(2)
            hflip = bool(rng.random() < self.hflip_prob)
            time_flip = bool(rng.random() < self.time_flip_prob)
            try:
                n = self.videos.num_frames(video)
                first, second = sorted(np.minimum((u * n).astype(np.int64), n - 1).tolist())
                src_idx, drv_idx = (second, first) if time_flip else (first, second)
                pair = self.videos.frames(video, [src_idx, drv_idx])
            except VideoReadError:
                continue
            if hflip:
                pair = pair[:, :, ::-1]
            images = to_model_range(pair)
            entry = self.videos.entries[video]
            return {
                "source": images[0],
                "driving": images[1],
                "name": entry.name,
                "identity": entry.identity,
                "frame_idx": torch.tensor([src_idx, drv_idx], dtype=torch.int64),
                "hflip": hflip,
                "time_flip": time_flip,
            }
        raise RuntimeError(
            f"item {index}: {self.max_attempts} draws in a row picked an unreadable video in "
            f"{str(self.videos.folder)!r} ({self.num_unreadable} of its {len(self.videos)} videos unreadable so far)"
        )


class VideoSequenceDataset(Dataset):
    """Evaluation: whole videos, frames in order, no augmentation.

    Items: ``video`` float32 (F, 3, H, W) in [-1, 1] (first ``max_frames`` frames when
    given), ``name``, ``identity``, ``num_frames``, ``ok`` and ``error``. An unreadable video
    is warned about once, counted in :attr:`num_unreadable` and returned with ``ok`` False,
    an empty ``video`` (0, 3, H, W) and why in ``error`` (None when ``ok``), so an evaluation
    loop can skip it and say why.
    """

    def __init__(self, root: str | os.PathLike, split: str | None = "test", size: int | tuple[int, int] = 256,
                 max_frames: int | None = None, cache_bytes: int = 0):
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {max_frames!r}")
        self.videos = VideoFolder(_split_folder(root, split), size, cache_bytes)
        self.max_frames = max_frames

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def num_unreadable(self) -> int:
        """Distinct unreadable videos met so far (all workers)."""
        return self.videos.num_unreadable

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} videos")
        entry = self.videos.entries[index]
        try:
            video = to_model_range(self.videos.clip(index, self.max_frames))
            error = None
        except VideoReadError as exc:
            video = torch.zeros((0, 3) + self.videos.size, dtype=torch.float32)
            error = str(exc)
        return {"video": video, "name": entry.name, "identity": entry.identity,
                "num_frames": int(video.shape[0]), "ok": error is None, "error": error}
