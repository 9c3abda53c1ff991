"""The embedded demo model: its data recipe, its held-out check and its export.

The demo model is the MCC architecture at 64x64 (training/configs/demo.yaml) trained on
synthetic talking heads (:mod:`mcc_fast.training.synth`, with the settings of
:data:`DEMO_DATA`). This module holds what turns a finished run into the shipped files:

- :func:`held_out_clips`: clips of synthetic people the model never saw (identities drawn
  from :data:`HELD_OUT_SEED`, training uses seed 0), rendered like the training data.
- :func:`compare_with_no_motion`: same-identity reconstruction (frame 0 is the source,
  absolute motion, the user-facing `Model.animate` path) against the unchanged source, the
  "no motion" baseline; L1 of [0, 1] images and PSNR in dB, like validation.
- :func:`export_demo` (``python -m mcc_fast.training.demo_model CHECKPOINT``): the fp16
  model file, the sample source portrait and driving clip (two more held-out people), a
  frame strip PNG of a result, and the comparison as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["DEMO_DATA", "HELD_OUT_SEED", "held_out_clips", "compare_with_no_motion", "export_demo", "main"]

#: `mcc-fast synth` settings of the demo's training data (see training/configs/demo.yaml).
DEMO_DATA = {"videos": 300, "frames": 48, "size": 64, "head_motion": 2.5, "seed": 0, "fps": 25.0}
#: Identities for held-out clips come from this seed (training identities from DEMO_DATA["seed"]).
HELD_OUT_SEED = 1


def held_out_clips(count: int, frames: int, *, first: int = 0, size: int = DEMO_DATA["size"],
                   head_motion: float = DEMO_DATA["head_motion"]) -> list[np.ndarray]:
    """`count` clips (uint8 (frames, size, size, 3) each) of held-out synthetic people
    `first`, `first + 1`, ... rendered with the demo data's motion settings."""
    from .synth import render_video, sample_identity, sample_motion

    fps = DEMO_DATA["fps"]
    clips = []
    for person in range(first, first + count):
        identity = sample_identity(np.random.default_rng([HELD_OUT_SEED, 0, person]))
        motion = sample_motion(np.random.default_rng([HELD_OUT_SEED, 1, person, 0]), frames / fps, head_motion)
        clips.append(render_video(identity, motion, frames, size, fps))
    return clips


def compare_with_no_motion(model, clips: Sequence[np.ndarray], skip_first: bool = True) -> dict[str, float]:
    """Reconstruct each clip from its frame 0 (absolute motion) and compare with the
    no-motion baseline: {"l1", "psnr", "l1_no_motion", "psnr_no_motion", "frames"} (means over
    all frames; frame 0 itself is left out when `skip_first`)."""
    from mcc_fast.evaluation.pixel import l1_per_frame, psnr_per_frame

    if not clips:
        raise ValueError("clips must hold at least one clip")
    results = {"l1": [], "psnr": [], "l1_no_motion": [], "psnr_no_motion": []}
    for clip in clips:
        clip = np.asarray(clip)
        if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8 or clip.shape[0] < 1 + skip_first:
            raise ValueError(f"clips must be uint8 (F, H, W, 3) with F >= {1 + skip_first}, got "
                             f"{clip.dtype} {clip.shape}")
        driving = clip[1:] if skip_first else clip
        generated = np.stack(list(model.animate(clip[0], driving, relative=False)))
        still = np.broadcast_to(clip[:1], driving.shape)
        for key, frames in (("", generated), ("_no_motion", still)):
            results["l1" + key] += l1_per_frame(frames, driving).tolist()
            results["psnr" + key] += psnr_per_frame(frames, driving).tolist()
    summary = {key: float(np.mean(values)) for key, values in results.items()}
    return summary | {"frames": len(results["l1"])}


def _frame_strip(model, source: np.ndarray, driving: np.ndarray, every: int) -> np.ndarray:
    """uint8 image: row 1 the driving frames, row 2 the source animated by them (relative)."""
    picked = driving[::every]
    result = np.stack(list(model.animate(source, picked, relative=True)))
    gap = np.full_like(picked[0][:, :2], 255)
    rows = [np.concatenate([np.concatenate([f, gap], 1) for f in row], 1) for row in (picked, result)]
    head = np.concatenate([source, np.full_like(source[:, :6], 255)], 1)
    blank = np.full_like(head, 255)
    return np.concatenate([np.concatenate([blank, rows[0]], 1), np.concatenate([head, rows[1]], 1)], 0)


#: Held-out people of the sample source portrait and of the sample driving clip (picked by eye:
#: a large, near-frontal face; a clip with wide head turns).
SAMPLE_SOURCE_PERSON, SAMPLE_DRIVING_PERSON = 104, 101


def export_demo(checkpoint: str | Path, assets: str | Path, docs: str | Path | None = None,
                held_out: int = 6, frames: int = 48) -> dict:
    """Write the shipped demo files from a training checkpoint (a checkpoint folder or its
    model.safetensors): ``assets/demo_model.safetensors`` (fp16), ``demo_source.png`` and
    ``demo_driving.mp4`` (the held-out people SAMPLE_SOURCE_PERSON and
    SAMPLE_DRIVING_PERSON), and, with `docs`, ``demo_strip.png``
    and ``demo_model.json`` (the no-motion comparison on `held_out` clips of `frames`
    frames). Returns the comparison dict."""
    import torch

    from mcc_fast.io.video import atomic_output
    from mcc_fast.model import Model

    from .data.video_io import write_image, write_video

    checkpoint, assets = Path(checkpoint), Path(assets)
    model = Model.from_pretrained(checkpoint, device="cpu")
    assets.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(assets / "demo_model.safetensors", dtype=torch.float16)
    shipped = Model.from_pretrained(assets / "demo_model.safetensors", device="cpu", dtype=torch.float32)
    source_clip, = held_out_clips(1, frames, first=SAMPLE_SOURCE_PERSON)
    driving, = held_out_clips(1, frames, first=SAMPLE_DRIVING_PERSON)
    write_image(assets / "demo_source.png", source_clip[0])
    write_video(assets / "demo_driving.mp4", driving, fps=DEMO_DATA["fps"])
    report = compare_with_no_motion(shipped, held_out_clips(held_out, frames))
    report = {"checkpoint": checkpoint.name, "held_out_clips": held_out, **report}
    if docs is not None:
        docs = Path(docs)
        docs.mkdir(parents=True, exist_ok=True)
        strip = _frame_strip(shipped, source_clip[0], driving, every=max(1, frames // 8))
        write_image(docs / "demo_strip.png", np.repeat(np.repeat(strip, 2, 0), 2, 1))
        with atomic_output(docs / "demo_model.json", overwrite=True) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mcc_fast.training.demo_model CHECKPOINT [--assets DIR] [--docs DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m mcc_fast.training.demo_model",
                                     description="Export the embedded demo model and its sample files.")
    parser.add_argument("checkpoint", help="a checkpoint folder of `mcc-fast train --config demo` (or its model.safetensors)")
    parser.add_argument("--assets", default="mcc_fast/assets", help="where the shipped files go (default mcc_fast/assets)")
    parser.add_argument("--docs", default="docs", help="where the frame strip and the figures go (default docs)")
    args = parser.parse_args(argv)
    if not Path(args.checkpoint).exists():
        print(f"{parser.prog}: error: checkpoint {args.checkpoint!r} does not exist", file=sys.stderr)
        return 2
    report = export_demo(args.checkpoint, args.assets, args.docs)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
