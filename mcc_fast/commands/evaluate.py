"""`mcc-fast evaluate`: the paper's evaluation protocol on a test set, offline.

Same-identity (default): each test video is reconstructed from its first frame with
absolute motion, `g(source, me(driving, source))`, and compared with the video itself.
Cross-identity: source/driving pairs from a CSV (`source,driving`: video names or image /
video paths), relative motion; identity metrics against the source.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from ..cli import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..evaluation import METRICS

    parser.add_argument("--checkpoint", metavar="PATH", help="model (our format or the authors' folder); "
                        "default: the embedded demo model")
    parser.add_argument("--data", required=True, metavar="DIR", help="dataset root (FOMM layout: DIR/test/...)")
    parser.add_argument("--split", default="test", help="split folder inside --data (default test)")
    parser.add_argument("--mode", choices=("same-id", "cross-id"), default="same-id")
    parser.add_argument("--pairs", metavar="CSV", help="cross-id pairs: a CSV with columns source,driving")
    parser.add_argument("--metrics", default="l1,psnr,lpips,fid,akd,aed",
                        help=f"comma-separated, from {','.join(METRICS)} (default l1,psnr,lpips,fid,akd,aed)")
    parser.add_argument("--weights-dir", metavar="DIR", help="folder of the metric networks' weight files")
    parser.add_argument("--output", default="results.json", help="JSON results (a CSV is written beside it)")
    parser.add_argument("--max-frames", type=int, default=None, help="evaluate at most this many frames per video")
    parser.add_argument("--batch", type=int, default=8, help="frames per forward pass (default 8)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None)
    parser.add_argument("--official-references", action="store_true",
                        help="FID and identity metrics against the source image, as the official code does")


def _load_model(args):
    import torch

    from ..model import Model
    from .animate import _checkpoint

    if args.device == "cuda" and not torch.cuda.is_available():
        raise CommandError("--device cuda was requested but no CUDA GPU is available")
    return Model.from_pretrained(_checkpoint(args.checkpoint), device=args.device)


def _same_identity_items(model, dataset, args):
    import torch

    for index in range(len(dataset)):
        item = dataset[index]
        name = item["name"]
        if not item["ok"] or item["video"].shape[0] == 0:
            yield name, None, None
            continue
        video = item["video"]  # (F, 3, S, S) float [-1, 1]
        source = video[:1]

        def generate(video=video, source=source):
            frames = model.animate(source, video, relative=False, batch_size=args.batch, output="tensor")
            return torch.stack([f.float().cpu() for f in frames])

        yield name, generate, video, source[0]


def _cross_identity_items(model, dataset, args):
    import torch

    from ..io.video import iter_video_frames, read_image

    by_name = {}
    for i in range(len(dataset)):  # a pair may name a test video with or without its suffix
        name = dataset[i]["name"]
        by_name[name] = by_name[Path(name).stem] = i
    with open(args.pairs, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"source", "driving"} <= set(rows[0]):
        raise CommandError(f"--pairs {args.pairs}: expected a CSV with columns source,driving")

    def load(ref, first_only):
        if ref in by_name:
            video = dataset[by_name[ref]]["video"]
            return video[:1] if first_only else video
        path = Path(ref)
        if not path.exists():
            raise ValueError(f"{ref}: neither a video of the test set nor an existing file")
        if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"):
            return read_image(path)
        frames = list(iter_video_frames(path))
        return frames[:1] if first_only else frames

    for row in rows:
        name = f"{Path(row['source']).stem}->{Path(row['driving']).stem}"

        def generate(row=row):
            frames = model.animate(load(row["source"], True), load(row["driving"], False), relative=True,
                                   batch_size=args.batch, output="tensor")
            return torch.stack([f.float().cpu() for f in frames])

        def driving(row=row):
            return load(row["driving"], False)

        yield name, generate, driving


def run(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate_sequences, format_summary
    from ..training.data.datasets import VideoSequenceDataset

    root = Path(args.data)
    if not (root / args.split).is_dir():
        raise CommandError(f"--data {root}: no {args.split}/ folder of videos inside")
    if args.mode == "cross-id" and not args.pairs:
        raise CommandError("--mode cross-id needs --pairs CSV")
    model = _load_model(args)
    size = model.config.image_size
    dataset = VideoSequenceDataset(root, split=args.split, size=size, max_frames=args.max_frames)
    items = (_same_identity_items if args.mode == "same-id" else _cross_identity_items)(model, dataset, args)
    official = args.official_references
    results = evaluate_sequences(
        items, metrics=args.metrics, weights_dir=args.weights_dir, output=args.output,
        device=next(model.parameters()).device, batch_size=args.batch,
        fid_reference="source" if official else "ground_truth",
        identity_reference="source" if (official or args.mode == "cross-id") else "ground_truth",
        total=len(dataset) if args.mode == "same-id" else None,
    )
    print(format_summary(results))
    print(f"results written to {args.output}")
    return 0
