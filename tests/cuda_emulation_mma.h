// Host stand-in for CUDA's <mma.h> (warp matrix multiply-accumulate), for tests/cuda_emulation.py:
// copied into the emulation's include folder as mma.h, ahead of the CUDA toolkit's. Every lane
// of a warp holds the whole tile in its fragment (row-major), so element-wise loops over
// `x[0..num_elements)` mean what they mean on the GPU; mma_sync accumulates in float32 in
// index order; store_matrix_sync is written by lane 0 (every lane holds the same tile).
// TF32 operands are rounded as cvt.rna.tf32.f32 does (10 mantissa bits, ties away from 0).
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  using element_type = std::conditional_t<std::is_same_v<T, precision::tf32>, float, T>;
  static constexpr int rows = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int cols = std::is_same_v<Use, matrix_a> ? K : N;
  static constexpr int num_elements = rows * cols;
  element_type x[num_elements];
};

template <typename Use, int M, int N, int K, typename T, typename L, typename V>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, V v) {
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = static_cast<typename fragment<Use, M, N, K, T, L>::element_type>(v);
}

template <typename Use, int M, int N, int K, typename T, typename L, typename P>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const P* p, unsigned ldm) {
  using F = fragment<Use, M, N, K, T, L>;
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c)
      f.x[r * F::cols + c] = std::is_same_v<L, col_major> ? p[c * ldm + r] : p[r * ldm + c];
}

template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout) {
  if (emu::linear % 32 == 0) {
    for (int r = 0; r < M; ++r)
      for (int c = 0; c < N; ++c) (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * N + c];
  }
  emu::block->warps[emu::linear / 32]->arrive_and_wait();
}

template <typename V>
inline float as_float(V v) { return static_cast<float>(v); }
inline float as_float(__half v) { return __half2float(v); }
inline float as_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <int M, int N, int K, typename TA, typename LA, typename TB, typename LB>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
  float out[M * N];
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      float acc = c.x[m * N + n];
      for (int k = 0; k < K; ++k) acc += as_float(a.x[m * K + k]) * as_float(b.x[k * N + n]);
      out[m * N + n] = acc;
    }
  std::memcpy(d.x, out, sizeof(out));
}

inline float __float_to_tf32(float v) {
  std::uint32_t bits;
  std::memcpy(&bits, &v, 4);
  if ((bits & 0x7f800000u) != 0x7f800000u) bits = (bits + 0x1000u) & 0xffffe000u;  // finite: round
  std::memcpy(&v, &bits, 4);
  return v;
}

}  // namespace wmma
}  // namespace nvcuda
