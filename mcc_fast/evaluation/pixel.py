"""L1 and PSNR on 0-255 images, per frame, exactly as the official MCC evaluation.

What we compute (``basicsr/metrics/psnr_ssim.py`` of the authors' code, called per frame
on the uint8 images that ``tensor2img(..., min_max=(-1, 1))`` produces):

- frames are first brought to uint8 (B, 3, H, W) by
  :func:`mcc_fast.evaluation.frames.as_uint8_frames` (float frames in [-1, 1] are clamped
  and rounded: ``round((x + 1) / 2 * 255)``);
- **L1** of a frame = ``mean(|a - b|) / 255`` over all pixels and channels: the mean
  absolute difference of the images scaled to [0, 1]. The official code computes
  ``mean(|a - b|)`` on 0-255 and reports it divided by 255 as ``l1_255``; the paper's
  0.0355 is that number (FOMM reports the same quantity, ``|prediction - frame|.mean()``
  of [0, 1] images, without the 8-bit rounding);
- **PSNR** of a frame = ``20 * log10(255 / sqrt(MSE))`` with MSE over all pixels and
  channels of the 0-255 images (RGB, no border crop, not the Y channel); identical
  frames give ``+inf`` (no cap), as in the official code;
- a dataset value is the mean of the per-frame values over all frames (the official
  code averages per-frame PSNR, it does not pool the MSE).

Sums are exact (integer arithmetic) and the final values float64, on any device.
"""
from __future__ import annotations

import torch

from .frames import as_uint8_frames, check_same_frames

__all__ = ["l1_per_frame", "psnr_per_frame", "l1", "psnr"]


def _abs_and_sq_sums(generated, target) -> tuple[torch.Tensor, torch.Tensor, int]:
    gen = as_uint8_frames(generated, "generated")
    ref = as_uint8_frames(target, "target").to(gen.device)
    check_same_frames(gen, ref)
    diff = gen.to(torch.int32) - ref.to(torch.int32)
    flat = diff.flatten(1)
    abs_sum = flat.abs().sum(dim=1, dtype=torch.int64)
    sq_sum = (flat * flat).sum(dim=1, dtype=torch.int64)
    return abs_sum, sq_sum, flat.shape[1]


def l1_per_frame(generated, target) -> torch.Tensor:
    """Per-frame L1 of [0, 1] images: float64 (B,) = mean |gen - target| / 255.

    ``generated``/``target``: frames as :func:`as_uint8_frames` accepts, same shape.
    """
    abs_sum, _, count = _abs_and_sq_sums(generated, target)
    return abs_sum.to(torch.float64) / (count * 255.0)


def psnr_per_frame(generated, target) -> torch.Tensor:
    """Per-frame PSNR in dB on 0-255 images: float64 (B,); ``+inf`` for identical frames."""
    _, sq_sum, count = _abs_and_sq_sums(generated, target)
    mse = sq_sum.to(torch.float64) / count
    return 20.0 * torch.log10(255.0 / torch.sqrt(mse))  # mse == 0 -> log10(inf) = +inf


def l1(generated, target) -> float:
    """Mean over frames of :func:`l1_per_frame` (a Python float)."""
    return float(l1_per_frame(generated, target).mean())


def psnr(generated, target) -> float:
    """Mean over frames of :func:`psnr_per_frame` (``inf`` when any frame is identical)."""
    return float(psnr_per_frame(generated, target).mean())
