"""Inference: animate a source portrait with a driving video (`Model.animate`).

- `animate(model, source, driving, ...)`: the iterator of output frames (`Model.animate`).
- `normalize_keypoints`, `relative_keypoints`, `movement_scale`, `convex_hull_area`: FOMM
  relative motion with the convex-hull movement scale.
- `prepare_images`, `to_image_tensor`, `crop_images`, `center_square_box`, `fit_to_size`,
  `parse_crop`: user images (arrays, PIL, tensors, paths) -> (B, 3, S, S) in [-1, 1].
"""
from __future__ import annotations

from .animator import animate, to_uint8_frames
from .inputs import (
    ResizeNote,
    center_square_box,
    crop_images,
    fit_to_size,
    parse_crop,
    prepare_images,
    to_image_tensor,
)
from .relative_motion import convex_hull_area, movement_scale, normalize_keypoints, relative_keypoints

__all__ = [
    "ResizeNote",
    "animate",
    "center_square_box",
    "convex_hull_area",
    "crop_images",
    "fit_to_size",
    "movement_scale",
    "normalize_keypoints",
    "parse_crop",
    "prepare_images",
    "relative_keypoints",
    "to_image_tensor",
    "to_uint8_frames",
]
