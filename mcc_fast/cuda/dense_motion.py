"""CUDA wrappers for the fused dense-motion kernels (csrc/dense_motion.cu).

Same signatures as the Triton launchers in kernels/{keypoint_heatmaps, sparse_motions,
dense_motion_input, compose_flow}.py: keypoints (B, K, 2) and jacobians (B, K, 2, 2) arrive
as contiguous float32 CUDA tensors (jacobians may be None); images and logits in
float32/float16/bfloat16 with any strides.
"""
from __future__ import annotations

import torch

from . import extension
from ._common import current_stream, dtype_code

MAX_LAUNCH_BATCH = 65535  # grid.z (grid.y for compose_flow) limit: larger batches run in chunks of this many


def _jac(kp_s, jac_s, jac_d, rows: slice) -> tuple[int, int, bool]:
    """(jac_source pointer, jac_driving pointer, has_jac) of batch rows `rows` (kp_s's when None)."""
    if jac_s is None:
        return kp_s[rows].data_ptr(), kp_s[rows].data_ptr(), False
    return jac_s[rows].data_ptr(), jac_d[rows].data_ptr(), True


def _batch_chunks(bs: int) -> list[slice]:
    """Slices of at most MAX_LAUNCH_BATCH batch rows covering range(bs) (one launch each)."""
    return [slice(s, min(s + MAX_LAUNCH_BATCH, bs)) for s in range(0, bs, MAX_LAUNCH_BATCH)]


def _num_blocks(ext, h: int, w: int) -> int:
    block = ext.dense_motion_block_pixels
    return (h * w + block - 1) // block


def keypoint_heatmaps(kp: torch.Tensor, h: int, w: int, variance: float, dtype: torch.dtype) -> torch.Tensor:
    """kp: contiguous float32 (B, K, 2). Returns contiguous (B, K, h, w) in `dtype`."""
    ext = extension(device=kp.device)
    bs, num_kp = kp.shape[:2]
    out = torch.empty(bs, num_kp, h, w, dtype=dtype, device=kp.device)
    with torch.cuda.device(kp.device):
        for b in _batch_chunks(bs):
            ext.keypoint_heatmaps_forward(kp[b].data_ptr(), b.stop - b.start, num_kp, h, w, float(variance),
                                          dtype_code(out, "out"), out[b].data_ptr(), current_stream(kp))
    return out


def sparse_motions(kp_s: torch.Tensor, kp_d: torch.Tensor, jac_s: torch.Tensor | None, jac_d: torch.Tensor | None,
                   h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
    """Returns contiguous (B, K+1, h, w, 2) in `dtype`: identity, then T_k(z)."""
    ext = extension(device=kp_s.device)
    bs, num_kp = kp_s.shape[:2]
    out = torch.empty(bs, num_kp + 1, h, w, 2, dtype=dtype, device=kp_s.device)
    with torch.cuda.device(kp_s.device):
        for b in _batch_chunks(bs):
            js, jd, has_jac = _jac(kp_s, jac_s, jac_d, b)
            ext.sparse_motions_forward(kp_s[b].data_ptr(), kp_d[b].data_ptr(), js, jd, has_jac, b.stop - b.start,
                                       num_kp, h, w, dtype_code(out, "out"), out[b].data_ptr(), current_stream(kp_s))
    return out


def dense_motion_input_forward(source: torch.Tensor, kp_s: torch.Tensor, kp_d: torch.Tensor,
                               jac_s: torch.Tensor | None, jac_d: torch.Tensor | None,
                               align_corners: bool, variance: float) -> torch.Tensor:
    """Returns contiguous (B, (K+1)*(C+1), H, W) in source's dtype."""
    ext = extension(device=source.device)
    bs, channels, h, w = source.shape
    num_kp = kp_s.shape[1]
    out = torch.empty(bs, (num_kp + 1) * (channels + 1), h, w, dtype=source.dtype, device=source.device)
    with torch.cuda.device(source.device):
        for b in _batch_chunks(bs):
            js, jd, has_jac = _jac(kp_s, jac_s, jac_d, b)
            ext.dense_motion_input_forward(
                source[b].data_ptr(), *source.stride(), b.stop - b.start, channels, h, w,
                dtype_code(source, "source"), kp_s[b].data_ptr(), kp_d[b].data_ptr(), js, jd, has_jac, num_kp,
                bool(align_corners), float(variance), out[b].data_ptr(), current_stream(source))
    return out


def dense_motion_input_backward(grad: torch.Tensor, source: torch.Tensor, kp_s: torch.Tensor, kp_d: torch.Tensor,
                                jac_s: torch.Tensor | None, jac_d: torch.Tensor | None, align_corners: bool,
                                variance: float, need_source_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """grad: contiguous, source's dtype. Returns (float32 source gradient or an empty tensor,
    float32 keypoint gradients (B, K, 12) = [kp_s, kp_d, J_s, J_d])."""
    ext = extension(device=grad.device)
    bs, channels, h, w = source.shape
    num_kp = kp_s.shape[1]
    nb = _num_blocks(ext, h, w)
    part = torch.empty(bs, num_kp, nb, 12, dtype=torch.float32, device=source.device)
    dsrc = (torch.zeros(bs, channels, h, w, dtype=torch.float32, device=source.device) if need_source_grad
            else torch.empty(0, dtype=torch.float32, device=source.device))
    with torch.cuda.device(source.device):
        for b in _batch_chunks(bs):
            js, jd, has_jac = _jac(kp_s, jac_s, jac_d, b)
            ext.dense_motion_input_backward(
                grad[b].data_ptr(), source[b].data_ptr(), *source.stride(), b.stop - b.start, channels, h, w,
                dtype_code(source, "source"), kp_s[b].data_ptr(), kp_d[b].data_ptr(), js, jd, has_jac, num_kp,
                bool(align_corners), float(variance), dsrc[b].data_ptr() if need_source_grad else 0,
                part[b].data_ptr(), nb, current_stream(source))
    return dsrc, part.sum(dim=2)


def compose_flow_forward(logits: torch.Tensor, kp_s: torch.Tensor, kp_d: torch.Tensor,
                         jac_s: torch.Tensor | None, jac_d: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (flow float32 (B, H, W, 2), softmax statistics float32 (B, H, W, 2): max logit and
    sum of exp(logit - max)), contiguous."""
    ext = extension(device=logits.device)
    bs, groups, h, w = logits.shape
    flow = torch.empty(bs, h, w, 2, dtype=torch.float32, device=logits.device)
    stats = torch.empty(bs, h, w, 2, dtype=torch.float32, device=logits.device)
    with torch.cuda.device(logits.device):
        for b in _batch_chunks(bs):
            js, jd, has_jac = _jac(kp_s, jac_s, jac_d, b)
            ext.compose_flow_forward(
                logits[b].data_ptr(), *logits.stride(), b.stop - b.start, groups, h, w,
                dtype_code(logits, "mask_logits"), kp_s[b].data_ptr(), kp_d[b].data_ptr(), js, jd, has_jac,
                flow[b].data_ptr(), stats[b].data_ptr(), current_stream(logits))
    return flow, stats


def compose_flow_backward(grad: torch.Tensor, logits: torch.Tensor, flow: torch.Tensor, stats: torch.Tensor,
                          kp_s: torch.Tensor, kp_d: torch.Tensor, jac_s: torch.Tensor | None,
                          jac_d: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """grad, flow: contiguous float32 (B, H, W, 2); stats: the forward's. Returns (logit gradient like `logits`,
    float32 keypoint gradients (B, K, 12))."""
    ext = extension(device=grad.device)
    bs, groups, h, w = logits.shape
    nb = _num_blocks(ext, h, w)
    dlogits = torch.empty_like(logits)
    part = torch.empty(bs, groups - 1, nb, 12, dtype=torch.float32, device=logits.device)
    with torch.cuda.device(logits.device):
        for b in _batch_chunks(bs):
            js, jd, has_jac = _jac(kp_s, jac_s, jac_d, b)
            ext.compose_flow_backward(
                grad[b].data_ptr(), logits[b].data_ptr(), *logits.stride(), dlogits[b].data_ptr(),
                *dlogits.stride(), b.stop - b.start, groups, h, w, dtype_code(logits, "mask_logits"),
                flow[b].data_ptr(), stats[b].data_ptr(), kp_s[b].data_ptr(), kp_d[b].data_ptr(), js, jd, has_jac,
                part[b].data_ptr(), nb, current_stream(logits))
    return dlogits, part.sum(dim=2)
