"""Every Triton kernel compiles for sm_86 (RTX 3090) and sm_90 (H100) without a GPU.

Fails when a kernel does not compile, when its shared memory exceeds the architecture's
per-block limit, or when ptxas reports register spills. The compile runs in a subprocess
because TRITON_INTERPRET=1 (set for the CPU test suite) replaces the compiler.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

SHARED_LIMIT = {86: 99 * 1024, 90: 227 * 1024}  # bytes per block (opt-in maximum)


@pytest.fixture(scope="module")
def compiled() -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("triton_compile_check.py")
    proc = subprocess.run([sys.executable, str(script), "86", "90"], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert rows, f"no Triton kernel specs found:\n{proc.stderr[-2000:]}"
    return rows


def test_every_kernel_module_declares_compile_specs(compiled):
    import pkgutil

    import mcc_fast.kernels as pkg

    modules = {m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")}
    covered = {row["module"] for row in compiled}
    assert modules <= covered, f"kernel modules without COMPILE_SPECS: {sorted(modules - covered)}"


def test_kernels_compile_fit_shared_memory_and_do_not_spill(compiled):
    problems = []
    for row in compiled:
        where = f"{row['module']}:{row['kernel']} sm_{row['arch']}"
        if "error" in row:
            problems.append(f"{where}: does not compile: {row['error'][-500:]}")
            continue
        if not row["ptxas_ok"]:
            problems.append(f"{where}: ptxas failed: {row['ptxas_log']}")
        if row["shared"] > SHARED_LIMIT[row["arch"]]:
            problems.append(f"{where}: {row['shared']} B shared memory > {SHARED_LIMIT[row['arch']]} B")
        if row["spill_bytes"]:
            problems.append(f"{where}: {row['spill_bytes']} B of register spills")
    assert not problems, "\n".join(problems)
