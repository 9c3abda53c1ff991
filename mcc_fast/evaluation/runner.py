"""The evaluation runner: metrics over (name, generated, ground truth) video sequences.

:func:`evaluate_sequences` takes any iterable of videos, so ``mcc-fast evaluate`` only
has to feed it what the model generates. Each item is an :class:`EvalItem` or a tuple
``(name, generated, ground_truth)`` / ``(name, generated, ground_truth, source)``:

- ``generated``, ``ground_truth``: F frames, any form
  :func:`mcc_fast.evaluation.frames.as_uint8_frames` accepts (float [-1, 1] or uint8,
  tensors (F, 3, H, W) or numpy (F, H, W, 3)), or a zero-argument callable returning
  them (loaded lazily). ``source``: the source image (3, H, W) / (1, 3, H, W), needed
  only for ``fid_reference="source"`` or ``identity_reference="source"``.
- An unreadable entry (``None``, zero frames, a callable raising OSError / ValueError /
  RuntimeError, e.g. ``VideoReadError``, mismatched shapes, or an :class:`EvalItem` with
  an ``error`` message) is reported on one line, listed under ``failed`` and skipped; the
  run goes on.

Float frames are quantised to 8 bits first (the official protocol evaluates the PNGs it
wrote). Frames are processed ``batch_size`` at a time on ``device``. Per-video values are
means over that video's frames; ``mean`` holds the dataset values, pooled over all frames
of all videos (as the official code averages over frames), and FID over all frames.
Frames where a face network finds nothing (NaN) are left out of that metric; the counts
are in ``frames_used``.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from tqdm import tqdm

from . import adapters as adapters_mod
from .fid import FeatureExtractor, GaussianStats, frechet_distance, load_inception_pool3
from .frames import as_uint8_frames
from .lpips import load_lpips_vgg
from .pixel import l1_per_frame, psnr_per_frame
from .report import write_csv, write_json
from .weights import MissingWeightsError, describe_weight_file, find_weight_file

__all__ = ["METRICS", "EvalItem", "evaluate_sequences", "format_summary"]

#: Every metric the runner knows, in report order.
METRICS = ("l1", "psnr", "lpips", "fid", "akd", "aed", "csim", "ard")
_REFERENCES = ("ground_truth", "source")


@dataclass
class EvalItem:
    """One video to evaluate (see the module docstring for the accepted frame forms);
    ``error``: why it cannot be evaluated (it is then listed under ``failed``)."""

    name: str
    generated: Any
    ground_truth: Any
    source: Any = None
    error: str | None = None


class _VideoError(Exception):
    """This video cannot be evaluated; the message says why."""


def _parse_metrics(metrics) -> list[str]:
    names = [m.strip() for m in metrics.split(",")] if isinstance(metrics, str) else list(metrics)
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise ValueError(f"metrics must be a non-empty list of {', '.join(METRICS)}; got {names!r}")
    return [m for m in METRICS if m in names]


def _as_item(entry) -> EvalItem:
    if isinstance(entry, EvalItem):
        return entry
    if isinstance(entry, (tuple, list)) and len(entry) in (3, 4):
        return EvalItem(str(entry[0]), *entry[1:])
    raise TypeError(
        "pairs_iter must yield EvalItem or (name, generated, ground_truth[, source]) tuples, "
        f"got {type(entry).__name__}"
    )


def _resolve(frames, what: str) -> torch.Tensor:
    if callable(frames):
        try:
            frames = frames()
        except Exception as exc:  # a user's loader: any failure skips this video (logged, listed)
            raise _VideoError(f"{what} unreadable: {type(exc).__name__}: {exc}") from exc
    if frames is None:
        raise _VideoError(f"{what} unreadable (no frames)")
    try:
        uint8 = as_uint8_frames(frames, what)
    except (TypeError, ValueError) as exc:
        raise _VideoError(str(exc)) from exc
    if uint8.shape[0] == 0:
        raise _VideoError(f"{what} has no frames")
    return uint8


def _weight_paths(weights_dir, *keys: str) -> list[Path]:
    """One file per key; a single MissingWeightsError naming every missing one."""
    paths, missing = [], []
    for key in keys:
        try:
            paths.append(find_weight_file(weights_dir, key)[1])
        except MissingWeightsError:
            missing.append(describe_weight_file(weights_dir, key))
    if missing:
        raise MissingWeightsError("needs " + " and ".join(missing))
    return paths


class _Backends:
    """The metric networks, loaded once; metrics whose weights are missing are skipped."""

    def __init__(self, metrics: list[str], weights_dir, device: torch.device, overrides: dict, log: Callable[[str], None]):
        self.skipped: dict[str, str] = {}
        self.lpips = self.fid = self.landmarks = self.identity = self.head_pose = None
        wanted = set(metrics)
        if "lpips" in wanted:
            self.lpips = self._load(["lpips"], log, overrides.get("lpips"),
                                    lambda: load_lpips_vgg(*_weight_paths(weights_dir, "vgg16", "lpips_vgg"), device))
        if "fid" in wanted:
            self.fid = self._load(["fid"], log, overrides.get("fid"), lambda: load_inception_pool3(
                find_weight_file(weights_dir, "inception")[1], device))
        if "akd" in wanted:
            self.landmarks = self._load(["akd"], log, overrides.get("landmarks"),
                                        lambda: adapters_mod.load_landmark_detector(weights_dir, device))
        identity_metrics = [m for m in ("aed", "csim") if m in wanted]
        if identity_metrics:
            self.identity = self._load(identity_metrics, log, overrides.get("identity"),
                                       lambda: adapters_mod.load_identity_embedder(weights_dir, device))
        if "ard" in wanted:
            self.head_pose = self._load(["ard"], log, overrides.get("head_pose"),
                                        lambda: adapters_mod.load_head_pose_estimator(weights_dir, device))
        self.active = [m for m in metrics if m not in self.skipped]

    def _load(self, names: list[str], log, given, loader):
        if given is not None:
            return given
        try:
            return loader()
        except MissingWeightsError as exc:
            for name in names:
                self.skipped[name] = str(exc)
            log(f"evaluate: {', '.join(names)} skipped: {exc}")
            return None


class _Accumulator:
    """Per-metric pooled sums over all frames of all videos (NaN frames left out)."""

    def __init__(self, metrics: list[str]):
        self.sums = {m: 0.0 for m in metrics}
        self.counts = {m: 0 for m in metrics}
        self.infinite = {m: 0 for m in metrics}
        self.finite_sums = {m: 0.0 for m in metrics}

    def add(self, metric: str, per_frame: np.ndarray) -> tuple[float | None, int]:
        """Pool one video's per-frame values; returns (its mean or None, frames used)."""
        valid = per_frame[~np.isnan(per_frame)]
        if valid.size == 0:
            return None, 0
        finite = valid[np.isfinite(valid)]
        self.sums[metric] += float(valid.sum())
        self.counts[metric] += int(valid.size)
        self.infinite[metric] += int(valid.size - finite.size)
        self.finite_sums[metric] += float(finite.sum())
        return float(valid.mean()), int(valid.size)

    def mean(self, metric: str) -> float | None:
        return self.sums[metric] / self.counts[metric] if self.counts[metric] else None


def _numpy(values: torch.Tensor) -> np.ndarray:
    return values.detach().to("cpu", torch.float64).numpy()


def _evaluate_video(item: EvalItem, backends: _Backends, settings: dict, device: torch.device, batch_size: int,
                    fid_real: GaussianStats, fid_fake: GaussianStats) -> tuple[int, dict[str, np.ndarray]]:
    if item.error:
        raise _VideoError(item.error)
    generated = _resolve(item.generated, "generated")
    truth = _resolve(item.ground_truth, "ground_truth")
    if generated.shape != truth.shape:
        raise _VideoError(f"generated {tuple(generated.shape)} and ground_truth {tuple(truth.shape)} differ in shape")
    active = backends.active
    needs_source = (("fid" in active and settings["fid_reference"] == "source")
                    or (settings["identity_reference"] == "source" and {"aed", "csim"} & set(active)))
    source = None
    if needs_source:
        if item.source is None:
            raise _VideoError("no source image, needed for fid_reference/identity_reference='source'")
        source = _resolve(item.source, "source")
        if source.shape[0] != 1 or source.shape[1:] != truth.shape[1:]:
            raise _VideoError(f"source must be one image of the frames' size {tuple(truth.shape[1:])}, got {tuple(source.shape)}")
        source = source.to(device)

    num_frames = generated.shape[0]
    per_frame: dict[str, list[np.ndarray]] = {m: [] for m in active if m != "fid"}
    source_embedding = None
    if source is not None and settings["identity_reference"] == "source" and backends.identity is not None:
        source_embedding = backends.identity.embed(source)
    fake_features, real_features = [], []
    for start in range(0, num_frames, batch_size):
        gen = generated[start:start + batch_size].to(device, non_blocking=True)
        ref = truth[start:start + batch_size].to(device, non_blocking=True)
        if "l1" in per_frame:
            per_frame["l1"].append(_numpy(l1_per_frame(gen, ref)))
        if "psnr" in per_frame:
            per_frame["psnr"].append(_numpy(psnr_per_frame(gen, ref)))
        if "lpips" in per_frame:
            with torch.inference_mode():
                per_frame["lpips"].append(_numpy(backends.lpips(gen, ref)))
        if "fid" in active:
            with torch.inference_mode():
                fake_features.append(_numpy(backends.fid(gen)))
                if settings["fid_reference"] == "ground_truth":
                    real_features.append(_numpy(backends.fid(ref)))
        if "akd" in per_frame:
            per_frame["akd"].append(adapters_mod.akd_per_frame(
                backends.landmarks.detect(gen), backends.landmarks.detect(ref), settings["akd_norm"]))
        if {"aed", "csim"} & per_frame.keys():
            emb_gen = backends.identity.embed(gen)
            emb_ref = source_embedding if source_embedding is not None else backends.identity.embed(ref)
            if "aed" in per_frame:
                per_frame["aed"].append(adapters_mod.aed_per_frame(emb_gen, emb_ref, settings["aed_distance"]))
            if "csim" in per_frame:
                per_frame["csim"].append(adapters_mod.csim_per_frame(emb_gen, emb_ref))
        if "ard" in per_frame:
            per_frame["ard"].append(adapters_mod.ard_per_frame(
                backends.head_pose.estimate(gen), backends.head_pose.estimate(ref)))
    if "fid" in active:  # only a fully evaluated video enters the FID statistics
        for features in fake_features:
            fid_fake.update(features)
        for features in real_features:
            fid_real.update(features)
        if settings["fid_reference"] == "source":
            with torch.inference_mode():
                fid_real.update(_numpy(backends.fid(source)), weight=num_frames)
    return num_frames, {m: np.concatenate(v) for m, v in per_frame.items()}


def _infinite_value_warnings(totals: _Accumulator) -> list[str]:
    """A line per metric whose pooled mean is infinite (PSNR of frames identical to the ground truth)."""
    lines = []
    for metric, infinite in totals.infinite.items():
        if infinite:
            finite = totals.counts[metric] - infinite
            finite_mean = f"{totals.finite_sums[metric] / finite:.4f}" if finite else "n/a"
            lines.append(f"{metric}: {infinite} of {totals.counts[metric]} frames are identical to their reference "
                         f"({metric} inf), so the mean is inf; the mean of the other {finite} frames is {finite_mean}")
    return lines


def _few_fid_samples_warnings(fake: GaussianStats, real: GaussianStats, fid_reference: str) -> list[str]:
    """A line when either FID set has fewer distinct samples than feature dimensions (a rank-deficient
    covariance: the value is biased upwards and not comparable with FIDs from larger sets)."""
    real_what = "source images" if fid_reference == "source" else "ground-truth frames"
    counts = {"generated frames": fake.rows, real_what: real.rows}
    small = {what: n for what, n in counts.items() if n < fake.dim}
    if not small:
        return []
    listed = " and ".join(f"{n} {what}" for what, n in small.items())
    return [f"fid from {listed}, fewer than its {fake.dim} feature dimensions: the covariance is rank-deficient, the "
            "value is biased upwards and only comparable with FIDs of sets of the same size"]


def _default_log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def evaluate_sequences(
    pairs_iter: Iterable,
    metrics: Iterable[str] | str = METRICS,
    weights_dir: str | Path | None = None,
    *,
    output: str | Path | None = None,
    csv_output: str | Path | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 16,
    fid_reference: str = "ground_truth",
    identity_reference: str = "ground_truth",
    akd_norm: str = "l1",
    aed_distance: str = "squared_l2",
    lpips_model: torch.nn.Module | None = None,
    fid_extractor: FeatureExtractor | None = None,
    landmark_detector: adapters_mod.LandmarkDetector | None = None,
    identity_embedder: adapters_mod.IdentityEmbedder | None = None,
    head_pose_estimator: adapters_mod.HeadPoseEstimator | None = None,
    progress: bool = True,
    total: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Evaluate generated videos against their ground truth; returns the results dict.

    ``metrics``: names from :data:`METRICS` (a list or "l1,psnr,..."). Networks load
    from ``weights_dir`` (see :data:`mcc_fast.evaluation.weights.WEIGHT_FILES`) unless
    given directly (``lpips_model``, ``fid_extractor``, ``*_detector/embedder/estimator``);
    a metric whose weights are missing is skipped with one line naming the file (when every
    metric is skipped, no item is read or generated and the results list no video).
    ``fid_reference``: real set for FID, "ground_truth" frames or "source" images (the
    official code's choice, one copy per frame). ``identity_reference``: AED/CSIM against
    the "ground_truth" frame (same-identity) or the "source" image (cross-identity, as the
    official code). ``akd_norm``, ``aed_distance``: see :mod:`mcc_fast.evaluation.adapters`.
    ``output``: JSON path (and a CSV next to it, ``csv_output`` or the same name with
    ``.csv``), both written atomically. ``device``: default CUDA when available.

    Returns ``{"metrics", "mean", "frames_used", "videos": [{"name", "num_frames",
    <metric>: value, "frames_used": {<metric>: n}}], "failed": [{"name", "error"}],
    "skipped_metrics", "infinite_frames", "warnings", "num_videos", "num_frames", "settings"}``;
    values are floats or None. PSNR is ``inf`` for a frame identical to its ground truth, and so
    is any mean over it: ``infinite_frames`` counts them per metric and ``warnings`` (also
    logged) gives the mean of the other frames. ``warnings`` also says when FID comes from
    fewer samples than its feature dimensions (2048 for Inception pool3).
    """
    names = _parse_metrics(metrics)
    for arg, value in (("fid_reference", fid_reference), ("identity_reference", identity_reference)):
        if value not in _REFERENCES:
            raise ValueError(f"{arg} must be one of {_REFERENCES}, got {value!r}")
    if akd_norm not in ("l1", "l2"):
        raise ValueError(f"akd_norm must be 'l1' or 'l2', got {akd_norm!r}")
    if aed_distance not in ("squared_l2", "l2", "mean_abs"):
        raise ValueError(f"aed_distance must be 'squared_l2', 'l2' or 'mean_abs', got {aed_distance!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device is {str(device)!r} but torch sees no CUDA GPU here")
    if weights_dir is not None and not Path(weights_dir).is_dir():
        raise FileNotFoundError(f"weights_dir {str(weights_dir)!r} is not a folder")
    log = log or _default_log
    settings = {"fid_reference": fid_reference, "identity_reference": identity_reference,
                "akd_norm": akd_norm, "aed_distance": aed_distance}
    overrides = {"lpips": lpips_model, "fid": fid_extractor, "landmarks": landmark_detector,
                 "identity": identity_embedder, "head_pose": head_pose_estimator}
    backends = _Backends(names, weights_dir, device, overrides, log)
    if not backends.active:  # every metric skipped: generating the videos would compute nothing
        pairs_iter, total = (), 0

    totals = _Accumulator(backends.active)
    fid_real, fid_fake = GaussianStats(), GaussianStats()
    videos, failed, num_frames = [], [], 0
    if total is None and hasattr(pairs_iter, "__len__"):
        total = len(pairs_iter)  # type: ignore[arg-type]
    bar = tqdm(pairs_iter, total=total, unit="video", disable=not progress, file=sys.stderr, desc="evaluate")
    for entry in bar:
        item = _as_item(entry)
        try:
            count, per_frame = _evaluate_video(item, backends, settings, device, batch_size, fid_real, fid_fake)
        except _VideoError as exc:
            failed.append({"name": item.name, "error": str(exc)})
            log(f"evaluate: skipping video {item.name!r}: {exc}")
            continue
        row: dict[str, Any] = {"name": item.name, "num_frames": count}
        used = {}
        for metric in backends.active:
            if metric != "fid":
                row[metric], used[metric] = totals.add(metric, per_frame[metric])
        row["frames_used"] = used
        videos.append(row)
        num_frames += count
        shown = {m: totals.mean(m) for m in ("l1", "psnr") if m in totals.sums and totals.mean(m) is not None}
        bar.set_postfix({m: f"{v:.4g}" for m, v in shown.items()}, refresh=False)
    bar.close()

    mean: dict[str, float | None] = {m: totals.mean(m) for m in backends.active if m != "fid"}
    frames_used = {m: totals.counts[m] for m in backends.active if m != "fid"}
    warnings = _infinite_value_warnings(totals)
    if "fid" in backends.active:
        if fid_fake.count >= 2 and fid_real.count >= 2:
            mean["fid"] = frechet_distance(fid_fake.mean(), fid_fake.covariance(), fid_real.mean(), fid_real.covariance())
            warnings += _few_fid_samples_warnings(fid_fake, fid_real, fid_reference)
        else:
            mean["fid"] = None
            warnings.append("fid not computed: it needs at least 2 frames in each set")
        frames_used["fid"] = int(fid_fake.count)
    for warning in warnings:
        log(f"evaluate: {warning}")
    results = {
        "metrics": list(backends.active),
        "mean": {m: mean[m] for m in backends.active},
        "frames_used": {m: frames_used[m] for m in backends.active},
        "videos": videos,
        "failed": failed,
        "skipped_metrics": dict(backends.skipped),
        "infinite_frames": {m: totals.infinite[m] for m in backends.active if m != "fid" and totals.infinite[m]},
        "warnings": warnings,
        "num_videos": len(videos),
        "num_frames": num_frames,
        "settings": {**settings, "device": str(device), "batch_size": batch_size,
                     "weights_dir": None if weights_dir is None else str(weights_dir)},
    }
    if output is not None:
        write_json(output, results)
        write_csv(csv_output if csv_output is not None else Path(output).with_suffix(".csv"), results)
    elif csv_output is not None:
        write_csv(csv_output, results)
    return results


def format_summary(results: dict) -> str:
    """One line per dataset metric, e.g. ``psnr  25.3012`` (for the CLI to print)."""
    lines = []
    for metric in results["metrics"]:
        value = results["mean"].get(metric)
        text = "n/a" if value is None else (str(value) if isinstance(value, float) and not math.isfinite(value) else f"{value:.4f}")
        lines.append(f"{metric:<6} {text}")
    return "\n".join(lines)
