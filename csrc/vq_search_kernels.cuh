// Kernels of the nearest-code search and fused vector quantisation (see vq_search.h), launched
// by vq_search.cu or compiled at run time by NVRTC (mcc_fast/cuda/runtime/vq.py).
//
// Search: a block of 256 threads owns 64 query rows of one segment and sweeps the segment's
// codes in tiles of 64, in slices of 16 dimensions staged in shared memory. The dot products
// of a tile come from fp32 FMA (SIMT: every thread a 4 x 4 register tile) or from tensor cores
// (wmma: fp16/bf16 operands, or fp32 rounded to TF32; fp32 accumulation) and land in the same
// per-thread 4 x 4 (rows x codes) layout. Each thread keeps, per row, the top-2 (distance,
// index) of the codes it saw; at the end the 16 threads of a row group merge their lists with
// shuffles (lexicographic (value, index): ties to the lowest index), then re-rank the two
// candidates by the exact pairwise difference and write the outputs. No N x K matrix is stored.
#pragma once
#include <mma.h>

#include "device_common.cuh"
#include "vq_search_types.h"

namespace mcc {

constexpr int kRows = 64;     // query rows per block
constexpr int kCodes = 64;    // codes per tile
constexpr int kKD = 16;       // dimensions per shared-memory slice
constexpr int kThreads = 256; // 16 row groups x 16 code groups, 4 x 4 each
constexpr int kChunk = 128;   // sorted rows per chunk (deterministic codebook gradient)
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ int segment_of(const SegArgs& a, I64 pid) {
  int s = 0;
  while (s + 1 < a.nseg && pid >= a.pstart[s + 1]) ++s;
  return s;
}

// (value, index) order; index < 0 is an empty slot, larger than everything.
__device__ __forceinline__ bool cand_less(float va, int ia, float vb, int ib) {
  if (ia < 0) return false;
  if (ib < 0) return true;
  return va < vb || (va == vb && ia < ib);
}

__device__ __forceinline__ void cand_insert(float v, int j, float& b1, int& j1, float& b2, int& j2) {
  if (cand_less(v, j, b1, j1)) {
    b2 = b1; j2 = j1; b1 = v; j1 = j;
  } else if (cand_less(v, j, b2, j2)) {
    b2 = v; j2 = j;
  }
}

template <typename T>
__device__ __forceinline__ float round_to(float v) { return to_float<T>(from_float<T>(v)); }

template <typename T>
__global__ void sq_norms_kernel(const T* __restrict__ cb, I64 sk, I64 sd, I64 lo, I64 hi, I64 d,
                                float* __restrict__ out) {
  // one warp per row, fixed-order lane sums then a fixed butterfly
  const I64 row = lo + (static_cast<I64>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (row >= hi) return;  // whole warps exit together (blockDim is a multiple of 32)
  float acc = 0.f;
  for (I64 k = lane; k < d; k += 32) {
    const float v = to_float(cb[row * sk + k * sd]);
    acc = fmaf(v, v, acc);
  }
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(kFull, acc, off);
  if (lane == 0) out[row] = acc;
}

// The tensor-core path needs TF32 and bf16 wmma (sm_80+); older GPUs run the FMA path for it.
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define MCC_VQ_TENSOR_CORES 1
#else
#define MCC_VQ_TENSOR_CORES 0
#endif

#if MCC_VQ_TENSOR_CORES
// Shared-memory operand tiles of the tensor-core path: T itself for fp16/bf16 (m16n16k16),
// float rounded to TF32 in the fragments for fp32 (m16n16k8). Row strides keep every 16-row
// sub-tile 32-byte aligned, as wmma requires.
template <typename T> struct TcOperand {
  using type = T;
  using fragment = T;
  static constexpr bool kTf32 = false;
  static constexpr int kK = 16, kLd = kKD + 8;
};
template <> struct TcOperand<float> {
  using type = float;
  using fragment = nvcuda::wmma::precision::tf32;
  static constexpr bool kTf32 = true;
  static constexpr int kK = 8, kLd = kKD + 4;
};
#endif

// acc[i][j] = z_row(ty*4+i) . e_code(c0 + tx*4+j) over all d, for one tile of kCodes codes.
// SIMT: fp32 FMA from fp32 copies in shared memory. Tensor cores: each of the 8 warps owns a
// 16 x 32 block of the 64 x 64 tile (two wmma accumulators); the products go through shared
// memory to the same per-thread 4 x 4 layout, so the candidate logic below is shared.
template <typename T, bool kTensorCores>
__device__ __forceinline__ void tile_dots(const T* __restrict__ z, I64 zsn, I64 zsd, I64 n, I64 row0,
                                          const T* __restrict__ cb, I64 cb_sk, I64 cb_sd, I64 start, I64 num,
                                          I64 c0, int d, float (&acc)[4][4]) {
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  if constexpr (!kTensorCores || !MCC_VQ_TENSOR_CORES) {
    __shared__ float zs[kKD][kRows + 4];
    __shared__ float es[kKD][kCodes + 4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
    for (int k0 = 0; k0 < d; k0 += kKD) {
      __syncthreads();
      for (int e = tid; e < kRows * kKD; e += kThreads) {
        const int r = e / kKD, k = e % kKD, dim = k0 + k;
        const I64 row = row0 + r, code = c0 + r;
        zs[k][r] = (row < n && dim < d) ? to_float(z[row * zsn + dim * zsd]) : 0.f;
        es[k][r] = (code < num && dim < d) ? to_float(cb[(start + code) * cb_sk + dim * cb_sd]) : 0.f;
      }
      __syncthreads();
#pragma unroll
      for (int k = 0; k < kKD; ++k) {
        float zv[4], ev[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) zv[i] = zs[k][ty * 4 + i];
#pragma unroll
        for (int j = 0; j < 4; ++j) ev[j] = es[k][tx * 4 + j];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(zv[i], ev[j], acc[i][j]);
      }
    }
  }
#if MCC_VQ_TENSOR_CORES
  else {
    namespace wmma = nvcuda::wmma;
    using Op = TcOperand<T>;
    using S = typename Op::type;
    using FragT = typename Op::fragment;
    constexpr int K = Op::kK, LD = Op::kLd;
    __shared__ __align__(32) S za[kRows][LD];
    __shared__ __align__(32) S eb[kCodes][LD];
    __shared__ __align__(32) float prod[kRows][kCodes + 4];
    const int warp = tid >> 5, wr = warp >> 1, wc = warp & 1;
    wmma::fragment<wmma::accumulator, 16, 16, K, float> f0, f1;
    wmma::fill_fragment(f0, 0.f);
    wmma::fill_fragment(f1, 0.f);
    for (int k0 = 0; k0 < d; k0 += kKD) {
      __syncthreads();
      for (int e = tid; e < kRows * kKD; e += kThreads) {
        const int r = e / kKD, k = e % kKD, dim = k0 + k;
        const I64 row = row0 + r, code = c0 + r;
        za[r][k] = (row < n && dim < d) ? z[row * zsn + dim * zsd] : S(0.f);
        eb[r][k] = (code < num && dim < d) ? cb[(start + code) * cb_sk + dim * cb_sd] : S(0.f);
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kKD; kk += K) {
        wmma::fragment<wmma::matrix_a, 16, 16, K, FragT, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, K, FragT, wmma::col_major> b0, b1;
        wmma::load_matrix_sync(a, &za[wr * 16][kk], LD);
        wmma::load_matrix_sync(b0, &eb[wc * 32][kk], LD);
        wmma::load_matrix_sync(b1, &eb[wc * 32 + 16][kk], LD);
        if constexpr (Op::kTf32) {
          for (int i = 0; i < a.num_elements; ++i) a.x[i] = wmma::__float_to_tf32(a.x[i]);
          for (int i = 0; i < b0.num_elements; ++i) b0.x[i] = wmma::__float_to_tf32(b0.x[i]);
          for (int i = 0; i < b1.num_elements; ++i) b1.x[i] = wmma::__float_to_tf32(b1.x[i]);
        }
        wmma::mma_sync(f0, a, b0, f0);
        wmma::mma_sync(f1, a, b1, f1);
      }
    }
    wmma::store_matrix_sync(&prod[wr * 16][wc * 32], f0, kCodes + 4, wmma::mem_row_major);
    wmma::store_matrix_sync(&prod[wr * 16][wc * 32 + 16], f1, kCodes + 4, wmma::mem_row_major);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = prod[ty * 4 + i][tx * 4 + j];
  }
#endif
}

template <typename T, bool kFused, bool kTensorCores>
__global__ void __launch_bounds__(kThreads) vq_search_kernel(
    SegArgs a, const T* __restrict__ cb, I64 cb_sk, I64 cb_sd, int d, const float* __restrict__ esq,
    I64* __restrict__ idx_out, float* __restrict__ dist_out, T* __restrict__ zq_out, int* __restrict__ counts,
    float* __restrict__ parts) {
  __shared__ float red[kRows];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const I64 pid = blockIdx.x;
  const int s = segment_of(a, pid);
  const T* __restrict__ z = static_cast<const T*>(a.z[s]);
  const I64 zsn = a.zsn[s], zsd = a.zsd[s], n = a.n[s], start = a.start[s], num = a.num[s];
  const I64 row0 = (pid - a.pstart[s]) * kRows;

  float b1[4], b2[4];
  int j1[4], j2[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) { b1[i] = b2[i] = MCC_INF; j1[i] = j2[i] = -1; }

  for (I64 c0 = 0; c0 < num; c0 += kCodes) {
    float acc[4][4];
    tile_dots<T, kTensorCores>(z, zsn, zsd, n, row0, cb, cb_sk, cb_sd, start, num, c0, d, acc);
    // codes of this thread come in increasing order: strict comparisons keep the lowest index
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const I64 code = c0 + tx * 4 + j;
      if (code >= num) continue;
      const float e2 = esq[start + code];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float v = e2 - 2.f * acc[i][j];
        if (v < MCC_INF) cand_insert(v, static_cast<int>(code), b1[i], j1[i], b2[i], j2[i]);  // NaN/inf: never
      }
    }
  }

  // merge the 16 code groups of each row group (lanes 0-15 / 16-31 of a warp)
#pragma unroll
  for (int off = 8; off > 0; off >>= 1) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float ob1 = __shfl_xor_sync(kFull, b1[i], off, 16), ob2 = __shfl_xor_sync(kFull, b2[i], off, 16);
      const int oj1 = __shfl_xor_sync(kFull, j1[i], off, 16), oj2 = __shfl_xor_sync(kFull, j2[i], off, 16);
      float r1, r2;
      int q1, q2;
      if (cand_less(ob1, oj1, b1[i], j1[i])) {
        r1 = ob1; q1 = oj1;
        if (cand_less(b1[i], j1[i], ob2, oj2)) { r2 = b1[i]; q2 = j1[i]; } else { r2 = ob2; q2 = oj2; }
      } else {
        r1 = b1[i]; q1 = j1[i];
        if (cand_less(ob1, oj1, b2[i], j2[i])) { r2 = ob1; q2 = oj1; } else { r2 = b2[i]; q2 = j2[i]; }
      }
      b1[i] = r1; j1[i] = q1; b2[i] = r2; j2[i] = q2;
    }
  }

  // exact re-ranking of the two candidates; the 16 lanes of a row group split d
  const I64 rb = a.row_base[s];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = ty * 4 + i;
    const I64 row = row0 + r;
    const bool row_ok = row < n;
    const int c1 = j1[i], c2 = j2[i];
    float d1 = 0.f, d2 = 0.f, dx = 0.f;
    int bad = 0;
    if (row_ok) {
      for (int dim = tx; dim < d; dim += 16) {
        const float zv = to_float(z[row * zsn + dim * zsd]);
        const float e1 = c1 >= 0 ? to_float(cb[(start + c1) * cb_sk + dim * cb_sd]) : 0.f;
        const float e2 = c2 >= 0 ? to_float(cb[(start + c2) * cb_sk + dim * cb_sd]) : 0.f;
        const float p = e1 - zv, q = e2 - zv;
        d1 = fmaf(p, p, d1);
        d2 = fmaf(q, q, d2);
        dx = fmaf(e1 - e2, p + q, dx);
        bad |= !isfinite(zv);
      }
    }
#pragma unroll
    for (int off = 8; off > 0; off >>= 1) {
      d1 += __shfl_xor_sync(kFull, d1, off, 16);
      d2 += __shfl_xor_sync(kFull, d2, off, 16);
      dx += __shfl_xor_sync(kFull, dx, off, 16);
      bad |= __shfl_xor_sync(kFull, bad, off, 16);
    }
    const bool take2 = c2 >= 0 && (dx > 0.f || (dx == 0.f && c2 < c1));
    const int jb = take2 ? c2 : c1;
    const bool valid = row_ok && c1 >= 0 && !bad;
    const float db = valid ? (take2 ? d2 : d1) : MCC_NAN;
    if (row_ok && tx == 0) {
      idx_out[rb + row] = valid ? start + jb : -1;
      dist_out[rb + row] = db;
    }
    if constexpr (kFused) {
      if (row_ok) {
        for (int dim = tx; dim < d; dim += 16) {
          const float zv = to_float(z[row * zsn + dim * zsd]);
          const float e = valid ? to_float(cb[(start + jb) * cb_sk + dim * cb_sd]) : MCC_NAN;
          // z + sg(e - z), rounded like the reference: (e - z), then the sum, in z's dtype
          const float diff = round_to<T>(e - zv);
          zq_out[(rb + row) * d + dim] = from_float<T>(zv + diff);
        }
      }
      if (tx == 0) {
        red[r] = row_ok ? db : 0.f;
        if (valid) atomicAdd(counts + a.cnt_base[s] + jb, 1);
      }
    }
  }
  if constexpr (kFused) {
    __syncthreads();
    if (tid == 0) {
      float acc = 0.f;
      for (int r = 0; r < kRows; ++r) acc += red[r];
      parts[pid] = acc;
    }
  }
}

__device__ float block_sum(float v, float* buf) {
  // fixed-order tree over 256 threads (deterministic)
  buf[threadIdx.x] = v;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if (static_cast<int>(threadIdx.x) < w) buf[threadIdx.x] += buf[threadIdx.x + w];
    __syncthreads();
  }
  const float out = buf[0];
  __syncthreads();
  return out;
}

__global__ void vq_finalize_kernel(SegArgs a, I64 d, const float* __restrict__ parts, const int* __restrict__ counts32,
                                   I64* __restrict__ counts64, float beta, float* __restrict__ loss,
                                   float* __restrict__ ppl, float* __restrict__ usage) {
  __shared__ float buf[kThreads];
  const int s = blockIdx.x;
  const I64 p0 = a.pstart[s], p1 = a.pstart[s + 1];
  float acc = 0.f;
  for (I64 p = p0 + threadIdx.x; p < p1; p += blockDim.x) acc += parts[p];
  const float total = block_sum(acc, buf);
  const I64 n = a.n[s], num = a.num[s], cb0 = a.cnt_base[s];
  const float inv_m = n > 0 ? static_cast<float>(1.0 / (static_cast<double>(n) * static_cast<double>(d))) : MCC_NAN;
  const float inv_n = n > 0 ? static_cast<float>(1.0 / static_cast<double>(n)) : MCC_NAN;
  float ent = 0.f, used = 0.f;
  for (I64 c = threadIdx.x; c < num; c += blockDim.x) {
    const int cnt = counts32[cb0 + c];
    counts64[cb0 + c] = cnt;
    const float p = static_cast<float>(cnt) * inv_n;
    ent += p * logf(p + 1e-10f);
    used += cnt > 0 ? 1.f : 0.f;
  }
  const float ent_sum = block_sum(ent, buf);
  const float used_sum = block_sum(used, buf);
  if (threadIdx.x == 0) {
    const int o = a.out[s];
    const float mean = total * inv_m;
    loss[o] = beta * mean + mean;
    ppl[o] = expf(-ent_sum);
    usage[o] = used_sum / static_cast<float>(num);
  }
}

template <typename T>
__global__ void vq_backward_rows_kernel(SegArgs a, const T* __restrict__ cb, I64 cb_sk, I64 cb_sd, int d,
                                        const I64* __restrict__ indices, const float* __restrict__ grad_loss,
                                        float beta, T* __restrict__ grad_z, float* __restrict__ grad_cb32) {
  // blockDim (32, 8): 8 rows, 32 lanes over d
  const I64 pid = blockIdx.x;
  const int s = segment_of(a, pid);
  const I64 row = (pid - a.pstart[s]) * 8 + threadIdx.y;
  if (row >= a.n[s]) return;
  const T* __restrict__ z = static_cast<const T*>(a.z[s]);
  const T* __restrict__ g = static_cast<const T*>(a.g[s]);
  const I64 orow = a.row_base[s] + row;
  const I64 idx = indices[orow];
  const bool valid = idx >= 0;
  const float gl = grad_loss != nullptr ? grad_loss[s] : 0.f;
  const bool use_loss = gl != 0.f;
  const float inv_m = static_cast<float>(1.0 / (static_cast<double>(a.n[s]) * static_cast<double>(d)));
  const float cz = 2.f * beta * gl * inv_m, ce = 2.f * gl * inv_m;
  for (int dim = threadIdx.x; dim < d; dim += 32) {
    float out = g != nullptr ? to_float(g[row * a.gsn[s] + dim * a.gsd[s]]) : 0.f;
    if (use_loss) {
      const float zv = to_float(z[row * a.zsn[s] + dim * a.zsd[s]]);
      const float e = valid ? to_float(cb[idx * cb_sk + dim * cb_sd]) : MCC_NAN;
      out += cz * (zv - e);
      if (grad_cb32 != nullptr && valid) atomicAdd(grad_cb32 + idx * d + dim, ce * (e - zv));
    }
    grad_z[orow * d + dim] = from_float<T>(out);
  }
}

template <typename T>
__global__ void vq_segsum_chunks_kernel(SegArgs a, const T* __restrict__ cb, I64 cb_sk, I64 cb_sd, int d, I64 total,
                                        const I64* __restrict__ sorted, const I64* __restrict__ order,
                                        const float* __restrict__ grad_loss, float* __restrict__ head,
                                        float* __restrict__ tail, float* __restrict__ inner) {
  const I64 chunk = blockIdx.x;
  const int dim = blockIdx.y * blockDim.x + threadIdx.x;
  if (dim >= d) return;
  const I64 first = chunk * kChunk;
  const I64 last = min_of<I64>(total - first, kChunk) - 1;
  I64 cur = sorted[first];
  float run = 0.f;
  bool from_start = true;
  for (I64 q = 0; q <= last; ++q) {
    const I64 p = first + q, code = sorted[p];
    if (code != cur) {  // the run of `cur` ended inside the chunk
      if (from_start) head[chunk * d + dim] = run;
      else if (cur >= 0) inner[cur * d + dim] = run;
      cur = code;
      run = 0.f;
      from_start = false;
    }
    if (code >= 0) {
      const I64 row = order[p];
      int s = 0;
      while (s + 1 < a.nseg && row >= a.row_base[s + 1]) ++s;
      const float gl = grad_loss[s];
      if (gl != 0.f) {
        const I64 local = row - a.row_base[s];
        const float inv_m = static_cast<float>(1.0 / (static_cast<double>(a.n[s]) * static_cast<double>(d)));
        const float zv = to_float(static_cast<const T*>(a.z[s])[local * a.zsn[s] + dim * a.zsd[s]]);
        const float e = to_float(cb[code * cb_sk + dim * cb_sd]);
        run += (2.f * gl * inv_m) * (e - zv);
      }
    }
  }
  if (from_start) head[chunk * d + dim] = run;
  tail[chunk * d + dim] = run;
}

template <typename T>
__global__ void vq_segsum_finish_kernel(const I64* __restrict__ bounds, const float* __restrict__ head,
                                        const float* __restrict__ tail, const float* __restrict__ inner, I64 total,
                                        int d, T* __restrict__ grad_cb) {
  const I64 k = blockIdx.x;
  const int dim = blockIdx.y * blockDim.x + threadIdx.x;
  if (dim >= d) return;
  const I64 off = bounds[k], end = bounds[k + 1];
  float res = 0.f;
  if (end > off) {
    const I64 c0 = off / kChunk, c1 = (end - 1) / kChunk;
    if (c0 == c1) {
      if (off == c0 * kChunk) res = head[c0 * d + dim];
      else if (end == min_of<I64>((c0 + 1) * kChunk, total)) res = tail[c0 * d + dim];
      else res = inner[k * d + dim];
    } else {
      float acc = tail[c0 * d + dim];
      for (I64 c = c0 + 1; c < c1; ++c) acc += head[c * d + dim];
      res = acc + head[c1 * d + dim];
    }
  }
  grad_cb[k * d + dim] = from_float<T>(res);
}

}  // namespace mcc
