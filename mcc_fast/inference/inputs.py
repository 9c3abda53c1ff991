"""Turning user images into model inputs: (B, 3, S, S) float tensors in [-1, 1].

Accepted forms (one image, or a batch):
- numpy uint8 arrays (H, W, 3) or (B, H, W, 3), RGB, 0..255;
- PIL images (any mode; converted to RGB);
- torch float tensors (3, H, W) or (B, 3, H, W) in [-1, 1] (must already be on the
  model's device);
- a path to an image file (for a source image).

The model expects *aligned face crops* like its training data (VoxCeleb-style: the face
centred, filling most of a square frame). Inputs that are not can be cut with a crop box
(x, y, w, h) in pixels, or "center" for the largest centred square, before the resize to
the model's size S. Other sizes than S x S are resized (bicubic, antialiased) with a note
(a `ResizeNote` warning, once per input size); `strict=True` refuses them instead.

Errors name the argument: wrong channel count, empty input, NaN/inf, values outside
[-1, 1], a tensor on another device than the model.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..ops._checks import as_index

__all__ = [
    "CropBox",
    "ResizeNote",
    "UnitRangeWarning",
    "center_square_box",
    "check_box_form",
    "crop_images",
    "fit_to_size",
    "parse_crop",
    "prepare_images",
    "to_image_tensor",
]

#: A crop box: (x, y, w, h) in pixels (x, y: top-left corner), or "center".
CropBox = tuple[int, int, int, int] | str

#: Float tensors may overshoot [-1, 1] by this much (resampling ringing) before it is an error.
RANGE_TOLERANCE = 0.05


class ResizeNote(UserWarning):
    """An input was resized to the model's size (its aspect ratio may have changed)."""


def _pil_image_type():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return None
    return Image.Image


def _array_to_tensor(array: np.ndarray, name: str) -> torch.Tensor:
    if array.dtype != np.uint8:
        raise ValueError(f"{name}: image arrays must be uint8 (H, W, 3) with values 0..255, got dtype {array.dtype} "
                         f"(for float data pass a torch tensor (3, H, W) in [-1, 1])")
    if array.ndim == 2:
        raise ValueError(f"{name}: expected 3 (RGB) channels, got a 2-D array {array.shape} (a grey image?): "
                         f"pass (H, W, 3)")
    if array.ndim not in (3, 4):
        raise ValueError(f"{name}: expected an array (H, W, 3) or (B, H, W, 3), got shape {array.shape}")
    if array.shape[-1] != 3:
        raise ValueError(f"{name}: expected 3 (RGB) channels in the last axis, got {array.shape[-1]} "
                         f"(shape {array.shape}; arrays are channels-last)")
    batch = array[None] if array.ndim == 3 else array
    if batch.shape[0] == 0 or batch.shape[1] == 0 or batch.shape[2] == 0:
        raise ValueError(f"{name}: empty image array, shape {array.shape}")
    batch = np.ascontiguousarray(batch)
    if not batch.flags.writeable:  # e.g. np.asarray(PIL image); torch wants writable memory
        batch = batch.copy()
    tensor = torch.from_numpy(batch).permute(0, 3, 1, 2)
    return tensor  # uint8, converted to float on the target device


def _tensor_to_batch(tensor: torch.Tensor, name: str) -> torch.Tensor:
    if not tensor.is_floating_point():
        raise ValueError(f"{name}: tensors must be floating point in [-1, 1], got {tensor.dtype} "
                         f"(for 0..255 data pass a uint8 numpy array (H, W, 3))")
    if tensor.dim() not in (3, 4):
        raise ValueError(f"{name}: expected a tensor (3, H, W) or (B, 3, H, W), got shape {tuple(tensor.shape)}")
    batch = tensor[None] if tensor.dim() == 3 else tensor
    if batch.shape[1] != 3:
        raise ValueError(f"{name}: expected 3 (RGB) channels in dim 1 (channels-first), got {batch.shape[1]} "
                         f"(shape {tuple(tensor.shape)})")
    if batch.numel() == 0:
        raise ValueError(f"{name}: empty tensor, shape {tuple(tensor.shape)}")
    return batch


class UnitRangeWarning(UserWarning):
    """A float image whose values all lie in [0, 1]: probably torchvision's ToTensor range,
    which the model (taking [-1, 1]) would see as a washed-out, bright image."""


def _check_values(batch: torch.Tensor, name: str) -> None:
    """NaN/inf and range check of a float batch (one device sync); a UnitRangeWarning when
    every value lies in [0, 1] (a real portrait in [-1, 1] has pixels darker than mid-grey)."""
    low, high = torch.aminmax(batch.detach().float())
    low, high = float(low), float(high)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    if low < -1 - RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise ValueError(f"{name}: float tensor values must lie in [-1, 1], got [{low:.3g}, {high:.3g}] "
                         f"(for 0..255 data pass a uint8 numpy array)")
    if low >= 0.0 and high > 0.0:
        warnings.warn(f"{name}: every value lies in [0, 1] ([{low:.3g}, {high:.3g}]); the model takes [-1, 1] "
                      "images: pass x * 2 - 1 if these are 0..1 (ToTensor) images", UnitRangeWarning, stacklevel=4)


def _check_dtype(dtype: Any) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype (e.g. torch.float32), got {dtype!r}")


def _check_size(size: Any) -> int:
    value = as_index(size)
    if value is None or value < 1:
        raise ValueError(f"size must be a positive int (the model's image size), got {size!r}")
    return value


def check_box_form(crop: Any, name: str) -> None:
    """The form of a crop argument (before any image is seen): None, "center"/"centre", or four
    integers (x, y, w, h) with x, y >= 0 and w, h > 0; ValueError naming `name` otherwise.
    Whether the box lies inside the image is checked on each image."""
    if crop is None:
        return
    if isinstance(crop, str):
        if crop.strip().lower() not in ("center", "centre"):
            raise ValueError(f"{name} must be (x, y, w, h) in pixels or 'center', got {crop!r}")
        return
    _integer_box(crop, name)


def _integer_box(crop: Any, name: str) -> tuple[int, int, int, int]:
    import operator

    if isinstance(crop, torch.Tensor):
        crop = crop.tolist()
    elif isinstance(crop, np.ndarray):
        crop = crop.tolist()
    try:
        values = list(crop)
    except TypeError:
        values = []
    out = []
    for v in values:
        if isinstance(v, bool):
            break
        try:
            out.append(operator.index(v))
        except TypeError:
            if isinstance(v, float) and v.is_integer():
                out.append(int(v))
            else:
                break
    if len(out) != 4 or len(values) != 4:
        raise ValueError(f"{name} must be (x, y, w, h): four integers in pixels (or 'center'), got {crop!r}")
    x, y, w, h = out
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        raise ValueError(f"{name} (x={x}, y={y}, w={w}, h={h}) needs x, y >= 0 and w, h > 0")
    return x, y, w, h


def to_image_tensor(image: Any, *, name: str = "image", device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Any accepted image form (see the module docstring) -> (B, 3, H, W) `dtype` in [-1, 1].

    A single image gives B = 1. A list/tuple of images is stacked (all the same size).
    numpy/PIL inputs are moved to `device`; tensors must already be on `device` (a clear
    error names `name` otherwise). NaN/inf values and float values outside [-1, 1] are errors.
    """
    _check_dtype(dtype)
    device = None if device is None else torch.device(device)
    pil_type = _pil_image_type()
    if isinstance(image, (str, os.PathLike)):
        from ..io.video import read_image

        image = read_image(image, what=name)
    if pil_type is not None and isinstance(image, pil_type):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"{name}: empty image ({image.width}x{image.height})")
        from ..io.video import pil_to_rgb8

        image = pil_to_rgb8(image)  # 16-bit grey scaled to 8 bits, not clipped
    if isinstance(image, (list, tuple)):
        if not image:
            raise ValueError(f"{name}: empty list of images")
        parts = [to_image_tensor(item, name=f"{name}[{i}]", device=device, dtype=dtype) for i, item in enumerate(image)]
        sizes = {tuple(p.shape[2:]) for p in parts}
        if len(sizes) > 1:
            raise ValueError(f"{name}: images have different sizes {sorted(sizes)}; crop or resize them to one size")
        return torch.cat(parts, dim=0)
    if isinstance(image, np.ndarray):
        batch = _array_to_tensor(image, name)
        batch = batch.to(device=device) if device is not None else batch
        return (batch.to(dtype=torch.float32) / 127.5 - 1.0).to(dtype)
    if isinstance(image, torch.Tensor):
        batch = _tensor_to_batch(image, name)
        if device is not None and batch.device != device:
            raise ValueError(f"{name} is on {batch.device} but the model is on {device}; move it with .to({str(device)!r})")
        _check_values(batch, name)
        return batch.to(dtype=dtype)
    raise TypeError(f"{name}: expected a uint8 numpy array (H, W, 3), a PIL image, a float tensor (3, H, W) in "
                    f"[-1, 1] or an image path, got {type(image).__name__}")


# ---- crops and resizes -----------------------------------------------------------------------

def center_square_box(height: int, width: int) -> tuple[int, int, int, int]:
    """The largest centred square of a height x width image, as (x, y, w, h)."""
    side = min(height, width)
    return ((width - side) // 2, (height - side) // 2, side, side)


def parse_crop(text: str) -> CropBox:
    """Parse "x,y,w,h" (pixels) or "center" into a crop box; ValueError otherwise."""
    text = text.strip()
    if text.lower() in ("center", "centre"):
        return "center"
    parts = text.split(",")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise ValueError(f"crop must be 'x,y,w,h' (four integers, pixels) or 'center', got {text!r}")
    return values  # type: ignore[return-value]


def _resolve_box(crop: CropBox, height: int, width: int, name: str) -> tuple[int, int, int, int]:
    if isinstance(crop, str):
        if crop.lower() not in ("center", "centre"):
            raise ValueError(f"{name} crop must be (x, y, w, h) or 'center', got {crop!r}")
        return center_square_box(height, width)
    x, y, w, h = _integer_box(crop, f"{name} crop")
    if x + w > width or y + h > height:
        raise ValueError(f"{name} crop (x={x}, y={y}, w={w}, h={h}) must lie inside the {width}x{height} "
                         f"(width x height) image with w, h > 0")
    return x, y, w, h


def crop_images(images: torch.Tensor, crop: CropBox | None, *, name: str = "image") -> torch.Tensor:
    """Cut the box `crop` ((x, y, w, h) pixels or "center") out of (B, C, H, W); None: no crop.
    Returns a view (B, C, h, w)."""
    if crop is None:
        return images
    height, width = images.shape[-2:]
    x, y, w, h = _resolve_box(crop, height, width, name)
    return images[..., y:y + h, x:x + w]


def fit_to_size(images: torch.Tensor, size: int, *, name: str = "image", strict: bool = False,
                note: Callable[[str], None] | None = None) -> torch.Tensor:
    """Resize (B, C, H, W) float images to (B, C, size, size) (bicubic, antialiased, clamped to
    [-1, 1]); unchanged when already that size. With `strict`, another size is a ValueError.
    `note(message)` reports the resize (default: a `ResizeNote` warning)."""
    size = _check_size(size)
    if not isinstance(strict, (bool, np.bool_)):
        raise TypeError(f"strict must be True or False, got {strict!r}")
    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    aligned = "the model expects aligned face crops"
    if strict:
        raise ValueError(f"{name}: expected {size}x{size} images (strict), got {width}x{height} (width x height); "
                         f"{aligned}: crop and resize it, or leave strict off (strict=False; no --strict on the "
                         "command line) to resize it automatically")
    message = f"{name}: resized from {width}x{height} to {size}x{size} (width x height)"
    if height != width:
        message += f"; aspect ratio changed, use a crop box or 'center' crop ({aligned})"
    (note or (lambda m: warnings.warn(m, ResizeNote, stacklevel=4)))(message)
    resized = F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return resized.clamp_(-1.0, 1.0).to(images.dtype)


def prepare_images(image: Any, *, size: int, name: str = "image", device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32, crop: CropBox | None = None, strict: bool = False,
                   note: Callable[[str], None] | None = None) -> torch.Tensor:
    """to_image_tensor -> crop_images -> fit_to_size: any accepted form -> (B, 3, size, size)
    `dtype` on `device`, in [-1, 1]."""
    _check_dtype(dtype)
    _check_size(size)
    batch = to_image_tensor(image, name=name, device=device, dtype=torch.float32 if dtype != torch.float64 else dtype)
    batch = crop_images(batch, crop, name=name)
    batch = fit_to_size(batch, size, name=name, strict=strict, note=note)
    return batch.to(dtype)


def is_path(value: Any) -> bool:
    """True for str / os.PathLike values (paths to image or video files)."""
    return isinstance(value, (str, os.PathLike, Path))
