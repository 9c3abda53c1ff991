// Nearest-code search: one thread per query row, codebook tiles staged in shared memory.
#include "common.h"
#include "vq_search.h"

#include <cfloat>

namespace mcc {
namespace {

constexpr int kThreads = 128;   // queries per block
constexpr int kTileCodes = 32;  // codes per shared-memory tile
constexpr int kTileDims = 64;   // dimensions per shared-memory tile

template <typename T>
__global__ void nearest_code_kernel(const T* __restrict__ z, std::int64_t z_sn, std::int64_t z_sd,
                                    const T* __restrict__ cb, std::int64_t cb_sk, std::int64_t cb_sd,
                                    std::int64_t n, std::int64_t d, std::int64_t start,
                                    std::int64_t num, std::int64_t* __restrict__ idx_out,
                                    float* __restrict__ dist_out) {
  __shared__ float tile[kTileCodes][kTileDims + 1];
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const bool active = row < n;
  float best = FLT_MAX;
  std::int64_t best_idx = start;
  bool best_nan = false;
  for (std::int64_t c0 = 0; c0 < num; c0 += kTileCodes) {
    const int codes = static_cast<int>(num - c0 < kTileCodes ? num - c0 : kTileCodes);
    float acc[kTileCodes];
#pragma unroll
    for (int j = 0; j < kTileCodes; ++j) acc[j] = 0.f;
    for (std::int64_t k0 = 0; k0 < d; k0 += kTileDims) {
      const int dims = static_cast<int>(d - k0 < kTileDims ? d - k0 : kTileDims);
      __syncthreads();
      for (int t = threadIdx.x; t < kTileCodes * kTileDims; t += kThreads) {
        const int j = t / kTileDims, k = t % kTileDims;
        float v = 0.f;
        if (j < codes && k < dims) v = to_float(cb[(start + c0 + j) * cb_sk + (k0 + k) * cb_sd]);
        tile[j][k] = v;
      }
      __syncthreads();
      if (active) {
        for (int k = 0; k < dims; ++k) {
          const float zk = to_float(z[row * z_sn + (k0 + k) * z_sd]);
#pragma unroll
          for (int j = 0; j < kTileCodes; ++j) {
            const float diff = zk - tile[j][k];
            acc[j] = fmaf(diff, diff, acc[j]);
          }
        }
      }
    }
    if (active) {
      for (int j = 0; j < codes; ++j) {
        if (isnan(acc[j])) {  // NaN input: report index of the first NaN distance, distance NaN
          if (!best_nan) { best_nan = true; best_idx = start + c0 + j; best = acc[j]; }
        } else if (!best_nan && acc[j] < best) {
          best = acc[j];
          best_idx = start + c0 + j;
        }
      }
    }
  }
  if (active) {
    idx_out[row] = best_idx;
    dist_out[row] = best;
  }
}

}  // namespace

void nearest_code_forward(std::intptr_t z, std::int64_t z_stride_n, std::int64_t z_stride_d,
                          std::intptr_t codebook, std::int64_t cb_stride_k, std::int64_t cb_stride_d,
                          std::int64_t n, std::int64_t d, std::int64_t start, std::int64_t num,
                          int dtype, std::intptr_t indices_out, std::intptr_t distances_out,
                          std::intptr_t stream) {
  if (n == 0) return;
  const dim3 grid(static_cast<unsigned>((n + kThreads - 1) / kThreads));
  dispatch_float_types(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    nearest_code_kernel<T><<<grid, kThreads, 0, as_stream(stream)>>>(
        reinterpret_cast<const T*>(z), z_stride_n, z_stride_d, reinterpret_cast<const T*>(codebook),
        cb_stride_k, cb_stride_d, n, d, start, num, reinterpret_cast<std::int64_t*>(indices_out),
        reinterpret_cast<float*>(distances_out));
  });
  check_cuda(cudaGetLastError(), "nearest_code_forward launch");
}

}  // namespace mcc
