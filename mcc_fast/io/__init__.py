"""File input/output of the package: video and image files (PyAV and PIL).

`mcc_fast.io.video` is the package's one video module: probing, streaming decode,
streaming H.264 encode with the driving video's frame rate and audio, atomic outputs.
"""
from __future__ import annotations

from .paths import output_folder
from .video import (
    IMAGE_EXTENSIONS,
    VIDEO_OUTPUT_EXTENSIONS,
    TruncatedVideoWarning,
    VideoInfo,
    VideoReadError,
    VideoWriteError,
    VideoWriter,
    atomic_output,
    iter_video_frames,
    probe_video,
    read_image,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_OUTPUT_EXTENSIONS",
    "TruncatedVideoWarning",
    "VideoInfo",
    "VideoReadError",
    "VideoWriteError",
    "VideoWriter",
    "atomic_output",
    "iter_video_frames",
    "output_folder",
    "probe_video",
    "read_image",
]
