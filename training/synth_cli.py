"""``mcc-fast synth``: write a synthetic talking-head dataset (see ``mcc_fast.training.synth``).

The lead's ``mcc-fast`` command wires :func:`add_synth_arguments` and :func:`run_synth`
into a sub-command; :func:`main` runs it stand-alone (``python -m mcc_fast.training.synth_cli``).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .synth import FPS_RANGE

__all__ = ["add_synth_arguments", "run_synth", "main"]


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _float_type(expected: str, accept):
    """An argparse type: a float for which `accept(value)` holds, else an error saying `expected`."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    parse.__name__ = expected
    return parse


_fraction = _float_type("a number in [0, 1)", lambda v: 0.0 <= v < 1.0)
_FPS_MIN, _FPS_MAX = FPS_RANGE
_fps = _float_type(f"a frame rate in [{_FPS_MIN:g}, {_FPS_MAX:g}]", lambda v: _FPS_MIN <= v <= _FPS_MAX)
_non_negative_float = _float_type("a finite number >= 0", lambda v: 0 <= v < float("inf"))


def add_synth_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``synth`` options to ``parser`` (returns it)."""
    parser.add_argument("--out", required=True, help="output folder (FOMM layout: train/, test/, meta/, synth.json)")
    parser.add_argument("--videos", type=_int_at_least(1), default=200, help="number of videos (default 200)")
    parser.add_argument("--frames", type=_int_at_least(1), default=64, help="frames per video (default 64)")
    parser.add_argument("--size", type=_int_at_least(16), default=128, help="frame size in pixels (default 128)")
    parser.add_argument("--seed", type=_int_at_least(0), default=0, help="random seed (default 0)")
    parser.add_argument("--format", choices=("mp4", "png"), default="mp4",
                        help="mp4 files or folders of png frames (default mp4)")
    parser.add_argument("--test-fraction", type=_fraction, default=0.1,
                        help="fraction of videos in test/, with unseen identities (default 0.1)")
    parser.add_argument("--videos-per-identity", type=_int_at_least(1), default=2,
                        help="clips per synthetic person, named id#clip (default 2)")
    parser.add_argument("--fps", type=_fps, default=25.0,
                        help=f"frame rate, {_FPS_MIN:g} to {_FPS_MAX:g} frames per second (default 25)")
    parser.add_argument("--head-motion", type=_non_negative_float, default=1.0, metavar="SCALE",
                        help="multiply the head-pose amplitudes (yaw, pitch, roll, translation, zoom); "
                             "0 = a still head (default 1)")
    parser.add_argument("--workers", type=_int_at_least(0), default=0,
                        help="rendering processes, 0 = one per core; the output does not depend on it (default 0)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a dataset an earlier synth run wrote in --out (train/ or test/ without "
                             "its synth.json, e.g. your own videos, is never replaced)")
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    return parser


def run_synth(args: argparse.Namespace) -> int:
    """Run ``synth`` with parsed arguments; prints a summary and returns 0 (2 on a
    usage error, with the message on stderr, as the other ``mcc-fast`` commands)."""
    from mcc_fast.io.paths import output_folder

    from .synth import write_dataset

    def progress(done: int, total: int) -> None:
        if not args.quiet and (done == total or done % max(1, total // 10) == 0):
            print(f"synth: {done}/{total} videos", file=sys.stderr, flush=True)

    if args.format == "mp4" and args.size % 2:  # said with the options' names (write_dataset says size/format)
        print(f"mcc-fast synth: error: --size must be even with --format mp4 (yuv420p video), got {args.size}",
              file=sys.stderr)
        return 2
    try:
        output_folder(args.out, "--out")
        summary = write_dataset(
            args.out, videos=args.videos, frames=args.frames, size=args.size, seed=args.seed, format=args.format,
            test_fraction=args.test_fraction, videos_per_identity=args.videos_per_identity, fps=args.fps,
            workers=args.workers, overwrite=args.overwrite, progress=progress, head_motion=args.head_motion,
        )
    except (ValueError, OSError) as exc:
        print(f"mcc-fast synth: error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        secs = summary["seconds"]
        frames = summary["videos"] * summary["frames"]
        print(f"wrote {summary['num_train']} train + {summary['num_test']} test videos "
              f"({summary['frames']} frames, {summary['size']}x{summary['size']}, {summary['format']}) "
              f"to {args.out} in {secs:.1f} s ({frames / max(secs, 1e-9):.0f} frames/s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry: ``mcc-fast synth --out DIR [--videos N --frames F --size S
    --seed K --format mp4|png ...]``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="mcc-fast synth", description="Write a synthetic talking-head dataset.")
    add_synth_arguments(parser)
    return run_synth(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
