// The argument block of the vector-quantisation kernels (vq_search_kernels.cuh), passed by value.
// Host (vq_search.cu) and run-time (mcc_fast/cuda/runtime/vq.py) launchers fill it; both
// nvcc and NVRTC compile this header.
#pragma once
#include "kernel_types.h"

namespace mcc {

constexpr int kVqMaxSegments = 4;

// Segments in launch order q (the order the search blocks run in); out[q] is the segment's
// position in the caller's lists. pstart: first block of each segment, pstart[nseg] = blocks.
struct SegArgs {
  int nseg;
  int out[kVqMaxSegments];
  I64 pstart[kVqMaxSegments + 1];
  const void* z[kVqMaxSegments];
  I64 zsn[kVqMaxSegments], zsd[kVqMaxSegments];
  const void* g[kVqMaxSegments];
  I64 gsn[kVqMaxSegments], gsd[kVqMaxSegments];
  I64 n[kVqMaxSegments], start[kVqMaxSegments], num[kVqMaxSegments];
  I64 row_base[kVqMaxSegments], cnt_base[kVqMaxSegments];
};

}  // namespace mcc
