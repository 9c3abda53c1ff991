"""Compile every Triton kernel's COMPILE_SPECS for given GPU architectures, without a GPU.

Run as a script (outside TRITON_INTERPRET): prints one JSON object per (kernel, arch) with
shared memory, registers and spill bytes as reported by ptxas. Used by
tests/test_triton_compile.py; also handy by hand: `python tests/triton_compile_check.py 86 90`.
"""
from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
import tempfile


def iter_specs():
    import mcc_fast.kernels as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"mcc_fast.kernels.{info.name}")
        for spec in getattr(module, "COMPILE_SPECS", []):
            yield info.name, spec


def compile_one(spec: dict, arch: int) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = dict(spec["signature"])
    constexprs = dict(spec.get("constexprs", {}))
    for name in constexprs:
        signature[name] = "constexpr"
    src = ASTSource(fn=spec["fn"], signature=signature, constexprs=constexprs)
    options = {k: spec[k] for k in ("num_warps", "num_stages") if k in spec}
    kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as tmp:
        ptx = os.path.join(tmp, "k.ptx")
        with open(ptx, "w") as f:
            f.write(kernel.asm["ptx"])
        proc = subprocess.run([ptxas, "-v", f"--gpu-name=sm_{arch}{'a' if arch >= 90 else ''}", ptx,
                               "-o", os.path.join(tmp, "k.cubin")], capture_output=True, text=True)
    log = proc.stderr + proc.stdout
    spill_store = sum(int(m) for m in re.findall(r"(\d+) bytes spill stores", log))
    spill_load = sum(int(m) for m in re.findall(r"(\d+) bytes spill loads", log))
    regs = [int(m) for m in re.findall(r"Used (\d+) registers", log)]
    return {
        "shared": int(kernel.metadata.shared),
        "registers": max(regs) if regs else None,
        "spill_bytes": spill_store + spill_load,
        "ptxas_ok": proc.returncode == 0,
        "ptxas_log": log[-400:] if proc.returncode else "",
    }


def main(argv: list[str]) -> int:
    archs = [int(a) for a in argv] or [86, 90]
    for module, spec in iter_specs():
        for arch in archs:
            row = {"module": module, "kernel": spec.get("name", spec["fn"].__name__), "arch": arch}
            try:
                row.update(compile_one(spec, arch))
            except Exception as exc:  # report, the test fails on it
                row["error"] = f"{type(exc).__name__}: {exc}"[-2000:]
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.pop("TRITON_INTERPRET", None)
    sys.exit(main(sys.argv[1:]))
