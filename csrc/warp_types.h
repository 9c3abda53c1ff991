// Kernel argument types of the warping family (warp_kernels.cuh); nvcc and NVRTC compile this
// header, and mcc_fast/cuda/runtime/warp.py mirrors SampleGeometry field by field.
#pragma once
#include "kernel_types.h"

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
  I64 B = 0, C = 0, H = 0, W = 0;
  Array<I64, 4> x_strides{};
  I64 M = 1, fh = 0, fw = 0;
  Array<I64, 5> flow_strides{};
  bool has_occ = false;
  I64 oh = 1, ow = 1;
  Array<I64, 3> occ_strides{};  // b, h, w
  I64 Ho = 0, Wo = 0;
  Array<I64, 5> out_strides{};  // b, m, c, h, w (of out, or of grad_out in backward)
  int mode = kBilinear;
  int padding = kZeros;
  bool align = false;
  bool resize_flow = false, resize_occ = false;
  float flow_scale_y = 1.f, flow_scale_x = 1.f, occ_scale_y = 1.f, occ_scale_x = 1.f;
};

}  // namespace mcc
