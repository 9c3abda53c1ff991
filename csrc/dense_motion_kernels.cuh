// Kernels of the fused dense motion, launched by dense_motion.cu or compiled at run time by NVRTC
// (mcc_fast/cuda/runtime/dense_motion.py): heatmaps, sparse motions, the hourglass input and the
// flow composition, computed per pixel from 12 numbers per keypoint (never materialising (B, K+1, H, W, 2)).
//
// One thread per pixel, kThreads pixels per block; grid (pixel blocks, group or keypoint, batch).
// Backward kernels reduce their per-keypoint gradients over the block (warp shuffles + shared
// memory) and write one partial row per block (deterministic; summed by the caller). Only the
// source gradient of the hourglass input uses atomics (as grid_sample's backward does).
#pragma once
#include "device_common.cuh"

namespace mcc {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// (x, y) of flattened pixel p on the (H, W) coordinate grid.
__device__ __forceinline__ void pixel_grid(int p, int H, int W, float& zx, float& zy) {
  const int row = p / W;
  const int col = p - row * W;
  zx = 2.f * (static_cast<float>(col) / static_cast<float>(W - 1)) - 1.f;
  zy = 2.f * (static_cast<float>(row) / static_cast<float>(H - 1)) - 1.f;
}

__device__ __forceinline__ float gaussian(float zx, float zy, float kx, float ky, float variance) {
  const float dx = zx - kx;
  const float dy = zy - ky;
  return expf(-0.5f * (dx * dx + dy * dy) / variance);
}

// Closed-form 2x2 inverse: adjugate / det, entry by entry (det == 0 -> inf/nan).
__device__ __forceinline__ void inverse_2x2(const float d[4], float inv[4]) {
  const float det = d[0] * d[3] - d[1] * d[2];
  inv[0] = d[3] / det;
  inv[1] = -d[1] / det;
  inv[2] = -d[2] / det;
  inv[3] = d[0] / det;
}

// The 12 numbers of one keypoint, and its motion T(z) = A (z - kd) + ks.
struct Keypoint {
  float ksx, ksy, kdx, kdy;
  float a[4];  // A = J_s inverse(J_d), row-major; the identity without jacobians

  __device__ __forceinline__ void motion(float zx, float zy, bool has_jac, float& tx, float& ty) const {
    const float ox = zx - kdx;
    const float oy = zy - kdy;
    if (has_jac) {
      tx = a[0] * ox + a[1] * oy;
      ty = a[2] * ox + a[3] * oy;
    } else {
      tx = ox;
      ty = oy;
    }
    tx += ksx;
    ty += ksy;
  }
};

__device__ __forceinline__ void load_jacobian(const float* jac, I64 bk, float m[4]) {
  for (int i = 0; i < 4; ++i) m[i] = jac[bk * 4 + i];
}

__device__ __forceinline__ Keypoint load_keypoint(const float* kps, const float* kpd, const float* js,
                                                  const float* jd, I64 bk, bool has_jac) {
  Keypoint kp;
  kp.ksx = kps[bk * 2];
  kp.ksy = kps[bk * 2 + 1];
  kp.kdx = kpd[bk * 2];
  kp.kdy = kpd[bk * 2 + 1];
  if (has_jac) {
    float s[4], d[4], inv[4];
    load_jacobian(js, bk, s);
    load_jacobian(jd, bk, d);
    inverse_2x2(d, inv);
    kp.a[0] = s[0] * inv[0] + s[1] * inv[2];
    kp.a[1] = s[0] * inv[1] + s[1] * inv[3];
    kp.a[2] = s[2] * inv[0] + s[3] * inv[2];
    kp.a[3] = s[2] * inv[1] + s[3] * inv[3];
  } else {
    kp.a[0] = 1.f;
    kp.a[1] = 0.f;
    kp.a[2] = 0.f;
    kp.a[3] = 1.f;
  }
  return kp;
}

// Sums v[0..N) over the block; the totals are valid in thread 0. Every thread must call it.
template <int N>
__device__ __forceinline__ void block_sum(float (&v)[N]) {
  __shared__ float smem[N][kWarps];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v[i] += __shfl_down_sync(0xffffffffu, v[i], off);
  }
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < N; ++i) smem[i][warp] = v[i];
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      v[i] = lane < kWarps ? smem[i][lane] : 0.f;
#pragma unroll
      for (int off = kWarps / 2; off > 0; off >>= 1) v[i] += __shfl_down_sync(0xffffffffu, v[i], off);
    }
  }
}

// Writes the 12 partial gradients [kp_s, kp_d, J_s, J_d] of one block from the reduced sums
// s = [dkp_s (2), dkp_d (2), dA (4)], chaining dA through A = J_s D, D = inverse(J_d):
// dJ_s = dA D^T, dD = J_s^T dA, dJ_d = -D^T dD D^T.
__device__ void store_keypoint_grads(float* out, const float s[8], const float* js, const float* jd,
                                     I64 bk, bool has_jac) {
  for (int i = 0; i < 4; ++i) out[i] = s[i];
  if (!has_jac) {
    for (int i = 4; i < 12; ++i) out[i] = 0.f;
    return;
  }
  float j[4], d[4], inv[4];
  load_jacobian(js, bk, j);
  load_jacobian(jd, bk, d);
  inverse_2x2(d, inv);
  const float* ga = s + 4;
  out[4] = ga[0] * inv[0] + ga[1] * inv[1];
  out[5] = ga[0] * inv[2] + ga[1] * inv[3];
  out[6] = ga[2] * inv[0] + ga[3] * inv[1];
  out[7] = ga[2] * inv[2] + ga[3] * inv[3];
  const float e00 = j[0] * ga[0] + j[2] * ga[2];
  const float e01 = j[0] * ga[1] + j[2] * ga[3];
  const float e10 = j[1] * ga[0] + j[3] * ga[2];
  const float e11 = j[1] * ga[1] + j[3] * ga[3];
  const float m00 = inv[0] * e00 + inv[2] * e10;
  const float m01 = inv[0] * e01 + inv[2] * e11;
  const float m10 = inv[1] * e00 + inv[3] * e10;
  const float m11 = inv[1] * e01 + inv[3] * e11;
  out[8] = -(m00 * inv[0] + m01 * inv[1]);
  out[9] = -(m00 * inv[2] + m01 * inv[3]);
  out[10] = -(m10 * inv[0] + m11 * inv[1]);
  out[11] = -(m10 * inv[2] + m11 * inv[3]);
}

// grid_sample (bilinear, zeros padding) corner indices, weights and in-bounds flags.
struct Bilinear {
  int x0, y0;
  float wx0, wx1, wy0, wy1;
  bool in00, in01, in10, in11;
  bool finite;

  __device__ __forceinline__ Bilinear(float sx, float sy, int H, int W, bool align_corners) {
    float ix, iy;
    if (align_corners) {
      ix = (sx + 1.f) * 0.5f * static_cast<float>(W - 1);
      iy = (sy + 1.f) * 0.5f * static_cast<float>(H - 1);
    } else {
      ix = ((sx + 1.f) * static_cast<float>(W) - 1.f) * 0.5f;
      iy = ((sy + 1.f) * static_cast<float>(H) - 1.f) * 0.5f;
    }
    finite = isfinite(sx) && isfinite(sy);
    // Far outside (or nan): park at -2, where both corners are out of bounds (value 0, grad 0).
    if (!(ix > -2.f && ix < static_cast<float>(W) + 1.f)) ix = -2.f;
    if (!(iy > -2.f && iy < static_cast<float>(H) + 1.f)) iy = -2.f;
    const float x0f = floorf(ix);
    const float y0f = floorf(iy);
    wx1 = ix - x0f;
    wx0 = (x0f + 1.f) - ix;
    wy1 = iy - y0f;
    wy0 = (y0f + 1.f) - iy;
    x0 = static_cast<int>(x0f);
    y0 = static_cast<int>(y0f);
    const bool x0_in = x0 >= 0 && x0 < W, x1_in = x0 + 1 >= 0 && x0 + 1 < W;
    const bool y0_in = y0 >= 0 && y0 < H, y1_in = y0 + 1 >= 0 && y0 + 1 < H;
    in00 = y0_in && x0_in;
    in01 = y0_in && x1_in;
    in10 = y1_in && x0_in;
    in11 = y1_in && x1_in;
  }
};

// ------------------------------------------------------------------------------ forward kernels
template <typename T>
__global__ void keypoint_heatmaps_kernel(const float* __restrict__ kp, T* __restrict__ out, int H, int W, int K,
                                         float variance) {
  const int p = blockIdx.x * kThreads + threadIdx.x;
  if (p >= H * W) return;
  const I64 bk = static_cast<I64>(blockIdx.z) * K + blockIdx.y;
  float zx, zy;
  pixel_grid(p, H, W, zx, zy);
  out[bk * H * W + p] = from_float<T>(gaussian(zx, zy, kp[bk * 2], kp[bk * 2 + 1], variance));
}

template <typename T>
__global__ void sparse_motions_kernel(const float* __restrict__ kps, const float* __restrict__ kpd,
                                      const float* __restrict__ js, const float* __restrict__ jd, bool has_jac,
                                      T* __restrict__ out, int H, int W, int K) {
  const int p = blockIdx.x * kThreads + threadIdx.x;
  if (p >= H * W) return;
  const int g = blockIdx.y;
  const int b = blockIdx.z;
  float zx, zy;
  pixel_grid(p, H, W, zx, zy);
  float tx = zx, ty = zy;
  if (g > 0) {
    const Keypoint kp = load_keypoint(kps, kpd, js, jd, static_cast<I64>(b) * K + (g - 1), has_jac);
    kp.motion(zx, zy, has_jac, tx, ty);
  }
  const I64 pix = (static_cast<I64>(b) * (K + 1) + g) * H * W + p;
  out[pix * 2] = from_float<T>(tx);
  out[pix * 2 + 1] = from_float<T>(ty);
}

template <typename T>
__global__ void dense_motion_input_fwd_kernel(const T* __restrict__ src, I64 sb, I64 sc,
                                              I64 sh, I64 sw, const float* __restrict__ kps,
                                              const float* __restrict__ kpd, const float* __restrict__ js,
                                              const float* __restrict__ jd, bool has_jac, bool align_corners,
                                              T* __restrict__ out, int C, int H, int W, int K, float variance) {
  const int p = blockIdx.x * kThreads + threadIdx.x;
  if (p >= H * W) return;
  const int g = blockIdx.y;
  const int b = blockIdx.z;
  const I64 HW = static_cast<I64>(H) * W;
  float zx, zy;
  pixel_grid(p, H, W, zx, zy);
  float sx = zx, sy = zy, heat = 0.f;
  if (g > 0) {
    const Keypoint kp = load_keypoint(kps, kpd, js, jd, static_cast<I64>(b) * K + (g - 1), has_jac);
    kp.motion(zx, zy, has_jac, sx, sy);
    heat = gaussian(zx, zy, kp.kdx, kp.kdy, variance) - gaussian(zx, zy, kp.ksx, kp.ksy, variance);
  }
  T* o = out + (static_cast<I64>(b) * (K + 1) + g) * (C + 1) * HW + p;
  o[0] = from_float<T>(heat);

  const Bilinear bl(sx, sy, H, W, align_corners);
  const int x1 = bl.x0 + 1, y1 = bl.y0 + 1;
  const float w00 = bl.wx0 * bl.wy0, w01 = bl.wx1 * bl.wy0, w10 = bl.wx0 * bl.wy1, w11 = bl.wx1 * bl.wy1;
  const T* s = src + static_cast<I64>(b) * sb;
  for (int c = 0; c < C; ++c, s += sc) {
    const float v00 = bl.in00 ? to_float(s[bl.y0 * sh + bl.x0 * sw]) : 0.f;
    const float v01 = bl.in01 ? to_float(s[bl.y0 * sh + x1 * sw]) : 0.f;
    const float v10 = bl.in10 ? to_float(s[y1 * sh + bl.x0 * sw]) : 0.f;
    const float v11 = bl.in11 ? to_float(s[y1 * sh + x1 * sw]) : 0.f;
    const float val = v00 * w00 + v01 * w01 + v10 * w10 + v11 * w11;
    o[(c + 1) * HW] = from_float<T>(bl.finite ? val : MCC_NAN);
  }
}

template <typename T>
__global__ void compose_flow_fwd_kernel(const T* __restrict__ logits, I64 lb, I64 lc,
                                        I64 lh, I64 lw, const float* __restrict__ kps,
                                        const float* __restrict__ kpd, const float* __restrict__ js,
                                        const float* __restrict__ jd, bool has_jac, float* __restrict__ flow,
                                        float* __restrict__ stats, int H, int W, int K) {
  const int p = blockIdx.x * kThreads + threadIdx.x;
  if (p >= H * W) return;
  const int b = blockIdx.y;
  const int row = p / W, col = p - (p / W) * W;
  float zx, zy;
  pixel_grid(p, H, W, zx, zy);
  const T* l = logits + static_cast<I64>(b) * lb + row * lh + col * lw;
  const float l0 = to_float(l[0]);
  float m = l0;
  for (int k = 1; k <= K; ++k) m = fmaxf(m, to_float(l[k * lc]));
  float e = expf(l0 - m);
  float s = e, fx = e * zx, fy = e * zy;
  for (int k = 0; k < K; ++k) {
    const Keypoint kp = load_keypoint(kps, kpd, js, jd, static_cast<I64>(b) * K + k, has_jac);
    float tx, ty;
    kp.motion(zx, zy, has_jac, tx, ty);
    e = expf(to_float(l[(k + 1) * lc]) - m);
    s += e;
    fx += e * tx;
    fy += e * ty;
  }
  const I64 pix = static_cast<I64>(b) * H * W + p;
  flow[pix * 2] = fx / s;
  flow[pix * 2 + 1] = fy / s;
  stats[pix * 2] = m;  // not m + log(s): its float32 rounding at |m| = 1e4 is 5e-4 relative in p_g
  stats[pix * 2 + 1] = s;
}

// ------------------------------------------------------------------------------ backward kernels
template <typename T>
__global__ void __launch_bounds__(kThreads) dense_motion_input_bwd_kernel(
    const T* __restrict__ grad, const T* __restrict__ src, I64 sb, I64 sc, I64 sh,
    I64 sw, const float* __restrict__ kps, const float* __restrict__ kpd, const float* __restrict__ js,
    const float* __restrict__ jd, bool has_jac, bool align_corners, float* __restrict__ dsrc,
    float* __restrict__ partial, int C, int H, int W, int K, int num_blocks, float variance) {
  const int p = blockIdx.x * kThreads + threadIdx.x;
  const bool valid = p < H * W;
  const int g = blockIdx.y;
  const int b = blockIdx.z;
  const I64 HW = static_cast<I64>(H) * W;
  const I64 bk = static_cast<I64>(b) * K + (g > 0 ? g - 1 : 0);
  float zx = 0.f, zy = 0.f;
  if (valid) pixel_grid(p, H, W, zx, zy);
  const Keypoint kp = load_keypoint(kps, kpd, js, jd, bk, has_jac && g > 0);
  float sx = zx, sy = zy;
  if (g > 0) kp.motion(zx, zy, has_jac, sx, sy);

  const T* go = grad + (static_cast<I64>(b) * (K + 1) + g) * (C + 1) * HW + p;
  float gix = 0.f, giy = 0.f;
  if (valid) {
    const Bilinear bl(sx, sy, H, W, align_corners);
    const int x1 = bl.x0 + 1, y1 = bl.y0 + 1;
    const T* s = src + static_cast<I64>(b) * sb;
    float* d = dsrc == nullptr ? nullptr : dsrc + static_cast<I64>(b) * C * HW;
    for (int c = 0; c < C; ++c, s += sc) {
      const float gc = bl.finite ? to_float(go[(c + 1) * HW]) : 0.f;
      const float v00 = bl.in00 ? to_float(s[bl.y0 * sh + bl.x0 * sw]) : 0.f;
      const float v01 = bl.in01 ? to_float(s[bl.y0 * sh + x1 * sw]) : 0.f;
      const float v10 = bl.in10 ? to_float(s[y1 * sh + bl.x0 * sw]) : 0.f;
      const float v11 = bl.in11 ? to_float(s[y1 * sh + x1 * sw]) : 0.f;
      gix += gc * ((v01 - v00) * bl.wy0 + (v11 - v10) * bl.wy1);
      giy += gc * ((v10 - v00) * bl.wx0 + (v11 - v01) * bl.wx1);
      if (d != nullptr) {
        if (bl.in00) atomicAdd(d + bl.y0 * W + bl.x0, gc * (bl.wx0 * bl.wy0));
        if (bl.in01) atomicAdd(d + bl.y0 * W + x1, gc * (bl.wx1 * bl.wy0));
        if (bl.in10) atomicAdd(d + y1 * W + bl.x0, gc * (bl.wx0 * bl.wy1));
        if (bl.in11) atomicAdd(d + y1 * W + x1, gc * (bl.wx1 * bl.wy1));
        d += HW;
      }
    }
  }
  if (g == 0) return;  // block-uniform: the background has no parameters

  const float scale_x = align_corners ? 0.5f * static_cast<float>(W - 1) : 0.5f * static_cast<float>(W);
  const float scale_y = align_corners ? 0.5f * static_cast<float>(H - 1) : 0.5f * static_cast<float>(H);
  const float gx = gix * scale_x;
  const float gy = giy * scale_y;
  const float ox = valid ? zx - kp.kdx : 0.f;
  const float oy = valid ? zy - kp.kdy : 0.f;
  float gh = 0.f, whd = 0.f, whs = 0.f;
  if (valid) {
    gh = to_float(go[0]);
    whd = gh * gaussian(zx, zy, kp.kdx, kp.kdy, variance) / variance;
    whs = gh * gaussian(zx, zy, kp.ksx, kp.ksy, variance) / variance;
  }
  // [sum g (2), sum g (z - kd)^T (4), heat dkp_d (2), heat dkp_s (2)]
  float v[10] = {gx, gy, gx * ox, gx * oy, gy * ox, gy * oy, whd * ox, whd * oy,
                 valid ? whs * (zx - kp.ksx) : 0.f, valid ? whs * (zy - kp.ksy) : 0.f};
  block_sum(v);
  if (threadIdx.x == 0) {
    float sums[8];
    sums[0] = v[0] - v[8];
    sums[1] = v[1] - v[9];
    const float dkd_x = has_jac ? -(kp.a[0] * v[0] + kp.a[2] * v[1]) : -v[0];
    const float dkd_y = has_jac ? -(kp.a[1] * v[0] + kp.a[3] * v[1]) : -v[1];
    sums[2] = dkd_x + v[6];
    sums[3] = dkd_y + v[7];
    for (int i = 0; i < 4; ++i) sums[4 + i] = v[2 + i];
    store_keypoint_grads(partial + (bk * num_blocks + blockIdx.x) * 12, sums, js, jd, bk, has_jac);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) compose_flow_bwd_kernel(
    const float* __restrict__ grad, const T* __restrict__ logits, I64 lb, I64 lc, I64 lh,
    I64 lw, T* __restrict__ dlogits, I64 db, I64 dc, I64 dh, I64 dw,
    const float* __restrict__ flow, const float* __restrict__ stats, const float* __restrict__ kps,
    const float* __restrict__ kpd, const float* __restrict__ js, const float* __restrict__ jd, bool has_jac,
    float* __restrict__ partial, int H, int W, int K, int num_blocks) {
  const int p = blockIdx.x * kThreads + threadIdx.x;
  const bool valid = p < H * W;
  const int g = blockIdx.y;
  const int b = blockIdx.z;
  const I64 bk = static_cast<I64>(b) * K + (g > 0 ? g - 1 : 0);
  const Keypoint kp = load_keypoint(kps, kpd, js, jd, bk, has_jac && g > 0);
  float gx = 0.f, gy = 0.f, ox = 0.f, oy = 0.f;
  if (valid) {
    const int row = p / W, col = p - (p / W) * W;
    float zx, zy;
    pixel_grid(p, H, W, zx, zy);
    float tx = zx, ty = zy;
    if (g > 0) kp.motion(zx, zy, has_jac, tx, ty);
    const I64 pix = static_cast<I64>(b) * H * W + p;
    const float lg = to_float(logits[static_cast<I64>(b) * lb + g * lc + row * lh + col * lw]);
    const float prob = expf(lg - stats[pix * 2]) / stats[pix * 2 + 1];
    const float gfx = grad[pix * 2], gfy = grad[pix * 2 + 1];
    const float dl = prob * ((gfx * tx + gfy * ty) - (gfx * flow[pix * 2] + gfy * flow[pix * 2 + 1]));
    dlogits[static_cast<I64>(b) * db + g * dc + row * dh + col * dw] = from_float<T>(dl);
    gx = prob * gfx;
    gy = prob * gfy;
    ox = zx - kp.kdx;
    oy = zy - kp.kdy;
  }
  if (g == 0) return;  // block-uniform: the background has no parameters

  float v[6] = {gx, gy, gx * ox, gx * oy, gy * ox, gy * oy};
  block_sum(v);
  if (threadIdx.x == 0) {
    float sums[8];
    sums[0] = v[0];
    sums[1] = v[1];
    sums[2] = has_jac ? -(kp.a[0] * v[0] + kp.a[2] * v[1]) : -v[0];
    sums[3] = has_jac ? -(kp.a[1] * v[0] + kp.a[3] * v[1]) : -v[1];
    for (int i = 0; i < 4; ++i) sums[4 + i] = v[2 + i];
    store_keypoint_grads(partial + (bk * num_blocks + blockIdx.x) * 12, sums, js, jd, bk, has_jac);
  }
}

}  // namespace mcc
