"""`mcc-fast evaluate`: the paper's evaluation protocol on a test set, offline.

Same-identity (default): each test video is reconstructed from its first frame with
absolute motion, `g(source, me(driving, source))`, and compared with the video itself.
Cross-identity: source/driving pairs from a CSV (`source,driving`: video names or image /
video paths), relative motion; identity metrics against the source. `--motion` and
`--no-adapt-scale` change the motion of either mode.

Results go to --output (a .json file) and the CSV beside it (same name, .csv), both
checked before anything runs (an existing one is kept unless --overwrite; an input is
never replaced) and written atomically. Bad options print one line and exit with status 2;
a run where nothing could be evaluated exits with status 1 and writes nothing.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from ..cli import DEVICE_HELP, CommandError, device_option, positive_int, print_note, warnings_as_notes
from ..io.paths import writable_folder_error

PROG = "mcc-fast evaluate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..evaluation import METRICS

    parser.add_argument("--checkpoint", metavar="PATH", help="model (our format or the authors' folder); "
                        "default: the embedded demo model")
    parser.add_argument("--data", required=True, metavar="DIR", help="dataset root (FOMM layout: DIR/test/...)")
    parser.add_argument("--split", default="test", choices=("test", "train"),
                        help="split folder inside --data (default test)")
    parser.add_argument("--mode", choices=("same-id", "cross-id"), default="same-id",
                        help="same-id: reconstruct each test video from its first frame (default); "
                             "cross-id: animate the sources of --pairs with other people's motion")
    parser.add_argument("--pairs", metavar="CSV", help="cross-id pairs: a CSV with columns source,driving "
                        "(video names of the split, or image / video file paths)")
    parser.add_argument("--metrics", default=None,
                        help=f"comma-separated, from {','.join(METRICS)} (default: {DEFAULT_METRICS['same-id']} for "
                             f"same-id, {DEFAULT_METRICS['cross-id']} for cross-id, which has no ground truth). "
                             "AED and CSIM both use the ArcFace embedder given in --weights-dir (AED = its "
                             "embedding distance; the paper's AED used OpenFace)")
    parser.add_argument("--weights-dir", metavar="DIR", help="folder of the metric networks' weight files")
    parser.add_argument("--output", default="results.json", metavar="FILE.json",
                        help="JSON results (default results.json); the CSV is written beside it (FILE.csv)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output JSON / CSV")
    parser.add_argument("--max-frames", type=positive_int, default=None, metavar="N",
                        help="evaluate at most this many frames per video")
    parser.add_argument("--batch", type=positive_int, default=8, metavar="N",
                        help="frames per forward pass (default 8)")
    parser.add_argument("--device", default=None, metavar="DEVICE", help=DEVICE_HELP)
    parser.add_argument("--motion", choices=("relative", "absolute"), default=None,
                        help="driving motion: absolute (default for same-id) or relative to the first driving "
                             "frame (default for cross-id); the authors' cross-id script used absolute")
    parser.add_argument("--no-adapt-scale", dest="adapt_scale", action="store_false",
                        help="relative motion: do not scale it by the keypoint hull areas")
    parser.add_argument("--official-references", action="store_true",
                        help="FID and identity metrics against the source image, as the official code does")


#: Metrics per mode: cross-identity output has no ground truth, so the default there are the
#: metrics that do not compare pixels with the driving person (FID, identity to the source, pose).
DEFAULT_METRICS = {"same-id": "l1,psnr,lpips,fid,akd,aed", "cross-id": "fid,csim,ard"}
#: Metrics that, in cross-id mode, compare the output with another person's driving frames.
_PIXEL_METRICS = ("l1", "psnr", "lpips")


def _note(message: str) -> None:
    print_note(PROG, message)


# ---- checks before anything runs ----------------------------------------------------------

def _check_options(args) -> None:
    """Options that need no model or data: CommandError naming the option."""
    from ..evaluation import METRICS
    from ..evaluation.runner import _parse_metrics

    root = Path(args.data)
    if not (root / args.split).is_dir():
        raise CommandError(f"--data {root}: no {args.split}/ folder of videos inside")
    if args.mode == "cross-id" and not args.pairs:
        raise CommandError("--mode cross-id needs --pairs CSV")
    if args.pairs and args.mode != "cross-id":
        raise CommandError("--pairs is for cross-identity evaluation: add --mode cross-id")
    if not args.adapt_scale and args.motion == "absolute":
        raise CommandError("--no-adapt-scale applies to relative motion: add --motion relative")
    if args.weights_dir is not None and not Path(args.weights_dir).is_dir():
        raise CommandError(f"--weights-dir {args.weights_dir!r} is not a folder")
    try:
        _parse_metrics(args.metrics)
    except ValueError:
        raise CommandError(f"--metrics {args.metrics!r}: expected a comma-separated list from "
                           f"{','.join(METRICS)}") from None


def _input_holding(path: Path, inputs: list[Path]) -> Path | None:
    """The input that an existing `path` is (a file) or lies inside (a folder), else None."""
    if not path.exists():
        return None
    resolved = path.resolve()
    for item in inputs:
        if item.is_dir() and resolved.is_relative_to(item.resolve()):
            return item
        if item.is_file() and (resolved == item.resolve() or path.samefile(item)):
            return item
    return None


def _check_outputs(output: Path, overwrite: bool, inputs: list[Path]) -> tuple[Path, Path]:
    """The JSON and CSV result paths, refused up front when unusable."""
    if output.suffix.lower() != ".json":
        raise CommandError(f"--output {str(output)!r}: expected a file name ending in .json "
                           "(the CSV is written beside it)")
    table = output.with_suffix(".csv")
    for path in (output, table):
        if path.is_dir():
            raise CommandError(f"--output {str(output)!r}: {str(path)!r} is a folder")
        held = _input_holding(path, inputs)
        if held is not None:
            where = "" if held.resolve() == path.resolve() else f" (it is inside {str(held)!r})"
            raise CommandError(f"--output {str(output)!r}: {str(path)!r} is one of the inputs{where}; "
                               "choose another name")
        if path.exists() and not overwrite:
            raise CommandError(f"--output {str(output)!r}: {str(path)!r} exists; pass --overwrite to replace it")
    parent = output.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CommandError(f"--output {str(output)!r}: {str(parent)!r} is not a folder")
    unwritable = writable_folder_error(parent)  # else found only at the end, after the whole evaluation
    if unwritable:
        raise CommandError(f"--output {str(output)!r}: cannot write in {str(parent)!r} ({unwritable})")
    return output, table


# ---- the pairs CSV ------------------------------------------------------------------------

def _read_pairs(path: Path) -> list[tuple[int, str, str]]:
    """(line, source, driving) of each --pairs row; CommandError naming the file and line."""
    where = f"--pairs {str(path)!r}"
    if not path.exists():
        raise CommandError(f"{where} does not exist")
    if not path.is_file():
        raise CommandError(f"{where} is not a file")
    rows = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"source", "driving"} <= {f.strip() for f in reader.fieldnames}:
                raise CommandError(f"{where}: expected a CSV with a header line source,driving")
            reader.fieldnames = [f.strip() for f in reader.fieldnames]
            for row in reader:
                source, driving = row.get("source"), row.get("driving")
                extra = [v for v in row.get(None) or [] if v.strip()]
                if not source or not driving or not source.strip() or not driving.strip() or extra:
                    raise CommandError(f"{where} line {reader.line_num}: expected two values source,driving, "
                                       f"got {','.join(v or '' for v in [source, driving, *extra]).strip(',')!r}")
                rows.append((reader.line_num, source.strip(), driving.strip()))
    except UnicodeDecodeError:
        raise CommandError(f"{where}: not a text CSV file (expected UTF-8 text)") from None
    except csv.Error as exc:
        raise CommandError(f"{where}: not a readable CSV file ({exc})") from None
    except OSError as exc:
        raise CommandError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if not rows:
        raise CommandError(f"{where}: no pairs after the header line source,driving")
    return rows


def _check_refs(pairs, names: dict[str, int], args) -> list[Path]:
    """Every reference is a video of the split or an existing file; returns the file paths."""
    files = []
    for line, *refs in pairs:
        for ref in refs:
            if isinstance(names.get(ref), tuple):
                raise CommandError(f"--pairs {args.pairs!r} line {line}: {ref!r} names more than one video of "
                                   f"{args.split}/ ({', '.join(names[ref])}): give the name with its suffix")
            if ref in names:
                continue
            if not Path(ref).exists():
                raise CommandError(f"--pairs {args.pairs!r} line {line}: {ref!r} is neither a video of "
                                   f"{args.split}/ nor an existing file")
            files.append(Path(ref))
    return files


# ---- what to evaluate ---------------------------------------------------------------------

def _generated(model, source, driving, args):
    """The frames animating `source` (1, 3, S, S) with `driving` (F, 3, S, S), float [-1, 1] on the
    CPU, with the motion options of `args`: (F, 3, S, S) uint8 on the CPU, each frame quantised as
    it comes (as the metrics read it: a quarter of the memory of float32 frames for a long video)."""
    import torch

    from ..evaluation import as_uint8_frames

    device = next(model.parameters()).device
    frames = model.animate(source.to(device), driving.to(device), relative=args.motion == "relative",
                           adapt_scale=args.adapt_scale, batch_size=args.batch, output="tensor")
    return torch.cat([as_uint8_frames(f.float().cpu(), "generated") for f in frames])


def _same_identity_items(model, dataset, args):
    from ..evaluation import EvalItem

    for index in range(len(dataset)):
        item = dataset[index]
        name = item["name"]
        if not item["ok"] or item["video"].shape[0] == 0:
            yield EvalItem(name, None, None, error=item.get("error") or "unreadable or empty video")
            continue
        video = item["video"]  # (F, 3, S, S) float [-1, 1]
        source = video[:1]
        yield EvalItem(name, lambda video=video, source=source: _generated(model, source, video, args),
                       video, source[0])


def _load_frames(ref: str, dataset, names: dict[str, int], size: int, max_frames: int | None):
    """A pair's reference as float frames (F, 3, S, S) in [-1, 1]: a video of the split, an
    image file (one frame), or a video file / frame folder (resized to S with a note, frame by
    frame as it is decoded: never the whole video at its own size)."""
    import torch

    from ..inference.animator import _NoteOnce
    from ..inference.inputs import prepare_images
    from ..training.data.video_io import is_image_file, read_image, read_video_frames

    if ref in names:
        item = dataset[names[ref]]
        if not item["ok"] or item["video"].shape[0] == 0:
            raise ValueError(item.get("error") or f"{ref}: unreadable or empty video")
        return item["video"]
    path = Path(ref)
    if is_image_file(path):
        return prepare_images(read_image(path)[None], size=size, name=ref)
    note = _NoteOnce(None)

    def resize(frame):
        return prepare_images(frame, size=size, name=ref, note=note)[0].numpy()

    return torch.from_numpy(read_video_frames(path, max_frames=max_frames, transform=resize))


def _cross_identity_items(model, dataset, pairs, names: dict[str, int], args):
    from ..evaluation import EvalItem

    size = model.config.image_size
    for _, source_ref, driving_ref in pairs:
        loaded: dict[str, object] = {}

        def frames(key, source_ref=source_ref, driving_ref=driving_ref, loaded=loaded):
            if not loaded:  # each pair is read once, on first use
                loaded["source"] = _load_frames(source_ref, dataset, names, size, 1)[:1]
                loaded["driving"] = _load_frames(driving_ref, dataset, names, size, args.max_frames)
            return loaded[key]

        def generate(frames=frames):
            return _generated(model, frames("source"), frames("driving"), args)

        name = f"{Path(source_ref).stem}->{Path(driving_ref).stem}"
        yield EvalItem(name, generate, lambda frames=frames: frames("driving"),
                       lambda frames=frames: frames("source")[0])


def _load_model(args):
    from ..model import Model
    from .animate import _checkpoint

    device = device_option(args.device)
    return Model.from_pretrained(_checkpoint(args.checkpoint), device=device)


def _video_names(folder: Path) -> dict[str, int | tuple[str, ...]]:
    """The split's video names (with and without their suffix) -> dataset index, without decoding.

    A name without its suffix that two videos share (`a.mp4`, `a.mkv`) maps to their full names
    instead: a --pairs reference to it is ambiguous. A full name always means its own video."""
    from ..training.data.datasets import list_videos

    entries = [entry.name for entry in list_videos(folder)]
    by_stem: dict[str, list[int]] = {}
    for index, name in enumerate(entries):
        by_stem.setdefault(Path(name).stem, []).append(index)
    names: dict[str, int | tuple[str, ...]] = {
        stem: found[0] if len(found) == 1 else tuple(entries[i] for i in found) for stem, found in by_stem.items()}
    names.update((name, index) for index, name in enumerate(entries))
    return names


# ---- the command --------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    """Run the command (warnings are shown as one-line notes)."""
    with warnings_as_notes(PROG):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Check everything, evaluate, then write the JSON and CSV (nothing when no result)."""
    from ..assets import DEMO_MODEL_NOTE
    from ..evaluation import evaluate_sequences, format_summary
    from ..evaluation.report import write_csv, write_json
    from ..training.data.datasets import VideoSequenceDataset
    from .animate import _checkpoint

    if args.metrics is None:
        args.metrics = DEFAULT_METRICS[args.mode]
    if args.motion is None:
        args.motion = "absolute" if args.mode == "same-id" else "relative"
    _check_options(args)
    root = Path(args.data)
    pairs = _read_pairs(Path(args.pairs)) if args.mode == "cross-id" else []
    checkpoint = _checkpoint(args.checkpoint)
    names = _video_names(root / args.split)
    inputs = [root, checkpoint, *([Path(args.pairs)] if args.pairs else []), *_check_refs(pairs, names, args)]
    inputs += [Path(args.weights_dir)] if args.weights_dir else []
    json_path, csv_path = _check_outputs(Path(args.output), args.overwrite, inputs)
    if args.mode == "cross-id":
        compared = [m for m in _PIXEL_METRICS if m in args.metrics.split(",")]
        if compared:
            _note(f"cross-id: {', '.join(compared)} compare the output with the driving frames of another "
                  "person, not with a ground truth")

    model = _load_model(args)
    if args.checkpoint is None:
        _note(DEMO_MODEL_NOTE)
    dataset = VideoSequenceDataset(root, split=args.split, size=model.config.image_size, max_frames=args.max_frames)
    if args.mode == "same-id":
        items = _same_identity_items(model, dataset, args)
    else:
        items = _cross_identity_items(model, dataset, pairs, names, args)
    official = args.official_references
    results = evaluate_sequences(
        items, metrics=args.metrics, weights_dir=args.weights_dir,
        device=next(model.parameters()).device, batch_size=args.batch,
        fid_reference="source" if official else "ground_truth",
        identity_reference="source" if (official or args.mode == "cross-id") else "ground_truth",
        total=len(dataset) if args.mode == "same-id" else len(pairs),
    )
    failure = _nothing_evaluated(results)
    if failure:
        print(f"{PROG}: error: {failure}; no results written", file=sys.stderr)
        return 1
    results["settings"].update(mode=args.mode, motion=args.motion, adapt_scale=args.adapt_scale,
                               checkpoint=str(checkpoint), data=str(root), split=args.split,
                               max_frames=args.max_frames, pairs=args.pairs)
    print(format_summary(results))
    if results["failed"]:
        _note(f"{len(results['failed'])} of {len(results['failed']) + results['num_videos']} videos could not be "
              "evaluated and are left out of every mean (listed in the JSON under 'failed' and in the CSV)")
    write_json(json_path, results)
    write_csv(csv_path, results)
    print(f"results written to {json_path} and {csv_path}")
    return 0


def _nothing_evaluated(results: dict) -> str | None:
    """Why the run has no result at all, or None."""
    if not results["metrics"]:
        return "none of the requested metrics could be computed (see the 'skipped' lines above)"
    if results["num_videos"] == 0:
        failed = len(results["failed"])
        return f"nothing could be evaluated ({failed} of {failed} failed, see the 'skipping' lines above)"
    return None
