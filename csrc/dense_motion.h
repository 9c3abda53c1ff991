// Fused dense motion (FOMM-style deformable flow composition): launchers.
//
// Keypoint parameters are contiguous float32 device arrays: kp (B, K, 2), jac (B, K, 2, 2)
// (jac pointers are ignored when has_jac is false). Per keypoint the sparse motion is
// T(z) = A (z - kp_d) + kp_s with A = J_s inverse_2x2(J_d), the inverse in closed form
// (adjugate / det, fp32): a singular J_d gives inf/nan, never an error. Group 0 of every
// (K+1)-group output is the background (identity motion, zero heatmap). The coordinate grid
// is x = 2 * (i / (W - 1)) - 1 over the width, y likewise. All arithmetic is fp32.
// `dtype` codes: csrc/common.h DType (float32 / float16 / bfloat16).
#pragma once
#include <cstdint>

namespace mcc {

// Pixels per CUDA block of the dense-motion kernels (the backward's partial-gradient
// buffers hold ceil(H * W / dense_motion_block_pixels()) blocks per keypoint).
int dense_motion_block_pixels();

// out (B, K, H, W) contiguous, element type out_dtype: exp(-0.5 |z - kp|^2 / variance).
void keypoint_heatmaps_forward(std::intptr_t kp, std::int64_t batch, std::int64_t num_kp, std::int64_t height,
                               std::int64_t width, double variance, int out_dtype, std::intptr_t out,
                               std::intptr_t stream);

// out (B, K+1, H, W, 2) contiguous, element type out_dtype: identity, then T_k(z).
void sparse_motions_forward(std::intptr_t kp_source, std::intptr_t kp_driving, std::intptr_t jac_source,
                            std::intptr_t jac_driving, bool has_jac, std::int64_t batch, std::int64_t num_kp,
                            std::int64_t height, std::int64_t width, int out_dtype, std::intptr_t out,
                            std::intptr_t stream);

// source (B, C, H, W) with element strides, element type dtype. out (B, (K+1)*(C+1), H, W)
// contiguous, same dtype: per group [G(kp_d) - G(kp_s), source bilinearly sampled at T_g(z)
// with zeros padding] (grid_sample semantics; NaN where T_g(z) is not finite).
void dense_motion_input_forward(std::intptr_t source, std::int64_t stride_b, std::int64_t stride_c,
                                std::int64_t stride_h, std::int64_t stride_w, std::int64_t batch,
                                std::int64_t channels, std::int64_t height, std::int64_t width, int dtype,
                                std::intptr_t kp_source, std::intptr_t kp_driving, std::intptr_t jac_source,
                                std::intptr_t jac_driving, bool has_jac, std::int64_t num_kp, bool align_corners,
                                double variance, std::intptr_t out, std::intptr_t stream);

// grad: contiguous (B, (K+1)*(C+1), H, W), element type dtype. source_grad: 0, or a zeroed
// contiguous float32 (B, C, H, W) accumulated with atomics. partial: float32
// (B, K, num_blocks, 12) = per-block gradients [kp_s(2), kp_d(2), J_s(4), J_d(4)].
void dense_motion_input_backward(std::intptr_t grad, std::intptr_t source, std::int64_t stride_b,
                                 std::int64_t stride_c, std::int64_t stride_h, std::int64_t stride_w,
                                 std::int64_t batch, std::int64_t channels, std::int64_t height, std::int64_t width,
                                 int dtype, std::intptr_t kp_source, std::intptr_t kp_driving,
                                 std::intptr_t jac_source, std::intptr_t jac_driving, bool has_jac,
                                 std::int64_t num_kp, bool align_corners, double variance, std::intptr_t source_grad,
                                 std::intptr_t partial, std::int64_t num_blocks, std::intptr_t stream);

// logits (B, K+1, H, W) with element strides, element type dtype. flow: contiguous float32
// (B, H, W, 2) = sum_g softmax_g(logits) T_g(z); stats: contiguous float32 (B, H, W, 2), per pixel the
// max logit m and sum_g exp(l_g - m) (what the backward needs to recompute softmax_g exactly).
void compose_flow_forward(std::intptr_t logits, std::int64_t stride_b, std::int64_t stride_c, std::int64_t stride_h,
                          std::int64_t stride_w, std::int64_t batch, std::int64_t groups, std::int64_t height,
                          std::int64_t width, int dtype, std::intptr_t kp_source, std::intptr_t kp_driving,
                          std::intptr_t jac_source, std::intptr_t jac_driving, bool has_jac, std::intptr_t flow,
                          std::intptr_t stats, std::intptr_t stream);

// grad, flow: contiguous float32 (B, H, W, 2); stats float32 (B, H, W, 2). dlogits: like logits
// (own strides, element type dtype). partial: float32 (B, K, num_blocks, 12).
void compose_flow_backward(std::intptr_t grad, std::intptr_t logits, std::int64_t stride_b, std::int64_t stride_c,
                           std::int64_t stride_h, std::int64_t stride_w, std::intptr_t dlogits,
                           std::int64_t dstride_b, std::int64_t dstride_c, std::int64_t dstride_h,
                           std::int64_t dstride_w, std::int64_t batch, std::int64_t groups, std::int64_t height,
                           std::int64_t width, int dtype, std::intptr_t flow, std::intptr_t stats,
                           std::intptr_t kp_source, std::intptr_t kp_driving, std::intptr_t jac_source,
                           std::intptr_t jac_driving, bool has_jac, std::intptr_t partial, std::int64_t num_blocks,
                           std::intptr_t stream);

}  // namespace mcc
