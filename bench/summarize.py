"""Markdown table of ratios from pytest-benchmark JSON files (written by bench/gpu_check.sh).

    python bench/summarize.py bench-*.json [--environment environment-*.json]

speed-up = reference time / our time (> 1: ours is faster); target: the issue's ratio where the
benchmark records one (met / NOT met). A missing or unreadable file is named and skipped.
"""
from __future__ import annotations

import argparse
import json
import math
import sys


def _num(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def rows(bench: dict) -> list[dict]:
    out = []
    for b in bench.get("benchmarks") or []:
        info = b.get("extra_info") or {}
        stats = b.get("stats") or {}
        median = _num(info.get("median_s"))  # the time the ratio is computed from
        if median is None:
            median = _num(stats.get("median"))
        ref = _num(info.get("reference_median_s"))
        peak, ref_peak = _num(info.get("peak_bytes")), _num(info.get("reference_peak_bytes"))
        out.append({
            "group": b.get("group") or "",
            "name": b.get("name", "?"),
            "median_ms": None if median is None else median * 1e3,
            "reference_ms": None if ref is None else ref * 1e3,
            "ratio": _num(info.get("ratio_vs_reference")),
            "target": _num(info.get("target_ratio")),
            "target_met": info.get("target_met"),
            "gbps": _num(info.get("GB/s")),
            "tflops": _num(info.get("TFLOP/s")),
            "copy_fraction": _num(info.get("fraction_of_copy_bandwidth")),
            "peak_mb": None if peak is None else peak / 2**20,
            "ref_peak_mb": None if ref_peak is None else ref_peak / 2**20,
        })
    return out


def _fmt(value, spec: str, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return format(value, spec) + suffix


def markdown(bench: dict, environment: dict | None = None) -> str:
    lines = []
    if environment:
        lines.append(f"Device: {environment.get('device')} (driver {environment.get('driver')}), torch "
                     f"{environment.get('torch')}, triton {environment.get('triton')}, {environment.get('date')}")
        lines.append("")
    table = rows(bench)
    if not table:
        return "\n".join(lines + ["No benchmark results (the run was cut before any finished, or none ran)."]) + "\n"
    lines.append("| benchmark | ours (ms) | reference (ms) | speed-up | target | GB/s | of copy BW | TFLOP/s "
                 "| peak MB (ours / ref) |")
    lines.append("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for r in table:
        target = ""
        if r["target"] is not None:
            target = f">= {r['target']:g}x {'met' if r['target_met'] else 'NOT met'}"
        peak = "" if r["peak_mb"] is None and r["ref_peak_mb"] is None else \
            f"{_fmt(r['peak_mb'], '.1f')} / {_fmt(r['ref_peak_mb'], '.1f')}"
        lines.append(f"| {r['group']}: {r['name']} | {_fmt(r['median_ms'], '.3f')} | {_fmt(r['reference_ms'], '.3f')} | "
                     f"{_fmt(r['ratio'], '.3g', 'x')} | {target} | {_fmt(r['gbps'], '.0f')} | "
                     f"{_fmt(r['copy_fraction'], '.0%')} | {_fmt(r['tflops'], '.1f')} | {peak} |")
    met = [r for r in table if r["target"] is not None]
    if met:
        lines.append("")
        lines.append(f"Targets met: {sum(bool(r['target_met']) for r in met)} of {len(met)}.")
    return "\n".join(lines) + "\n"


def load(paths: list[str]) -> dict:
    """The benchmarks of every readable file, in order (unreadable ones are named on stderr)."""
    merged: dict = {"benchmarks": []}
    for path in paths:
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            print(f"summarize.py: skipping {path}: {exc}", file=sys.stderr)
            continue
        merged["benchmarks"].extend(data.get("benchmarks") or [])
        merged.setdefault("machine_info", data.get("machine_info"))
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bench_json", nargs="+")
    parser.add_argument("--environment")
    args = parser.parse_args()
    env = None
    if args.environment:
        try:
            with open(args.environment) as f:
                env = json.load(f)
        except (OSError, ValueError) as exc:
            print(f"summarize.py: no environment ({exc})", file=sys.stderr)
    print(markdown(load(args.bench_json), env), end="")


if __name__ == "__main__":
    main()
