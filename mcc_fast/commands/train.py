"""`mcc-fast train`: train MCC on a folder of videos (also `torchrun -m mcc_fast.training ...`).

    mcc-fast train --config official --data DATA [--out DIR] [--resume [CKPT]] [--overwrite]
                   [--init-from PATH] [--set key=value ...] [--vgg-weights PATH | --random-vgg]
                   [--stop-at STEP]

A fresh run into a run folder that already holds checkpoints is refused: continue it with
--resume, or start afresh with --overwrite (deletes those checkpoints first).

Ctrl-C or SIGTERM stops after the current step with a checkpoint (exit status 0; continue
with --resume); a second Ctrl-C aborts at once without one (exit status 130). Errors (a
diverged loss, a checkpoint that could not be written) are one line, exit status 2.

Several GPUs or nodes: ``torchrun --nproc-per-node 4 -m mcc_fast.training --config ... --data ...``.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..cli import positive_int, warnings_as_notes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `train` options."""
    parser.add_argument("--config", default="official",
                        help="YAML config file, or a shipped one: official, smoke, demo (default official)")
    parser.add_argument("--data", default=None,
                        help="dataset root in the FOMM layout (train/ and test/ folders of videos); "
                             "overrides data.root")
    parser.add_argument("--out", default=None,
                        help="run folder (default runs/<the config's name:>, e.g. runs/mcc-smoke)")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                        help="continue exactly from the newest checkpoint in --out (or from CHECKPOINT, a "
                             "checkpoint folder); starts fresh when --out holds none. Resuming from an older "
                             "checkpoint of --out moves its later ones to checkpoints/abandoned-<time>/ at "
                             "the first save; changed optim.* settings apply (and are logged)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh (or from --resume CHECKPOINT of another folder) in an --out that "
                             "already holds checkpoints: DELETE those checkpoints first (without it such a "
                             "run is refused)")
    parser.add_argument("--init-from", default=None, metavar="PATH",
                        help="starting weights (fine-tuning): one of our checkpoints or model files, or the "
                             "authors' folder / 'net_g.pth,net_motion_estimator.pth' pair")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=1e-4 (repeatable)")
    vgg = parser.add_mutually_exclusive_group()
    vgg.add_argument("--vgg-weights", default=None, metavar="PATH",
                     help="local torchvision-format VGG19 weights for the perceptual loss (vgg19-dcbb9e9d.pth)")
    vgg.add_argument("--random-vgg", action="store_true",
                     help="random VGG19 weights for the perceptual loss (smoke runs only)")
    parser.add_argument("--stop-at", type=positive_int, default=None, metavar="STEP",
                        help="stop (with a checkpoint) after this iteration (>= 1), as if interrupted")


def build_config(args: argparse.Namespace):
    """The TrainConfig of the parsed arguments (config file + --data + VGG flags + --set).

    The paths of --data and --vgg-weights are set as they are (never read as YAML, so
    '#' or ': ' in a path stay part of it); a later --set of the same key wins.
    """
    from mcc_fast.training.config import load_config

    overrides: list = []
    if args.data is not None:
        if not Path(args.data).is_dir():
            raise FileNotFoundError(f"--data {args.data!r}: no such folder (expected train/ and test/ inside)")
        overrides.append(("data.root", str(Path(args.data).resolve())))
    if args.vgg_weights is not None:
        if not Path(args.vgg_weights).is_file():
            raise FileNotFoundError(f"--vgg-weights {args.vgg_weights!r}: no such file (a local torchvision "
                                    "VGG19 state dict; nothing is downloaded)")
        overrides += [("loss.vgg_weights", str(Path(args.vgg_weights).resolve())), ("loss.random_vgg", False)]
    if args.random_vgg:
        overrides += [("loss.random_vgg", True), ("loss.vgg_weights", None)]
    return load_config(args.config, overrides + list(args.overrides))


def _check_out_outside_splits(out: Path, data_root: str | None) -> None:
    """A run folder inside the dataset's train/ or test/ would be listed as one of its videos
    (an unreadable one, which also changes the epoch size on --resume): ValueError naming --out."""
    if data_root is None:
        return
    resolved = out.resolve()
    for split in ("train", "test"):
        folder = (Path(data_root) / split).resolve()
        if resolved.is_relative_to(folder):
            raise ValueError(f"--out {str(out)!r} is inside the dataset's {split}/ folder {str(folder)!r}, where "
                             "it would be read as a video; choose a run folder outside train/ and test/")


def run(args: argparse.Namespace) -> int:
    """Train; returns 0 when finished or stopped cleanly (a checkpoint was written)."""
    from mcc_fast.io.paths import output_folder
    from mcc_fast.training.trainer import train

    if args.out is not None:
        output_folder(args.out, "--out")
    config = build_config(args)
    out = Path(args.out) if args.out is not None else Path("runs") / config.name
    _check_out_outside_splits(out, config.data.root)
    with warnings_as_notes("mcc-fast train"):
        result = train(config, out, resume=args.resume, init_from=args.init_from, stop_at=args.stop_at,
                       overwrite=getattr(args, "overwrite", False))
    if os.environ.get("RANK", "0") != "0":
        return 0
    where = f"; last checkpoint {result.checkpoint}" if result.checkpoint else ""
    print(f"mcc-fast train: {'stopped' if result.interrupted else 'finished'} at step {result.step}{where}")
    return 0
