"""`mcc-fast info`: version, backends and why not, GPU, build flags."""
from __future__ import annotations

import argparse
import json
import platform


def collect() -> dict:
    """Everything `mcc-fast info` prints, as a dict."""
    import torch

    from .. import __version__, backends
    from ..cuda import extension_error, runtime_name

    info = {
        "mcc_fast": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "gpu": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else [],
        "backends": {name: {"available": s.available, "reason": s.reason} for name, s in backends().items()},
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    nvrtc_error = extension_error("nvrtc")
    info["cuda_runtime_compiler"] = {"available": nvrtc_error is None,
                                      "reason": nvrtc_error or "NVRTC, the driver and the headers load"}
    if extension_error() is None:
        from ..cuda import extension

        info["cuda_extension"] = {"runtime": runtime_name(), "architectures": extension().architectures}
    else:
        info["cuda_extension"] = None
    return info


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"mcc_fast {info['mcc_fast']}  python {info['python']}  torch {info['torch']} (CUDA {info['torch_cuda']})  triton {info['triton']}")
    print(f"GPU: {', '.join(info['gpu']) or 'none'}")
    ext = info["cuda_extension"]
    if ext is None:
        print("CUDA kernels: not loadable (see the cuda backend below)")
    elif ext["runtime"] == "nvrtc":
        print("CUDA kernels: compiled at run time by NVRTC (no usable compiled module: see the cuda backend below)")
    else:
        print(f"CUDA kernels: compiled module, built for {ext['architectures']}")
    nvrtc = info["cuda_runtime_compiler"]
    print(f"NVRTC fallback: {'yes' if nvrtc['available'] else 'no '}  {nvrtc['reason']}")
    for name, status in info["backends"].items():
        mark = "yes" if status["available"] else "no "
        print(f"  {name:<7} {mark}  {status['reason']}")
    return 0
