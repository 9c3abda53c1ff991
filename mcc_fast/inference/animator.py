"""`Model.animate`: a source portrait moved by a driving video, frame by frame.

Per video (once): the source image's keypoints and encoder features, the reference frame's
keypoints and the movement scale. Per batch of driving frames: driving keypoints, relative
(or absolute) keypoints, dense motion, rendering. Frames are consumed lazily from the
driving input (a video path or any iterable streams; nothing is held beyond one batch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np
import torch

from ..model.generator.outputs import SourceFeatures
from ..model.modes import eval_mode
from ..model.motion.keypoint_detector import Keypoints
from ..ops._checks import as_index
from .inputs import CropBox, _pil_image_type, check_box_form, is_path, prepare_images
from .relative_motion import movement_scale, relative_keypoints

if TYPE_CHECKING:
    from ..model.model import Model

__all__ = ["animate", "to_uint8_frames"]

OUTPUT_TYPES = ("numpy", "tensor")


@dataclass
class _Source:
    """Source-only work, done once per video (all batch 1)."""

    image: torch.Tensor  # (1, 3, S, S)
    keypoints: Keypoints  # value (1, K, 2), jacobian (1, K, 2, 2) or None
    features: Any  # SourceFeatures (reference path) or the fast path's SourceCache


class _NoteOnce:
    """Passes each distinct note message on once (resize notes for every frame of a video)."""

    def __init__(self, note: Callable[[str], None] | None) -> None:
        self._note, self._seen = note, set()

    def __call__(self, message: str) -> None:
        if message in self._seen:
            return
        self._seen.add(message)
        if self._note is not None:
            self._note(message)
        else:
            import warnings

            from .inputs import ResizeNote

            warnings.warn(message, ResizeNote, stacklevel=3)


def to_uint8_frames(frames: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float frames (clamped to [-1, 1]) -> uint8 (B, H, W, 3) numpy on the CPU."""
    pixels = ((frames.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round_().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def _expand(kp: Keypoints, n: int) -> Keypoints:
    return Keypoints(kp.value.expand(n, -1, -1), None if kp.jacobian is None else kp.jacobian.expand(n, -1, -1, -1))


def _driving_batches(driving: Any, batch_size: int, prepare: Callable[[Any], torch.Tensor]) -> Iterator[torch.Tensor]:
    """Check the driving input's form now; return a lazy iterator of prepared batches
    (n <= batch_size, 3, S, S) (items of an iterable that are themselves batches may give more)."""
    if is_path(driving):
        from ..io.video import iter_video_frames, probe_video

        probe_video(driving, what="driving video")  # missing / unreadable / not a video: fail now
        return _group_frames(iter_video_frames(driving, what="driving video"), batch_size, prepare)
    if isinstance(driving, (np.ndarray, torch.Tensor)):
        if driving.ndim == 3:  # one frame: (H, W, 3) array or (3, H, W) tensor
            channels = driving.shape[-1] if isinstance(driving, np.ndarray) else driving.shape[0]
            if channels != 3:
                form = "(H, W, 3) uint8 array" if isinstance(driving, np.ndarray) else "(3, H, W) tensor"
                raise ValueError(f"driving: a 3-D input is one RGB frame {form}, got shape {tuple(driving.shape)} "
                                 "(a grey video? pass RGB frames: (F, H, W, 3) arrays, (F, 3, H, W) tensors)")
        frames = driving[None] if driving.ndim == 3 else driving
        if frames.ndim != 4:
            raise ValueError(f"driving: expected a video (F, H, W, 3) uint8 array / (F, 3, H, W) tensor or one frame, "
                             f"got shape {tuple(driving.shape)}")
        if frames.shape[0] == 0:
            raise ValueError("driving: empty video (no frames)")
        return (prepare(frames[start:start + batch_size]) for start in range(0, frames.shape[0], batch_size))
    pil_type = _pil_image_type()
    if pil_type is not None and isinstance(driving, pil_type):
        return (prepare(frame) for frame in [driving])
    if not isinstance(driving, Iterable) or isinstance(driving, (bytes, dict)):
        raise TypeError(f"driving: expected a video path, an (F, H, W, 3) uint8 array, an (F, 3, H, W) tensor or an "
                        f"iterable of frames, got {type(driving).__name__}")
    return _group_frames(iter(driving), batch_size, prepare)


def _group_frames(frames: Iterator[Any], batch_size: int,
                  prepare: Callable[[Any], torch.Tensor]) -> Iterator[torch.Tensor]:
    """Prepared batches of `batch_size` items of `frames`; ValueError when there are none."""
    group: list = []
    any_frames = False

    def flush() -> torch.Tensor:
        same_arrays = all(isinstance(f, np.ndarray) and f.ndim == 3 and f.shape == group[0].shape for f in group)
        if same_arrays:  # one host->device copy for the group
            return prepare(np.stack(group))
        return torch.cat([prepare(f) for f in group], dim=0)

    for frame in frames:
        group.append(frame)
        any_frames = True
        if len(group) == batch_size:
            yield flush()
            group = []
    if group:
        yield flush()
    if not any_frames:
        raise ValueError("driving: empty video (no frames)")


def _model_placement(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters())
    return param.device, param.dtype


def animate(model: "Model", source: Any, driving: Any, *, relative: bool = True, adapt_scale: bool = True,
            reference: Any = None, batch_size: int = 8, output: str = "numpy", side_by_side: bool = False,
            crop: CropBox | None = None, source_crop: CropBox | None = None, strict: bool = False,
            note: Callable[[str], None] | None = None, fast: bool | None = None) -> Iterator[np.ndarray | torch.Tensor]:
    """Animate `source` with the motion of `driving`; returns an iterator of output frames.

    source: one image: uint8 (H, W, 3) array, PIL image, float tensor (3, H, W) or (1, 3, H, W)
        in [-1, 1], or an image path.
    driving: the video: a video file path (streamed), a uint8 (F, H, W, 3) array, a float
        (F, 3, H, W) tensor, or any iterable (generator, list) of frames in the source's forms.
    relative: FOMM relative motion (source keypoints + the driving keypoints' displacement
        from the reference frame; jacobians J_d J_d0^-1 J_s). False: absolute driving keypoints.
    adapt_scale: scale the displacement by sqrt(hull area(source kp) / hull area(reference kp))
        (relative motion only).
    reference: the reference driving frame (default: the first driving frame), same forms.
    batch_size: driving frames per forward pass (memory vs speed; the results do not depend on it
        beyond float rounding: a uint8 pixel may differ by 1).
    output: "numpy" (default): uint8 (S, S, 3) RGB arrays; "tensor": float (3, S, S) tensors in
        [-1, 1] (clamped) on the model's device, in its dtype.
    side_by_side: each frame is [source | driving | result] side by side, width 3 S.
    crop: crop box (x, y, w, h) in pixels or "center" for the driving frames (and the reference)
        before the resize to the model's size S; source_crop: the same for the source.
    strict: refuse inputs that are not S x S (after cropping) instead of resizing them with a note.
    note: callback for notes (resize); default: a `ResizeNote` warning, once per distinct note.
    fast: render through the fast path (`model.fast()`: same weights, fp32 frames within 1e-3
        of the reference path, faster); None follows `model.fast_path` (True after
        `from_pretrained` on CUDA). False: the reference path.

    The model expects aligned face crops (the face centred, filling most of a square frame).
    Arguments (flags must be bools; crop boxes four integers) and the source are checked when
    this is called; driving frames as they are read (an empty video raises ValueError on the
    first `next`; whether a crop box lies inside the frames is checked on the frames). The
    weights must not change while the iterator is consumed (the source, its keypoints and the
    reference keypoints are computed at the start; a source tensor is copied then, so editing it
    later changes no frame). Runs under no_grad, in eval mode.
    """
    size_value = as_index(batch_size)
    if size_value is None or size_value < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    batch_size = size_value
    for flag, value in (("relative", relative), ("adapt_scale", adapt_scale), ("side_by_side", side_by_side),
                        ("strict", strict)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{flag} must be True or False, got {value!r}")
    if fast is not None and not isinstance(fast, (bool, np.bool_)):
        raise TypeError(f"fast must be True, False or None, got {fast!r}")
    if note is not None and not callable(note):
        raise TypeError(f"note must be a callable taking one message (or None), got {type(note).__name__}")
    check_box_form(crop, "crop")
    check_box_form(source_crop, "source_crop")
    if output not in OUTPUT_TYPES:
        raise ValueError(f"output must be one of {OUTPUT_TYPES}, got {output!r}")
    config = model.config
    if config.generator.image_channels != 3:
        raise ValueError("animate needs an RGB model (image_channels 3), this one has "
                         f"{config.generator.image_channels}")
    device, dtype = _model_placement(model)
    size = config.image_size
    note_once = _NoteOnce(note)

    def prepare(images: Any, name: str, box: CropBox | None) -> torch.Tensor:
        return prepare_images(images, size=size, name=name, device=device, dtype=dtype, crop=box, strict=strict,
                              note=note_once)

    source_image = prepare(source, "source", source_crop)
    if isinstance(source, torch.Tensor):  # may be a view of the caller's tensor: the frames use it lazily
        source_image = source_image.clone()
    if source_image.shape[0] != 1:
        raise ValueError(f"source: animate takes one source image, got a batch of {source_image.shape[0]}")
    reference_image = None
    if reference is not None:
        reference_image = prepare(reference, "reference", crop)
        if reference_image.shape[0] != 1:
            raise ValueError(f"reference: expected one frame, got a batch of {reference_image.shape[0]}")

    batches = _driving_batches(driving, batch_size, lambda frames: prepare(frames, "driving", crop))
    how = "fast=True"
    if fast is None:
        fast, how = bool(getattr(model, "fast_path", False)), "model.fast_path is True"
    from ..fast.runtime import FAST_DTYPES

    dtype = next(model.parameters()).dtype
    if fast and dtype not in FAST_DTYPES:
        raise ValueError(f"animate: {how} but this model is {dtype} (the fast path computes in float32, "
                         "bfloat16 or float16): pass fast=False for the reference path, or cast the model "
                         "(model.float())")
    me, generator = model.motion_estimator, model.generator
    with torch.no_grad(), eval_mode(model):
        if fast:
            fast_model = model.fast()
            cache = fast_model.prepare_source(source_image)
            state = _Source(image=source_image, keypoints=cache.keypoints, features=cache)
            detect = fast_model.keypoints
        else:
            state = _Source(image=source_image, keypoints=me.keypoints(source_image),
                            features=generator.encode_source(source_image))
            detect = me.keypoints
        kp_reference = None if reference_image is None else detect(reference_image)

    return _frames(model, state, batches, kp_reference, relative=relative, adapt_scale=adapt_scale,
                   output=output, side_by_side=side_by_side, fast=fast)


def _frames(model: "Model", state: _Source, batches: Iterator[torch.Tensor], kp_reference: Keypoints | None, *,
            relative: bool, adapt_scale: bool, output: str, side_by_side: bool,
            fast: bool = False) -> Iterator[np.ndarray | torch.Tensor]:
    """The per-batch loop of `animate` (no_grad and eval mode are entered per batch, never
    across a `yield`, so the caller's grad mode and the model's mode are left alone).
    With `fast`, `state.features` is the fast path's SourceCache (prepared again, with the
    source keypoints, when the weights change between batches: see _refresh_source)."""
    me, generator = model.motion_estimator, model.generator
    detect = model.fast().keypoints if fast else me.keypoints
    scale: torch.Tensor | float | None = None
    for driving in batches:
        n = driving.shape[0]
        with torch.no_grad(), eval_mode(model):
            if fast:
                _refresh_source(model.fast(), state)
            kp_driving = detect(driving)
            if relative:
                if kp_reference is None:  # the first driving frame
                    kp_reference = kp_driving[0:1]
                if scale is None:
                    scale = movement_scale(state.keypoints.value, kp_reference.value) if adapt_scale else 1.0
                kp_target = relative_keypoints(state.keypoints, kp_driving, kp_reference, scale)
            else:
                kp_target = kp_driving
            source = state.image.expand(n, -1, -1, -1)
            if fast:
                frames = model.fast().render_frame(state.features, kp_driving=kp_target).clamp(-1.0, 1.0)
            else:
                motion = me.dense_motion(source, _expand(state.keypoints, n), kp_target)
                features = SourceFeatures(per_scale=tuple(f.expand(n, *f.shape[1:]) for f in state.features.per_scale))
                frames = generator.render(features, motion).clamp_(-1.0, 1.0)
            if side_by_side:
                frames = torch.cat([source.to(frames.dtype), driving.to(frames.dtype), frames], dim=-1)
            result = to_uint8_frames(frames) if output == "numpy" else frames
        for i in range(n):
            yield result[i]


def _refresh_source(fast_model: Any, state: _Source) -> None:
    """Prepare `state`'s SourceCache (and source keypoints) again from the source image when it is
    stale (the weights changed since; the fast path refuses stale caches)."""
    if not fast_model.is_current(state.features):
        state.features = fast_model.prepare_source(state.image)
        state.keypoints = state.features.keypoints
