"""`mcc-fast demo`: animate the shipped sample portrait with the shipped sample clip, offline.

Uses the embedded demo model (our own: the MCC architecture at 64x64, trained by
`mcc_fast.training` on synthetic talking heads; recipe in training/configs/demo.yaml). Writes
out.mp4 (the result), side_by_side.mp4 (source | driving | result) and contact_sheet.png.
Real faces need the authors' checkpoint or a model trained with `mcc-fast train`.
"""
from __future__ import annotations

import argparse
import sys
import time

from ..assets import DEMO_DRIVING, DEMO_MODEL, DEMO_MODEL_NOTE, DEMO_SOURCE
from ..cli import DEVICE_HELP, device_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default="mcc_fast_demo", metavar="DIR",
                        help="output folder (default ./mcc_fast_demo)")
    parser.add_argument("--device", default=None, metavar="DEVICE", help=DEVICE_HELP)
    parser.add_argument("--overwrite", action="store_true", help="replace files from an earlier demo run")


def contact_sheet(rows: list[list], every: int = 4):
    """uint8 (rows*S, cols*S, 3) grid: one row per stream, every `every`-th frame."""
    import numpy as np

    picked = [[r[i] for i in range(0, len(r), every)] for r in rows]
    return np.concatenate([np.concatenate(r, axis=1) for r in picked], axis=0)


def run(args: argparse.Namespace) -> int:
    import contextlib

    import numpy as np

    from ..cli import CommandError
    from ..io.paths import output_folder
    from ..io.video import VideoWriter, atomic_output, iter_video_frames, probe_video, read_image
    from ..model import Model

    for path in (DEMO_MODEL, DEMO_SOURCE, DEMO_DRIVING):
        if not path.is_file():
            raise CommandError(f"the demo asset {path} is missing from this installation (reinstall mcc_fast)")
    device = device_option(args.device)
    out = output_folder(args.output, "--output")
    out.mkdir(parents=True, exist_ok=True)
    targets = [out / "out.mp4", out / "side_by_side.mp4", out / "contact_sheet.png"]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not args.overwrite:
        raise CommandError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace")

    print(f"mcc-fast demo: {DEMO_MODEL_NOTE}", file=sys.stderr)
    started = time.perf_counter()
    model = Model.from_pretrained(DEMO_MODEL, device=device)
    source = read_image(DEMO_SOURCE)
    driving = list(iter_video_frames(DEMO_DRIVING))
    fps = probe_video(DEMO_DRIVING).fps
    panels = list(model.animate(source, driving, relative=True, side_by_side=True, fast=True))
    size = model.config.image_size
    results = [p[:, 2 * size:] for p in panels]
    # All three are written under temporary names, then renamed together: a failure on the way
    # (a full disk) leaves the earlier outputs as they were, not a mix of old and new files.
    with contextlib.ExitStack() as outputs:
        tmp = [outputs.enter_context(atomic_output(t, overwrite=args.overwrite)) for t in targets]
        for path, frames in ((tmp[0], results), (tmp[1], panels)):
            with VideoWriter(path, fps) as writer:
                for frame in frames:
                    writer.write(frame)
        sheet = contact_sheet([[p[:, :size] for p in panels], [p[:, size:2 * size] for p in panels], results])
        from PIL import Image

        Image.fromarray(np.ascontiguousarray(sheet)).save(tmp[2], format="PNG")
    elapsed = time.perf_counter() - started
    print(f"mcc-fast demo: {len(results)} frames in {elapsed:.1f} s; wrote")
    for t in targets:
        print(f"  {t}")
    return 0
