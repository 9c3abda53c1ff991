// The grid-sample warping family: grid_sample, warp (resize flow + sample + occlusion) and
// warp_many (one source, M flows), forward and backward. No torch headers: pointers, sizes,
// strides (in elements) and the stream are passed as integers.
#pragma once
#include <array>
#include <cstdint>

namespace mcc {

// Codes shared with mcc_fast/kernels/grid_sample.py (MODES, PADDINGS).
enum SampleMode : int { kBilinear = 0, kNearest = 1 };
enum SamplePadding : int { kZeros = 0, kBorder = 1, kReflection = 2 };

// One sampling problem. out[b, m, c, Y, X] = occ(b, Y, X) * sample(x[b, c], coords(b, m, Y, X)):
//   x       (B, C, H, W), feature dtype;
//   coords  (B, M, fh, fw, 2) float32 in [-1, 1] (x, y), bilinearly resized to (Ho, Wo) when
//           resize_flow (F.interpolate semantics, scales flow_scale_y/x as ATen computes them);
//   occ     (B, 1, oh, ow) float32 when has_occ, resized likewise when resize_occ;
//   out     (B, M, C, Ho, Wo), feature dtype.
// grid_sample: M = 1, no resize, no occlusion; warp: M = 1; warp_many: no resize, no occlusion.
struct SampleGeometry {
  std::int64_t B = 0, C = 0, H = 0, W = 0;
  std::array<std::int64_t, 4> x_strides{};
  std::int64_t M = 1, fh = 0, fw = 0;
  std::array<std::int64_t, 5> flow_strides{};
  bool has_occ = false;
  std::int64_t oh = 1, ow = 1;
  std::array<std::int64_t, 3> occ_strides{};  // b, h, w
  std::int64_t Ho = 0, Wo = 0;
  std::array<std::int64_t, 5> out_strides{};  // b, m, c, h, w (of out, or of grad_out in backward)
  int mode = kBilinear;
  int padding = kZeros;
  bool align = false;
  bool resize_flow = false, resize_occ = false;
  float flow_scale_y = 1.f, flow_scale_x = 1.f, occ_scale_y = 1.f, occ_scale_x = 1.f;
};

// Forward: writes out (strides g.out_strides).
void sample_forward(std::intptr_t x, std::intptr_t flow, std::intptr_t occ, std::intptr_t out,
                    const SampleGeometry& g, int dtype, std::intptr_t stream);

// Backward, grad_out with strides g.out_strides. Optional outputs (0 = not wanted):
//   grad_x     float32 (B, C, H, W) with strides gx_strides, accumulated with atomics (zero it first);
//   grad_flow  float32 (B*M*Ho*Wo, 2), the gradient of the (resized) coordinates;
//   grad_occ   float32 (B*Ho*Wo), the gradient of the (resized) occlusion;
//   keys/weights: deterministic input-gradient entries (4 per output pixel for bilinear, 1 for
//   nearest): int64 target pixel b*H*W + y*W + x (or B*H*W when none) and float32 weight.
void sample_backward(std::intptr_t grad_out, std::intptr_t x, std::intptr_t flow, std::intptr_t occ,
                     const SampleGeometry& g, std::intptr_t grad_x, std::array<std::int64_t, 4> gx_strides,
                     std::intptr_t grad_flow, std::intptr_t grad_occ, std::intptr_t keys, std::intptr_t weights,
                     int dtype, std::intptr_t stream);

// Deterministic input gradient: bounds (B*H*W + 1) int64 segment starts into perm (the stable
// sort permutation of the keys); grad_x (feature dtype, strides gx_strides) is fully written.
void gather_input_grad(std::intptr_t bounds, std::intptr_t perm, std::intptr_t weights, int entries,
                       std::intptr_t grad_out, const SampleGeometry& g, std::intptr_t grad_x,
                       std::array<std::int64_t, 4> gx_strides, int dtype, std::intptr_t stream);

// Adjoint of a bilinear resize along one axis (lo -> hi samples) of a float32 (B, A, hi, E) map:
// dst (B, A, lo, E). scale as ATen computes it; window = high-res samples scanned per output.
void resize_backward_axis(std::intptr_t src, std::array<std::int64_t, 4> src_strides, std::intptr_t dst,
                          std::array<std::int64_t, 4> dst_strides, std::int64_t B, std::int64_t A, std::int64_t lo,
                          std::int64_t E, std::int64_t hi, float scale, float inv_scale, std::int64_t window,
                          bool align, std::intptr_t stream);

}  // namespace mcc
