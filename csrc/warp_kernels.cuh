// Kernels of the grid-sample warping family (see warp.h), launched by warp.cu or compiled at run
// time by NVRTC (mcc_fast/cuda/runtime/warp.py). Coordinates follow ATen's CUDA grid sampler
// (GridSampler.cuh) and bilinear upsampling (UpSampleBilinear2d.cu) formula by formula.
//
// Forward: one thread per (b, m, output pixel, channel group); a group is channels
// {g, g + G, g + 2G, ...} so that consecutive threads touch consecutive pixels (NCHW output)
// or consecutive channels (channels-last output). Backward: one thread per (b, m, pixel),
// looping over the channels (the coordinate gradient is a per-pixel reduction).
#pragma once
#include "device_common.cuh"
#include "warp_types.h"

namespace mcc {

// [host-emulation begin] Everything from here to [host-emulation end] is also compiled as plain
// C++ by tests/test_warp.py and run on the CPU by one thread (every kernel is a grid-stride
// loop), to check the kernels' logic where there is no GPU: keep it free of launches.

constexpr int kThreads = 256;
constexpr int kChannelsPerThread = 4;

__device__ __forceinline__ float unnormalize(float coord, float size, bool align) {
  return align ? (coord + 1.f) * 0.5f * (size - 1.f) : ((coord + 1.f) * size - 1.f) * 0.5f;
}

// NaN, inf and huge coordinates -> -100 (outside), as ATen's safe_downgrade_to_int_range.
__device__ __forceinline__ float safe_coord(float c) {
  return (c > -1073741824.f && c < 1073741824.f) ? c : -100.f;
}

__device__ __forceinline__ float clip_coord(float c, float size) {
  c = c > 0.f ? c : 0.f;  // NaN -> 0, like fmaxf
  return c < size - 1.f ? c : size - 1.f;
}

__device__ __forceinline__ float clip_coord_grad(float c, float size, float* grad) {
  const float lim = size - 1.f;
  if (c <= 0.f) { *grad = 0.f; return 0.f; }
  if (c >= lim) { *grad = 0.f; return lim; }
  *grad = 1.f;
  return c;
}

__device__ __forceinline__ float reflect_coord(float c, float twice_low, float twice_high, float* grad) {
  if (twice_low == twice_high) { *grad = 0.f; return 0.f; }
  const float lo = twice_low * 0.5f;
  const float span = (twice_high - twice_low) * 0.5f;
  float d = c - lo;
  float sign = 1.f;
  if (d < 0.f) { d = -d; sign = -1.f; }
  const float extra = fmodf(d, span);
  const int flips = static_cast<int>(floorf(d / span));  // as ATen (saturating conversion on the GPU)
  const bool odd = flips % 2 != 0;
  *grad = odd ? -sign : sign;
  return odd ? span - extra + lo : extra + lo;
}

// Grid coordinate -> padded pixel coordinate; *mult = d coordinate / d grid (backward formula
// when `backward`: NaN is not clipped to 0 there, exactly as ATen).
__device__ __forceinline__ float source_index(float coord, I64 size_i, int padding, bool align,
                                              bool backward, float* mult) {
  const float size = static_cast<float>(size_i);
  float c = unnormalize(coord, size, align);
  float m = align ? (size - 1.f) * 0.5f : size * 0.5f;
  if (padding == kBorder) {
    if (backward) {
      float g;
      c = clip_coord_grad(c, size, &g);
      m *= g;
    } else {
      c = clip_coord(c, size);
    }
  } else if (padding == kReflection) {
    float g1;
    c = align ? reflect_coord(c, 0.f, 2.f * (size - 1.f), &g1) : reflect_coord(c, -1.f, 2.f * size - 1.f, &g1);
    if (backward) {
      float g2;
      c = clip_coord_grad(c, size, &g2);
      m = m * g1 * g2;
    } else {
      c = clip_coord(c, size);
    }
  }
  *mult = m;
  return safe_coord(c);
}

struct Lerp {
  I64 i0, i1;
  float l0, l1;
};

// F.interpolate(bilinear) source indices/weights of output index dst (ATen's formula).
__device__ __forceinline__ Lerp resize_coeffs(I64 dst, I64 in_size, float scale, bool align) {
  const float d = static_cast<float>(dst);
  float src = align ? scale * d : scale * (d + 0.5f) - 0.5f;
  if (!align && src < 0.f) src = 0.f;
  Lerp r;
  r.i0 = static_cast<I64>(src);
  r.i1 = r.i0 < in_size - 1 ? r.i0 + 1 : r.i0;
  r.l1 = src - static_cast<float>(r.i0);
  r.l0 = 1.f - r.l1;
  return r;
}

// Value at (Y, X) of a float32 (h, w) map resized to the output grid (or read directly).
__device__ __forceinline__ float resample(const float* base, I64 Y, I64 X, I64 h,
                                          I64 w, float scale_y, float scale_x, I64 sh,
                                          I64 sw, bool resize, bool align) {
  if (!resize) return base[Y * sh + X * sw];
  const Lerp ly = resize_coeffs(Y, h, scale_y, align);
  const Lerp lx = resize_coeffs(X, w, scale_x, align);
  const float v00 = base[ly.i0 * sh + lx.i0 * sw];
  const float v01 = base[ly.i0 * sh + lx.i1 * sw];
  const float v10 = base[ly.i1 * sh + lx.i0 * sw];
  const float v11 = base[ly.i1 * sh + lx.i1 * sw];
  return ly.l0 * (lx.l0 * v00 + lx.l1 * v01) + ly.l1 * (lx.l0 * v10 + lx.l1 * v11);
}

struct Corners {
  I64 x0, y0;
  float ax, bx, ay, by;
  bool m00, m01, m10, m11;
};

__device__ __forceinline__ Corners bilinear_corners(float ix, float iy, I64 H, I64 W) {
  Corners k;
  const float x0f = floorf(ix), y0f = floorf(iy);
  k.ax = ix - x0f;
  k.bx = (x0f + 1.f) - ix;
  k.ay = iy - y0f;
  k.by = (y0f + 1.f) - iy;
  k.x0 = static_cast<I64>(x0f);  // |coordinate| < 2^30 after safe_coord
  k.y0 = static_cast<I64>(y0f);
  const bool mx0 = k.x0 >= 0 && k.x0 < W, mx1 = k.x0 + 1 >= 0 && k.x0 + 1 < W;
  const bool my0 = k.y0 >= 0 && k.y0 < H, my1 = k.y0 + 1 >= 0 && k.y0 + 1 < H;
  k.m00 = my0 && mx0;
  k.m01 = my0 && mx1;
  k.m10 = my1 && mx0;
  k.m11 = my1 && mx1;
  return k;
}

// Coordinates of output pixel (b, m, Y, X) as padded pixel positions.
__device__ __forceinline__ void pixel_coords(const float* flow, const SampleGeometry& g, I64 b,
                                             I64 m, I64 Y, I64 X, bool backward,
                                             float* ix, float* iy, float* mx, float* my) {
  const float* base = flow + b * g.flow_strides[0] + m * g.flow_strides[1];
  const float fx = resample(base, Y, X, g.fh, g.fw, g.flow_scale_y, g.flow_scale_x, g.flow_strides[2],
                            g.flow_strides[3], g.resize_flow, g.align);
  const float fy = resample(base + g.flow_strides[4], Y, X, g.fh, g.fw, g.flow_scale_y, g.flow_scale_x,
                            g.flow_strides[2], g.flow_strides[3], g.resize_flow, g.align);
  *ix = source_index(fx, g.W, g.padding, g.align, backward, mx);
  *iy = source_index(fy, g.H, g.padding, g.align, backward, my);
}

__device__ __forceinline__ float occlusion_at(const float* occ, const SampleGeometry& g, I64 b,
                                              I64 Y, I64 X) {
  return resample(occ + b * g.occ_strides[0], Y, X, g.oh, g.ow, g.occ_scale_y, g.occ_scale_x, g.occ_strides[1],
                  g.occ_strides[2], g.resize_occ, g.align);
}

// ATen rounds with nearbyint (ties to even under the default rounding mode).
__device__ __forceinline__ I64 round_coord(float c) { return static_cast<I64>(nearbyintf(c)); }

// The kernels take the type of their work-item index, Idx: int when every index they
// decompose stays below kIndex32Limit (the launchers check), else I64. Only the divisions and
// remainders use Idx (64-bit ones are slow on GPUs); element offsets are always I64.
constexpr I64 kIndex32Limit = I64{1} << 30;  // so that index + grid stride cannot overflow an int

template <typename Idx>
__device__ __forceinline__ Idx first_index() {
  return static_cast<Idx>(blockIdx.x) * static_cast<Idx>(blockDim.x) + static_cast<Idx>(threadIdx.x);
}
template <typename Idx>
__device__ __forceinline__ Idx grid_stride() { return static_cast<Idx>(gridDim.x) * static_cast<Idx>(blockDim.x); }

template <typename T, typename Idx>
__global__ void sample_forward_kernel(const T* __restrict__ x, const float* __restrict__ flow,
                                      const float* __restrict__ occ, T* __restrict__ out, const SampleGeometry g,
                                      I64 groups, bool channel_fast) {
  const Idx P = static_cast<Idx>(g.Ho * g.Wo), Wo = static_cast<Idx>(g.Wo), M = static_cast<Idx>(g.M);
  const Idx G = static_cast<Idx>(groups);
  const Idx total = static_cast<Idx>(g.B * g.M * g.Ho * g.Wo * groups);
  for (Idx w = first_index<Idx>(); w < total; w += grid_stride<Idx>()) {
    Idx grp, p, bm;
    if (channel_fast) {
      grp = w % G;
      p = (w / G) % P;
      bm = w / (G * P);
    } else {
      p = w % P;
      grp = (w / P) % G;
      bm = w / (P * G);
    }
    const I64 b = bm / M, m = bm % M;
    const I64 Y = p / Wo, X = p % Wo;
    float ix, iy, mx, my;
    pixel_coords(flow, g, b, m, Y, X, false, &ix, &iy, &mx, &my);
    const float scale = g.has_occ ? occlusion_at(occ, g, b, Y, X) : 1.f;
    const T* xb = x + b * g.x_strides[0];
    T* ob = out + b * g.out_strides[0] + m * g.out_strides[1] + Y * g.out_strides[3] + X * g.out_strides[4];
    if (g.mode == kBilinear) {
      const Corners k = bilinear_corners(ix, iy, g.H, g.W);
      const I64 o00 = k.y0 * g.x_strides[2] + k.x0 * g.x_strides[3];
      const I64 o01 = o00 + g.x_strides[3], o10 = o00 + g.x_strides[2], o11 = o10 + g.x_strides[3];
      const float w00 = k.bx * k.by, w01 = k.ax * k.by, w10 = k.bx * k.ay, w11 = k.ax * k.ay;
      for (I64 c = grp; c < g.C; c += groups) {
        const T* xc = xb + c * g.x_strides[1];
        float acc = 0.f;
        if (k.m00) acc += to_float(xc[o00]) * w00;
        if (k.m01) acc += to_float(xc[o01]) * w01;
        if (k.m10) acc += to_float(xc[o10]) * w10;
        if (k.m11) acc += to_float(xc[o11]) * w11;
        if (g.has_occ) acc *= scale;
        ob[c * g.out_strides[2]] = from_float<T>(acc);
      }
    } else {
      const I64 xn = round_coord(ix), yn = round_coord(iy);
      const bool inside = xn >= 0 && xn < g.W && yn >= 0 && yn < g.H;
      const I64 off = yn * g.x_strides[2] + xn * g.x_strides[3];
      for (I64 c = grp; c < g.C; c += groups) {
        float v = inside ? to_float(xb[c * g.x_strides[1] + off]) : 0.f;
        if (g.has_occ) v *= scale;
        ob[c * g.out_strides[2]] = from_float<T>(v);
      }
    }
  }
}

template <typename T, typename Idx>
__global__ void sample_backward_kernel(const T* __restrict__ grad_out, const T* __restrict__ x,
                                       const float* __restrict__ flow, const float* __restrict__ occ,
                                       const SampleGeometry g, float* __restrict__ grad_x, I64 gxs0,
                                       I64 gxs1, I64 gxs2, I64 gxs3,
                                       float* __restrict__ grad_flow, float* __restrict__ grad_occ,
                                       I64* __restrict__ keys, float* __restrict__ weights) {
  const Idx P = static_cast<Idx>(g.Ho * g.Wo), Wo = static_cast<Idx>(g.Wo), M = static_cast<Idx>(g.M);
  const Idx total = static_cast<Idx>(g.B * g.M * g.Ho * g.Wo);
  const I64 sentinel = g.B * g.H * g.W;
  for (Idx qi = first_index<Idx>(); qi < total; qi += grid_stride<Idx>()) {
    const I64 q = qi;  // offsets (q * 4, ...) in 64 bits
    const Idx p = qi % P, bm = qi / P;
    const I64 b = bm / M, m = bm % M;
    const I64 Y = p / Wo, X = p % Wo;
    float ix, iy, mx, my;
    pixel_coords(flow, g, b, m, Y, X, true, &ix, &iy, &mx, &my);
    const float scale = g.has_occ ? occlusion_at(occ, g, b, Y, X) : 1.f;
    const T* go = grad_out + b * g.out_strides[0] + m * g.out_strides[1] + Y * g.out_strides[3] +
                  X * g.out_strides[4];
    const T* xb = x + b * g.x_strides[0];
    float* gxb = grad_x != nullptr ? grad_x + b * gxs0 : nullptr;
    const I64 tbase = b * g.H * g.W;
    if (g.mode == kBilinear) {
      const Corners k = bilinear_corners(ix, iy, g.H, g.W);
      const float w00 = k.bx * k.by, w01 = k.ax * k.by, w10 = k.bx * k.ay, w11 = k.ax * k.ay;
      const I64 o00 = k.y0 * g.x_strides[2] + k.x0 * g.x_strides[3];
      const I64 o01 = o00 + g.x_strides[3], o10 = o00 + g.x_strides[2], o11 = o10 + g.x_strides[3];
      const I64 d00 = k.y0 * gxs2 + k.x0 * gxs3;
      const I64 d01 = d00 + gxs3, d10 = d00 + gxs2, d11 = d10 + gxs3;
      const bool need_values = grad_flow != nullptr || grad_occ != nullptr;
      float gix = 0.f, giy = 0.f, gval = 0.f;
      for (I64 c = 0; c < g.C; ++c) {
        const float gr = to_float(go[c * g.out_strides[2]]);
        const float gs = g.has_occ ? gr * scale : gr;
        if (gxb != nullptr) {
          float* gc = gxb + c * gxs1;
          if (k.m00) atomicAdd(gc + d00, gs * w00);
          if (k.m01) atomicAdd(gc + d01, gs * w01);
          if (k.m10) atomicAdd(gc + d10, gs * w10);
          if (k.m11) atomicAdd(gc + d11, gs * w11);
        }
        if (need_values) {
          const T* xc = xb + c * g.x_strides[1];
          const float v00 = k.m00 ? to_float(xc[o00]) : 0.f;
          const float v01 = k.m01 ? to_float(xc[o01]) : 0.f;
          const float v10 = k.m10 ? to_float(xc[o10]) : 0.f;
          const float v11 = k.m11 ? to_float(xc[o11]) : 0.f;
          gix += gs * (k.by * (v01 - v00) + k.ay * (v11 - v10));
          giy += gs * (k.bx * (v10 - v00) + k.ax * (v11 - v01));
          gval += gr * (v00 * w00 + v01 * w01 + v10 * w10 + v11 * w11);
        }
      }
      if (keys != nullptr) {
        const I64 t00 = tbase + k.y0 * g.W + k.x0;
        I64* kk = keys + q * 4;
        float* ww = weights + q * 4;
        kk[0] = k.m00 ? t00 : sentinel;
        kk[1] = k.m01 ? t00 + 1 : sentinel;
        kk[2] = k.m10 ? t00 + g.W : sentinel;
        kk[3] = k.m11 ? t00 + g.W + 1 : sentinel;
        ww[0] = w00 * scale;
        ww[1] = w01 * scale;
        ww[2] = w10 * scale;
        ww[3] = w11 * scale;
      }
      if (grad_flow != nullptr) {
        grad_flow[q * 2] = gix * mx;
        grad_flow[q * 2 + 1] = giy * my;
      }
      if (grad_occ != nullptr) grad_occ[q] = gval;  // occlusion: M == 1, so q is (b, Y, X)
    } else {
      const I64 xn = round_coord(ix), yn = round_coord(iy);
      const bool inside = xn >= 0 && xn < g.W && yn >= 0 && yn < g.H;
      float gval = 0.f;
      for (I64 c = 0; c < g.C; ++c) {
        const float gr = to_float(go[c * g.out_strides[2]]);
        if (gxb != nullptr && inside) atomicAdd(gxb + c * gxs1 + yn * gxs2 + xn * gxs3, g.has_occ ? gr * scale : gr);
        if (grad_occ != nullptr && inside) {
          gval += gr * to_float(xb[c * g.x_strides[1] + yn * g.x_strides[2] + xn * g.x_strides[3]]);
        }
      }
      if (keys != nullptr) {
        keys[q] = inside ? tbase + yn * g.W + xn : sentinel;
        weights[q] = scale;
      }
      if (grad_flow != nullptr) {
        grad_flow[q * 2] = 0.f;
        grad_flow[q * 2 + 1] = 0.f;
      }
      if (grad_occ != nullptr) grad_occ[q] = gval;
    }
  }
}

template <typename T, typename Idx>
__global__ void gather_input_grad_kernel(const I64* __restrict__ bounds, const I64* __restrict__ perm,
                                         const float* __restrict__ weights, int entries,
                                         const T* __restrict__ grad_out, const SampleGeometry g, T* __restrict__ grad_x,
                                         I64 gxs0, I64 gxs1, I64 gxs2, I64 gxs3,
                                         bool channel_fast) {
  const Idx HW = static_cast<Idx>(g.H * g.W), Wi = static_cast<Idx>(g.W), C = static_cast<Idx>(g.C);
  const Idx T_ = static_cast<Idx>(g.B * g.H * g.W);
  const Idx total = static_cast<Idx>(g.B * g.H * g.W * g.C);
  const Idx P = static_cast<Idx>(g.Ho * g.Wo), Wo = static_cast<Idx>(g.Wo), M = static_cast<Idx>(g.M);
  const Idx E = static_cast<Idx>(entries);
  for (Idx w = first_index<Idx>(); w < total; w += grid_stride<Idx>()) {
    Idx t, c;
    if (channel_fast) {
      c = w % C;
      t = w / C;
    } else {
      t = w % T_;
      c = w / T_;
    }
    float acc = 0.f;
    const I64 end = bounds[t + 1];
    for (I64 e = bounds[t]; e < end; ++e) {
      const Idx src = static_cast<Idx>(perm[e]);
      const Idx q = src / E;
      const Idx p = q % P, bm = q / P;
      const I64 b = bm / M, m = bm % M;
      const T* go = grad_out + b * g.out_strides[0] + m * g.out_strides[1] + c * g.out_strides[2] +
                    static_cast<I64>(p / Wo) * g.out_strides[3] + static_cast<I64>(p % Wo) * g.out_strides[4];
      acc += weights[src] * to_float(*go);
    }
    const Idx n = t / HW, r = t % HW;
    grad_x[n * gxs0 + c * gxs1 + (r / Wi) * gxs2 + (r % Wi) * gxs3] = from_float<T>(acc);
  }
}

template <typename Idx>
__global__ void resize_backward_axis_kernel(const float* __restrict__ src, I64 ss0, I64 ss1,
                                            I64 ss2, I64 ss3, float* __restrict__ dst,
                                            I64 ds0, I64 ds1, I64 ds2, I64 ds3,
                                            I64 B, I64 A, I64 lo, I64 E,
                                            I64 hi, float scale, float inv_scale, I64 window,
                                            bool align) {
  const Idx total = static_cast<Idx>(B * A * lo * E);
  const Idx Ei = static_cast<Idx>(E), loi = static_cast<Idx>(lo), Ai = static_cast<Idx>(A);
  for (Idx o = first_index<Idx>(); o < total; o += grid_stride<Idx>()) {
    const I64 e = o % Ei;
    Idx r = o / Ei;
    const I64 j = r % loi;
    r /= loi;
    const I64 a = r % Ai, b = r / Ai;
    const float jf = static_cast<float>(j);
    const float est = align ? (jf - 1.f) * inv_scale : (jf - 0.5f) * inv_scale - 0.5f;
    const I64 start = max_of<I64>(static_cast<I64>(floorf(est)) - 2, 0);
    const I64 stop = min_of<I64>(start + window, hi);
    const float* s = src + b * ss0 + a * ss1 + e * ss3;
    float acc = 0.f;
    for (I64 xh = start; xh < stop; ++xh) {
      const Lerp l = resize_coeffs(xh, lo, scale, align);
      if (l.i0 != j && l.i1 != j) continue;
      const float wgt = (l.i0 == j ? l.l0 : 0.f) + (l.i1 == j ? l.l1 : 0.f);
      acc += wgt * s[xh * ss2];
    }
    dst[b * ds0 + a * ds1 + j * ds2 + e * ds3] = acc;
  }
}

// [host-emulation end]

}  // namespace mcc
