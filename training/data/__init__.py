"""Training and evaluation data: FOMM-layout video datasets and video file I/O.

``video_io`` reads and writes videos (PyAV) and images (PIL); ``datasets`` holds the
video folder, the training pair dataset and the evaluation sequence dataset.
"""
from __future__ import annotations

from .datasets import (
    AspectRatioWarning,
    FrameCache,
    FramePairDataset,
    UnreadableVideoWarning,
    VideoEntry,
    VideoFolder,
    VideoSequenceDataset,
    identity_of,
    list_videos,
    to_model_range,
)
from .video_io import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    VideoInfo,
    VideoReadError,
    probe_video,
    read_image,
    read_video_frames,
    read_video_frames_at,
    resize_frames,
    write_image,
    write_video,
)

__all__ = [
    "AspectRatioWarning",
    "FrameCache",
    "FramePairDataset",
    "UnreadableVideoWarning",
    "VideoEntry",
    "VideoFolder",
    "VideoSequenceDataset",
    "identity_of",
    "list_videos",
    "to_model_range",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "VideoInfo",
    "VideoReadError",
    "probe_video",
    "read_image",
    "read_video_frames",
    "read_video_frames_at",
    "resize_frames",
    "write_image",
    "write_video",
]
