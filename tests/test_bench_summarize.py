"""bench/summarize.py: the results table of a GPU run (ratios, targets, partial or empty files)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "summarize.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_summarize", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench(name, median, reference, target=None, **extra):
    info = {"reference_median_s": reference, "ratio_vs_reference": reference / median, **extra}
    if target is not None:
        info.update(target_ratio=target, target_met=reference / median >= target)
    return {"group": "g", "name": name, "stats": {"median": median}, "extra_info": info}


def test_table_ratios_targets_and_missing_fields():
    summarize = _module()
    data = {"benchmarks": [_bench("fast", 0.002, 0.006, target=2.0), _bench("slow", 0.004, 0.006, target=2.0),
                           {"name": "cut", "stats": {"median": None}, "extra_info": {"GB/s": None}}]}
    text = summarize.markdown(data)
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| g")}
    assert "| 2.000 | 6.000 | 3x | >= 2x met |" in lines["g: fast"]
    assert "| 1.5x | >= 2x NOT met |" in lines["g: slow"]
    assert "Targets met: 1 of 2." in text
    assert "cut" in text  # a benchmark without numbers is listed, not a crash


def test_several_files_empty_and_unreadable(tmp_path):
    good = tmp_path / "a.json"
    good.write_text(json.dumps({"benchmarks": [_bench("x", 0.001, 0.003)]}))
    empty = tmp_path / "empty.json"
    empty.write_text("")
    none = tmp_path / "none.json"
    none.write_text(json.dumps({"benchmarks": []}))
    proc = subprocess.run([sys.executable, str(SCRIPT), str(good), str(empty), str(tmp_path / "missing.json"),
                           "--environment", str(tmp_path / "no-env.json")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "| g: x | 1.000 | 3.000 | 3x |" in proc.stdout
    assert "skipping" in proc.stderr and "empty.json" in proc.stderr and "missing.json" in proc.stderr
    proc = subprocess.run([sys.executable, str(SCRIPT), str(none)], capture_output=True, text=True)
    assert proc.returncode == 0 and "No benchmark results" in proc.stdout
