"""The CUDA backend without the compiled module: csrc/'s kernel headers compiled at run time
by NVRTC and launched through the CUDA driver API (both through ctypes).

`module()` returns an object with the same functions and arguments as `mcc_fast._cuda`, so
the wrappers in mcc_fast.cuda run unchanged on either. Used when the compiled module is
missing (installed without nvcc) or when MCC_FAST_CUDA_RUNTIME=nvrtc asks for it. Needs
libnvrtc (torch's CUDA wheels bring it: the nvidia-cuda-nvrtc wheel), libcuda (the driver),
cuda_fp16.h (a CUDA toolkit, NVIDIA's runtime wheel or Triton's copy) and a GPU. Each kernel
family compiles on its first launch (a few seconds), then comes from the disk cache (cache.py).
"""
from __future__ import annotations

import types

from . import dense_motion, driver, nvrtc, vq, warp
from .launch import cuda_include_dirs, source_dir

FAMILIES = {"vq": vq.FAMILY, "warp": warp.FAMILY, "dense_motion": dense_motion.FAMILY}


def unavailable_reason() -> str | None:
    """None when the run-time path can be used (a GPU is still needed to launch), else why not."""
    if not source_dir().is_dir():
        return f"the CUDA kernel sources are not installed ({source_dir()} is missing)"
    err = nvrtc.unavailable_reason() or driver.unavailable_reason()
    if err:
        return err
    if not cuda_include_dirs():
        return ("the CUDA headers (cuda_fp16.h, cuda_bf16.h, mma.h) were not found for NVRTC (install a "
                "CUDA toolkit and set CUDA_HOME, or pip install nvidia-cuda-runtime)")
    return None


def kernel_image_error() -> None:
    """The compiled module's probe (None: the kernels can run here); NVRTC compiles for the GPU in use."""
    return None


def module() -> types.SimpleNamespace:
    """An object with the compiled module's API (functions, SampleGeometry, constants)."""
    api = {"architectures": "nvrtc (compiled at run time for the device's architecture)",
           "runtime": "nvrtc", "SampleGeometry": warp.SampleGeometry,
           "dense_motion_block_pixels": dense_motion.dense_motion_block_pixels,
           "vq_max_segments": vq.MAX_SEGMENTS, "device_count": driver.device_count,
           "kernel_image_error": kernel_image_error}
    for mod, names in ((vq, ("vq_search_blocks", "vq_segsum_chunk_rows", "vq_search_forward", "vq_backward_rows",
                             "vq_codebook_grad_sorted")),
                       (warp, ("sample_forward", "sample_backward", "gather_input_grad", "resize_backward_axis")),
                       (dense_motion, ("keypoint_heatmaps_forward", "sparse_motions_forward",
                                       "dense_motion_input_forward", "dense_motion_input_backward",
                                       "compose_flow_forward", "compose_flow_backward"))):
        for name in names:
            api[name] = getattr(mod, name)
    return types.SimpleNamespace(**api)
