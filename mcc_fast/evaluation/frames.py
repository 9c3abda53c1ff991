"""Frame conversions shared by every metric: one canonical form, uint8 (B, 3, H, W).

The official MCC evaluation (``basicsr`` ``tensor2img`` with ``min_max=(-1, 1)``) writes
every generated frame to disk as an 8-bit image and computes all metrics on those images.
We do the same in memory: a float frame in [-1, 1] becomes
``round((clamp(x, -1, 1) + 1) / 2 * 255)`` as uint8, so every metric sees exactly the
pixels the official protocol sees.

Accepted inputs (one frame or a batch):

- ``torch.Tensor`` uint8 ``(3, H, W)`` / ``(B, 3, H, W)``: used as is;
- ``torch.Tensor`` floating ``(3, H, W)`` / ``(B, 3, H, W)`` in [-1, 1] (the model's
  range): clamped and quantised as above;
- ``numpy.ndarray`` uint8 ``(H, W, 3)`` / ``(B, H, W, 3)`` (what
  ``mcc_fast.training.data.video_io`` returns) or channel-first as for tensors; a numpy
  array whose last axis is 3 is read as channels-last.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["as_uint8_frames", "check_same_frames", "to_unit_float"]


def as_uint8_frames(frames, name: str = "frames") -> torch.Tensor:
    """Any accepted frame batch -> uint8 tensor (B, 3, H, W) on the input's device.

    Raises TypeError/ValueError naming ``name`` for anything else (wrong rank, not 3
    channels, no frames, an integer dtype other than uint8, NaN in a float frame, float
    values beyond +-2: not [-1, 1] images, e.g. 0-255 floats). Float values slightly outside
    [-1, 1] (a decoder's raw output) are clamped.
    """
    if isinstance(frames, np.ndarray):
        array = frames
        if array.ndim in (3, 4) and array.shape[-1] == 3:  # channels-last (also wins for 3x3 images)
            array = np.moveaxis(array, -1, -3)
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    elif isinstance(frames, torch.Tensor):
        tensor = frames
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray of frames, got {type(frames).__name__}")
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 4 or tensor.shape[1] != 3:
        raise ValueError(
            f"{name} must be frames (B, 3, H, W) (tensor) or (B, H, W, 3) (numpy), got shape {tuple(frames.shape)}"
        )
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} holds no frames (shape {tuple(tensor.shape)})")
    if tensor.dtype == torch.uint8:
        return tensor
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be uint8 (0-255) or floating in [-1, 1], got {tensor.dtype}")
    if torch.isnan(tensor).any():
        raise ValueError(f"{name} contains NaN")
    if tensor.numel() and float(tensor.detach().abs().max()) > 2.0:
        raise ValueError(f"{name}: float frames must be images in [-1, 1], got values in "
                         f"[{float(tensor.min()):.3g}, {float(tensor.max()):.3g}] (pass 0-255 images as uint8)")
    scaled = (tensor.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5
    return scaled.round_().to(torch.uint8)


def check_same_frames(generated: torch.Tensor, target: torch.Tensor,
                      names: tuple[str, str] = ("generated", "target")) -> None:
    """Raise ValueError unless two uint8 frame batches have one shape (B, 3, H, W)."""
    if generated.shape != target.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(generated.shape)} and {tuple(target.shape)}"
        )


def to_unit_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 (B, 3, H, W) in [0, 1] (``x / 255``)."""
    return frames.to(torch.float32).div_(255.0)
