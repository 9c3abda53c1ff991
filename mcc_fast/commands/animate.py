"""`mcc-fast animate`: animate a portrait with a driving video.

    mcc-fast animate --source face.png --driving video.mp4 --output out.mp4 [--checkpoint PATH]
        [--relative|--absolute] [--no-adapt-scale] [--dtype fp16|bf16|fp32] [--batch N]
        [--device cuda|cuda:N|cpu] [--crop x,y,w,h|center] [--source-crop x,y,w,h|center]
        [--side-by-side] [--reference-path] [--overwrite] [--strict] [--quiet]

The output keeps the driving video's frame rate (fractional rates included) and audio
(copied; re-encoded to AAC only when the output container cannot hold it), H.264. It is
written under a temporary name and renamed when complete; an existing output is kept
unless --overwrite. Bad inputs print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..assets import DEMO_MODEL, DEMO_MODEL_NOTE  # the model used when --checkpoint is not given
from ..cli import DEVICE_HELP, device_option, positive_int, print_note, warnings_as_notes

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
PROG = "mcc-fast animate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options (see the module docstring)."""
    parser.add_argument("--source", required=True, metavar="IMAGE",
                        help="source portrait (png, jpg, ...): an aligned face crop, as in the training data")
    parser.add_argument("--driving", required=True, metavar="VIDEO", help="driving video (any container PyAV reads)")
    parser.add_argument("--output", required=True, metavar="VIDEO",
                        help="output video: .mp4, .m4v, .mov or .mkv (H.264, the driving video's frame rate and audio)")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="model: our .safetensors file or folder, or the authors' checkpoint folder "
                             "(default: the embedded demo model, when installed)")
    motion = parser.add_mutually_exclusive_group()
    motion.add_argument("--relative", dest="relative", action="store_true", default=True,
                        help="relative motion from the first driving frame (default)")
    motion.add_argument("--absolute", dest="relative", action="store_false",
                        help="absolute driving keypoints (same-identity reconstruction)")
    parser.add_argument("--no-adapt-scale", dest="adapt_scale", action="store_false",
                        help="do not scale the motion by the keypoint hull areas (relative motion)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="model precision (default fp32)")
    parser.add_argument("--batch", type=positive_int, default=8, metavar="N", help="frames per forward pass (default 8)")
    parser.add_argument("--device", default=None, metavar="DEVICE", help=DEVICE_HELP)
    parser.add_argument("--crop", metavar="X,Y,W,H", default=None,
                        help="crop box of the face in the driving video (pixels), or 'center' (largest centred square)")
    parser.add_argument("--source-crop", metavar="X,Y,W,H", default=None,
                        help="crop box of the face in the source image (pixels), or 'center'")
    parser.add_argument("--side-by-side", action="store_true", help="write [source | driving | result] frames")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--reference-path", action="store_true",
                        help="render with the reference path (op for op the authors' model) instead of the fast path")
    parser.add_argument("--strict", action="store_true",
                        help="refuse inputs that are not the model's size (after cropping) instead of resizing them")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _checkpoint(text: str | None) -> Path:
    from ..cli import CommandError

    if text is None:
        if not DEMO_MODEL.is_file():
            raise CommandError("no --checkpoint given and the embedded demo model is not installed "
                               f"({DEMO_MODEL}); pass --checkpoint PATH")
        return DEMO_MODEL
    path = Path(text).expanduser()
    if not path.exists():
        raise CommandError(f"--checkpoint {text!r} does not exist")
    return path


def _check_output(output: Path, overwrite: bool, inputs: list[Path]) -> None:
    from ..cli import CommandError
    from ..io.paths import writable_folder_error
    from ..io.video import VIDEO_OUTPUT_EXTENSIONS

    if output.suffix.lower() not in VIDEO_OUTPUT_EXTENSIONS:
        raise CommandError(f"--output {str(output)!r}: use a {', '.join(sorted(VIDEO_OUTPUT_EXTENSIONS))} file name")
    if output.is_dir():
        raise CommandError(f"--output {str(output)!r} is a folder")
    if not output.parent.is_dir():
        raise CommandError(f"--output folder {str(output.parent)!r} does not exist")
    unwritable = writable_folder_error(output.parent)  # else found only once the whole video is rendered
    if unwritable:
        raise CommandError(f"--output {str(output)!r}: cannot write in {str(output.parent)!r} ({unwritable})")
    for path in inputs:
        if path.exists() and output.exists() and output.resolve() == path.resolve():
            raise CommandError(f"--output {str(output)!r} is one of the inputs")
    if output.exists() and not overwrite:
        raise CommandError(f"--output {str(output)!r} exists; pass --overwrite to replace it")


def _crop_option(text: str | None, option: str):
    """The crop box of `option` ("x,y,w,h" pixels or "center"; None when not given), its form
    checked before anything loads; CommandError naming `option` otherwise. Whether the box lies
    inside the frames is checked on the first frame."""
    from ..cli import CommandError
    from ..inference.inputs import check_box_form, parse_crop

    if text is None:
        return None
    try:
        crop = parse_crop(text)
        check_box_form(crop, option)
    except ValueError as exc:
        raise CommandError(f"{option}: {exc}" if not str(exc).startswith(option) else str(exc)) from None
    return crop


def _format_fps(fps) -> str:
    text = f"{float(fps):.3f}".rstrip("0").rstrip(".") + " fps"
    return text if fps.denominator == 1 else f"{text} ({fps.numerator}/{fps.denominator})"


def run(args: argparse.Namespace) -> int:
    """Run the command; user errors raise CommandError / ValueError / OSError (one line)."""
    from ..cli import CommandError
    from ..io.video import VideoReadError, VideoWriter, iter_video_frames, probe_video, read_image

    if args.output.endswith(("/", os.sep)):  # (Path() would drop the slash and write a file of that name)
        raise CommandError(f"--output {args.output!r} ends with a slash (a folder); give a video file name")
    source, driving, output = Path(args.source), Path(args.driving), Path(args.output)
    crop, source_crop = _crop_option(args.crop, "--crop"), _crop_option(args.source_crop, "--source-crop")
    _check_output(output, args.overwrite, [source, driving])
    device = device_option(args.device)
    checkpoint = _checkpoint(args.checkpoint)
    try:
        source_image = read_image(source, what="--source image")
        info = probe_video(driving, what="--driving video")
    except VideoReadError as exc:
        raise CommandError(str(exc)) from None

    import torch
    from tqdm import tqdm

    from ..model.model import Model

    dtype = getattr(torch, DTYPES[args.dtype])
    model = Model.from_pretrained(checkpoint, device=device, dtype=dtype)

    def note(message: str) -> None:
        print_note(PROG, message)

    if args.checkpoint is None:
        note(DEMO_MODEL_NOTE)

    started = time.perf_counter()
    with warnings_as_notes(PROG):
        frames = model.animate(
            source_image, iter_video_frames(driving, what="--driving video"), relative=args.relative,
            adapt_scale=args.adapt_scale, batch_size=args.batch, side_by_side=args.side_by_side, crop=crop,
            source_crop=source_crop, strict=args.strict, note=note, fast=not args.reference_path)
        audio_from = driving if info.has_audio else None
        with VideoWriter(output, info.fps, audio_from=audio_from, overwrite=args.overwrite) as writer, \
                tqdm(total=info.estimated_frames(), unit="frame", desc="animate", file=sys.stderr,
                     disable=args.quiet, dynamic_ncols=True) as bar:
            for frame in frames:
                writer.write(frame)
                bar.update(1)
    elapsed = time.perf_counter() - started
    height, width = frame.shape[:2]
    audio = {"copy": "audio copied", "aac": "audio re-encoded to AAC", None: "no audio"}[writer.audio]
    motion = ("relative" + ("" if args.adapt_scale else ", no scale adaptation")) if args.relative else "absolute"
    print(f"{PROG}: wrote {output} ({writer.frames_written} frames, {width}x{height}, {_format_fps(info.fps)}, "
          f"{audio}; {motion} motion) in {elapsed:.1f} s ({writer.frames_written / max(elapsed, 1e-9):.2f} frames/s, "
          f"{device.type} {args.dtype})")
    return 0
