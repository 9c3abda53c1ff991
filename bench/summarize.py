"""Markdown table of ratios from a pytest-benchmark JSON (written by bench/gpu_check.sh).

    python bench/summarize.py bench-*.json [--environment environment-*.json]
"""
from __future__ import annotations

import argparse
import json


def rows(bench: dict) -> list[dict]:
    out = []
    for b in bench.get("benchmarks", []):
        info = b.get("extra_info", {})
        out.append({
            "group": b.get("group") or "",
            "name": b["name"],
            "median_ms": b["stats"]["median"] * 1e3,
            "reference_ms": info.get("reference_median_s", float("nan")) * 1e3,
            "ratio": info.get("ratio_vs_reference"),
            "gbps": info.get("GB/s"),
            "tflops": info.get("TFLOP/s"),
            "peak_mb": (info.get("peak_bytes") or 0) / 2**20,
            "ref_peak_mb": (info.get("reference_peak_bytes") or 0) / 2**20,
        })
    return out


def markdown(bench: dict, environment: dict | None = None) -> str:
    lines = []
    if environment:
        lines.append(f"Device: {environment.get('device')} (driver {environment.get('driver')}), torch "
                     f"{environment.get('torch')}, triton {environment.get('triton')}, {environment.get('date')}")
        lines.append("")
    lines.append("| benchmark | ours (ms) | reference (ms) | speed-up | GB/s | TFLOP/s | peak MB (ours / ref) |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows(bench):
        fmt = lambda v, spec: "" if v is None else format(v, spec)  # noqa: E731
        lines.append(f"| {r['group']} {r['name']} | {r['median_ms']:.3f} | {r['reference_ms']:.3f} | "
                     f"{fmt(r['ratio'], '.2f')}x | {fmt(r['gbps'], '.0f')} | {fmt(r['tflops'], '.1f')} | "
                     f"{r['peak_mb']:.1f} / {r['ref_peak_mb']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bench_json")
    parser.add_argument("--environment")
    args = parser.parse_args()
    bench = json.load(open(args.bench_json))
    env = json.load(open(args.environment)) if args.environment else None
    print(markdown(bench, env), end="")


if __name__ == "__main__":
    main()
