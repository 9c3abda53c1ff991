// The grid-sample warping family: grid_sample, warp (resize flow + sample + occlusion) and
// warp_many (one source, M flows), forward and backward. No torch headers: pointers, sizes,
// strides (in elements) and the stream are passed as integers.
#pragma once
#include <array>
#include <cstdint>
#include <string>

#include "warp_types.h"

namespace mcc {

// "" when this module's kernels can run on the current CUDA device, else the CUDA error that
// launching them would give (no kernel image for the device's architecture, a driver too old
// for the statically linked runtime, no device): asked once per device before dispatching.
std::string kernel_image_error();

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
