"""Public ops. Each takes `backend=None | "torch" | "triton" | "cuda"` (see mcc_fast.backends())."""
from .dense_motion import compose_flow, dense_motion_input, keypoint_heatmaps, sparse_motions
from .group_norm import group_norm_swish
from .vq import Quantized, VQStats, nearest_code, quantize, quantize_multiscale
from .warp import grid_sample, warp, warp_many

__all__ = ["compose_flow", "dense_motion_input", "keypoint_heatmaps", "sparse_motions", "nearest_code", "quantize", "quantize_multiscale", "Quantized", "VQStats", "grid_sample", "warp", "warp_many", "group_norm_swish"]
