// The grid-sample warping family (see warp.h). Coordinates follow ATen's CUDA grid sampler
// (GridSampler.cuh) and bilinear upsampling (UpSampleBilinear2d.cu) formula by formula.
//
// Forward: one thread per (b, m, output pixel, channel group); a group is channels
// {g, g + G, g + 2G, ...} so that consecutive threads touch consecutive pixels (NCHW output)
// or consecutive channels (channels-last output). Backward: one thread per (b, m, pixel),
// looping over the channels (the coordinate gradient is a per-pixel reduction).
#include "common.h"
#include "warp.h"

#include <algorithm>
#include <climits>
#include <stdexcept>
#include <type_traits>

namespace mcc {
namespace {
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
__device__ __forceinline__ float source_index(float coord, std::int64_t size_i, int padding, bool align,
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
  std::int64_t i0, i1;
  float l0, l1;
};

// F.interpolate(bilinear) source indices/weights of output index dst (ATen's formula).
__device__ __forceinline__ Lerp resize_coeffs(std::int64_t dst, std::int64_t in_size, float scale, bool align) {
  const float d = static_cast<float>(dst);
  float src = align ? scale * d : scale * (d + 0.5f) - 0.5f;
  if (!align && src < 0.f) src = 0.f;
  Lerp r;
  r.i0 = static_cast<std::int64_t>(src);
  r.i1 = r.i0 < in_size - 1 ? r.i0 + 1 : r.i0;
  r.l1 = src - static_cast<float>(r.i0);
  r.l0 = 1.f - r.l1;
  return r;
}

// Value at (Y, X) of a float32 (h, w) map resized to the output grid (or read directly).
__device__ __forceinline__ float resample(const float* base, std::int64_t Y, std::int64_t X, std::int64_t h,
                                          std::int64_t w, float scale_y, float scale_x, std::int64_t sh,
                                          std::int64_t sw, bool resize, bool align) {
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
  std::int64_t x0, y0;
  float ax, bx, ay, by;
  bool m00, m01, m10, m11;
};

__device__ __forceinline__ Corners bilinear_corners(float ix, float iy, std::int64_t H, std::int64_t W) {
  Corners k;
  const float x0f = floorf(ix), y0f = floorf(iy);
  k.ax = ix - x0f;
  k.bx = (x0f + 1.f) - ix;
  k.ay = iy - y0f;
  k.by = (y0f + 1.f) - iy;
  k.x0 = static_cast<std::int64_t>(x0f);  // |coordinate| < 2^30 after safe_coord
  k.y0 = static_cast<std::int64_t>(y0f);
  const bool mx0 = k.x0 >= 0 && k.x0 < W, mx1 = k.x0 + 1 >= 0 && k.x0 + 1 < W;
  const bool my0 = k.y0 >= 0 && k.y0 < H, my1 = k.y0 + 1 >= 0 && k.y0 + 1 < H;
  k.m00 = my0 && mx0;
  k.m01 = my0 && mx1;
  k.m10 = my1 && mx0;
  k.m11 = my1 && mx1;
  return k;
}

// Coordinates of output pixel (b, m, Y, X) as padded pixel positions.
__device__ __forceinline__ void pixel_coords(const float* flow, const SampleGeometry& g, std::int64_t b,
                                             std::int64_t m, std::int64_t Y, std::int64_t X, bool backward,
                                             float* ix, float* iy, float* mx, float* my) {
  const float* base = flow + b * g.flow_strides[0] + m * g.flow_strides[1];
  const float fx = resample(base, Y, X, g.fh, g.fw, g.flow_scale_y, g.flow_scale_x, g.flow_strides[2],
                            g.flow_strides[3], g.resize_flow, g.align);
  const float fy = resample(base + g.flow_strides[4], Y, X, g.fh, g.fw, g.flow_scale_y, g.flow_scale_x,
                            g.flow_strides[2], g.flow_strides[3], g.resize_flow, g.align);
  *ix = source_index(fx, g.W, g.padding, g.align, backward, mx);
  *iy = source_index(fy, g.H, g.padding, g.align, backward, my);
}

__device__ __forceinline__ float occlusion_at(const float* occ, const SampleGeometry& g, std::int64_t b,
                                              std::int64_t Y, std::int64_t X) {
  return resample(occ + b * g.occ_strides[0], Y, X, g.oh, g.ow, g.occ_scale_y, g.occ_scale_x, g.occ_strides[1],
                  g.occ_strides[2], g.resize_occ, g.align);
}

// ATen rounds with nearbyint (ties to even under the default rounding mode).
__device__ __forceinline__ std::int64_t round_coord(float c) { return static_cast<std::int64_t>(nearbyintf(c)); }

template <typename T>
__global__ void sample_forward_kernel(const T* __restrict__ x, const float* __restrict__ flow,
                                      const float* __restrict__ occ, T* __restrict__ out, const SampleGeometry g,
                                      std::int64_t groups, bool channel_fast) {
  const std::int64_t P = g.Ho * g.Wo;
  const std::int64_t total = g.B * g.M * P * groups;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t w = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; w < total; w += stride) {
    std::int64_t grp, p, bm;
    if (channel_fast) {
      grp = w % groups;
      p = (w / groups) % P;
      bm = w / (groups * P);
    } else {
      p = w % P;
      grp = (w / P) % groups;
      bm = w / (P * groups);
    }
    const std::int64_t b = bm / g.M, m = bm % g.M;
    const std::int64_t Y = p / g.Wo, X = p % g.Wo;
    float ix, iy, mx, my;
    pixel_coords(flow, g, b, m, Y, X, false, &ix, &iy, &mx, &my);
    const float scale = g.has_occ ? occlusion_at(occ, g, b, Y, X) : 1.f;
    const T* xb = x + b * g.x_strides[0];
    T* ob = out + b * g.out_strides[0] + m * g.out_strides[1] + Y * g.out_strides[3] + X * g.out_strides[4];
    if (g.mode == kBilinear) {
      const Corners k = bilinear_corners(ix, iy, g.H, g.W);
      const std::int64_t o00 = k.y0 * g.x_strides[2] + k.x0 * g.x_strides[3];
      const std::int64_t o01 = o00 + g.x_strides[3], o10 = o00 + g.x_strides[2], o11 = o10 + g.x_strides[3];
      const float w00 = k.bx * k.by, w01 = k.ax * k.by, w10 = k.bx * k.ay, w11 = k.ax * k.ay;
      for (std::int64_t c = grp; c < g.C; c += groups) {
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
      const std::int64_t xn = round_coord(ix), yn = round_coord(iy);
      const bool inside = xn >= 0 && xn < g.W && yn >= 0 && yn < g.H;
      const std::int64_t off = yn * g.x_strides[2] + xn * g.x_strides[3];
      for (std::int64_t c = grp; c < g.C; c += groups) {
        float v = inside ? to_float(xb[c * g.x_strides[1] + off]) : 0.f;
        if (g.has_occ) v *= scale;
        ob[c * g.out_strides[2]] = from_float<T>(v);
      }
    }
  }
}

template <typename T>
__global__ void sample_backward_kernel(const T* __restrict__ grad_out, const T* __restrict__ x,
                                       const float* __restrict__ flow, const float* __restrict__ occ,
                                       const SampleGeometry g, float* __restrict__ grad_x, std::int64_t gxs0,
                                       std::int64_t gxs1, std::int64_t gxs2, std::int64_t gxs3,
                                       float* __restrict__ grad_flow, float* __restrict__ grad_occ,
                                       std::int64_t* __restrict__ keys, float* __restrict__ weights) {
  const std::int64_t P = g.Ho * g.Wo;
  const std::int64_t total = g.B * g.M * P;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t sentinel = g.B * g.H * g.W;
  for (std::int64_t q = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < total; q += stride) {
    const std::int64_t p = q % P, bm = q / P;
    const std::int64_t b = bm / g.M, m = bm % g.M;
    const std::int64_t Y = p / g.Wo, X = p % g.Wo;
    float ix, iy, mx, my;
    pixel_coords(flow, g, b, m, Y, X, true, &ix, &iy, &mx, &my);
    const float scale = g.has_occ ? occlusion_at(occ, g, b, Y, X) : 1.f;
    const T* go = grad_out + b * g.out_strides[0] + m * g.out_strides[1] + Y * g.out_strides[3] +
                  X * g.out_strides[4];
    const T* xb = x + b * g.x_strides[0];
    float* gxb = grad_x != nullptr ? grad_x + b * gxs0 : nullptr;
    const std::int64_t tbase = b * g.H * g.W;
    if (g.mode == kBilinear) {
      const Corners k = bilinear_corners(ix, iy, g.H, g.W);
      const float w00 = k.bx * k.by, w01 = k.ax * k.by, w10 = k.bx * k.ay, w11 = k.ax * k.ay;
      const std::int64_t o00 = k.y0 * g.x_strides[2] + k.x0 * g.x_strides[3];
      const std::int64_t o01 = o00 + g.x_strides[3], o10 = o00 + g.x_strides[2], o11 = o10 + g.x_strides[3];
      const std::int64_t d00 = k.y0 * gxs2 + k.x0 * gxs3;
      const std::int64_t d01 = d00 + gxs3, d10 = d00 + gxs2, d11 = d10 + gxs3;
      const bool need_values = grad_flow != nullptr || grad_occ != nullptr;
      float gix = 0.f, giy = 0.f, gval = 0.f;
      for (std::int64_t c = 0; c < g.C; ++c) {
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
        const std::int64_t t00 = tbase + k.y0 * g.W + k.x0;
        std::int64_t* kk = keys + q * 4;
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
      const std::int64_t xn = round_coord(ix), yn = round_coord(iy);
      const bool inside = xn >= 0 && xn < g.W && yn >= 0 && yn < g.H;
      float gval = 0.f;
      for (std::int64_t c = 0; c < g.C; ++c) {
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

template <typename T>
__global__ void gather_input_grad_kernel(const std::int64_t* __restrict__ bounds, const std::int64_t* __restrict__ perm,
                                         const float* __restrict__ weights, int entries,
                                         const T* __restrict__ grad_out, const SampleGeometry g, T* __restrict__ grad_x,
                                         std::int64_t gxs0, std::int64_t gxs1, std::int64_t gxs2, std::int64_t gxs3,
                                         bool channel_fast) {
  const std::int64_t HW = g.H * g.W;
  const std::int64_t T_ = g.B * HW;
  const std::int64_t total = T_ * g.C;
  const std::int64_t P = g.Ho * g.Wo;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t w = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; w < total; w += stride) {
    std::int64_t t, c;
    if (channel_fast) {
      c = w % g.C;
      t = w / g.C;
    } else {
      t = w % T_;
      c = w / T_;
    }
    float acc = 0.f;
    const std::int64_t end = bounds[t + 1];
    for (std::int64_t e = bounds[t]; e < end; ++e) {
      const std::int64_t src = perm[e];
      const std::int64_t q = src / entries;
      const std::int64_t p = q % P, bm = q / P;
      const std::int64_t b = bm / g.M, m = bm % g.M;
      const T* go = grad_out + b * g.out_strides[0] + m * g.out_strides[1] + c * g.out_strides[2] +
                    (p / g.Wo) * g.out_strides[3] + (p % g.Wo) * g.out_strides[4];
      acc += weights[src] * to_float(*go);
    }
    const std::int64_t n = t / HW, r = t % HW;
    grad_x[n * gxs0 + c * gxs1 + (r / g.W) * gxs2 + (r % g.W) * gxs3] = from_float<T>(acc);
  }
}

__global__ void resize_backward_axis_kernel(const float* __restrict__ src, std::int64_t ss0, std::int64_t ss1,
                                            std::int64_t ss2, std::int64_t ss3, float* __restrict__ dst,
                                            std::int64_t ds0, std::int64_t ds1, std::int64_t ds2, std::int64_t ds3,
                                            std::int64_t B, std::int64_t A, std::int64_t lo, std::int64_t E,
                                            std::int64_t hi, float scale, float inv_scale, std::int64_t window,
                                            bool align) {
  const std::int64_t total = B * A * lo * E;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t o = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; o < total; o += stride) {
    const std::int64_t e = o % E;
    std::int64_t r = o / E;
    const std::int64_t j = r % lo;
    r /= lo;
    const std::int64_t a = r % A, b = r / A;
    const float jf = static_cast<float>(j);
    const float est = align ? (jf - 1.f) * inv_scale : (jf - 0.5f) * inv_scale - 0.5f;
    const std::int64_t start = std::max<std::int64_t>(static_cast<std::int64_t>(floorf(est)) - 2, 0);
    const std::int64_t stop = std::min<std::int64_t>(start + window, hi);
    const float* s = src + b * ss0 + a * ss1 + e * ss3;
    float acc = 0.f;
    for (std::int64_t xh = start; xh < stop; ++xh) {
      const Lerp l = resize_coeffs(xh, lo, scale, align);
      if (l.i0 != j && l.i1 != j) continue;
      const float wgt = (l.i0 == j ? l.l0 : 0.f) + (l.i1 == j ? l.l1 : 0.f);
      acc += wgt * s[xh * ss2];
    }
    dst[b * ds0 + a * ds1 + j * ds2 + e * ds3] = acc;
  }
}

// [host-emulation end]

unsigned grid_for(std::int64_t total) {
  const std::int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::min<std::int64_t>(std::max<std::int64_t>(blocks, 1), INT_MAX));
}

}  // namespace

void sample_forward(std::intptr_t x, std::intptr_t flow, std::intptr_t occ, std::intptr_t out,
                    const SampleGeometry& g, int dtype, std::intptr_t stream) {
  const std::int64_t groups = (g.C + kChannelsPerThread - 1) / kChannelsPerThread;
  const std::int64_t total = g.B * g.M * g.Ho * g.Wo * groups;
  if (total == 0) return;
  const bool channel_fast = g.out_strides[2] == 1 && g.C > 1;
  dispatch_float_types(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    sample_forward_kernel<T><<<grid_for(total), kThreads, 0, as_stream(stream)>>>(
        reinterpret_cast<const T*>(x), reinterpret_cast<const float*>(flow), reinterpret_cast<const float*>(occ),
        reinterpret_cast<T*>(out), g, groups, channel_fast);
  });
  check_cuda(cudaGetLastError(), "sample_forward launch");
}

void sample_backward(std::intptr_t grad_out, std::intptr_t x, std::intptr_t flow, std::intptr_t occ,
                     const SampleGeometry& g, std::intptr_t grad_x, std::array<std::int64_t, 4> gx_strides,
                     std::intptr_t grad_flow, std::intptr_t grad_occ, std::intptr_t keys, std::intptr_t weights,
                     int dtype, std::intptr_t stream) {
  const std::int64_t total = g.B * g.M * g.Ho * g.Wo;
  if (total == 0) return;
  if (grad_occ != 0 && g.M != 1) throw std::invalid_argument("sample_backward: grad_occ needs M == 1");
  dispatch_float_types(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    sample_backward_kernel<T><<<grid_for(total), kThreads, 0, as_stream(stream)>>>(
        reinterpret_cast<const T*>(grad_out), reinterpret_cast<const T*>(x), reinterpret_cast<const float*>(flow),
        reinterpret_cast<const float*>(occ), g, reinterpret_cast<float*>(grad_x), gx_strides[0], gx_strides[1],
        gx_strides[2], gx_strides[3], reinterpret_cast<float*>(grad_flow), reinterpret_cast<float*>(grad_occ),
        reinterpret_cast<std::int64_t*>(keys), reinterpret_cast<float*>(weights));
  });
  check_cuda(cudaGetLastError(), "sample_backward launch");
}

void gather_input_grad(std::intptr_t bounds, std::intptr_t perm, std::intptr_t weights, int entries,
                       std::intptr_t grad_out, const SampleGeometry& g, std::intptr_t grad_x,
                       std::array<std::int64_t, 4> gx_strides, int dtype, std::intptr_t stream) {
  const std::int64_t total = g.B * g.H * g.W * g.C;
  if (total == 0) return;
  if (entries != 1 && entries != 4) throw std::invalid_argument("gather_input_grad: entries must be 1 or 4");
  const bool channel_fast = gx_strides[1] == 1 && g.C > 1;
  dispatch_float_types(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    gather_input_grad_kernel<T><<<grid_for(total), kThreads, 0, as_stream(stream)>>>(
        reinterpret_cast<const std::int64_t*>(bounds), reinterpret_cast<const std::int64_t*>(perm),
        reinterpret_cast<const float*>(weights), entries, reinterpret_cast<const T*>(grad_out), g,
        reinterpret_cast<T*>(grad_x), gx_strides[0], gx_strides[1], gx_strides[2], gx_strides[3], channel_fast);
  });
  check_cuda(cudaGetLastError(), "gather_input_grad launch");
}

void resize_backward_axis(std::intptr_t src, std::array<std::int64_t, 4> src_strides, std::intptr_t dst,
                          std::array<std::int64_t, 4> dst_strides, std::int64_t B, std::int64_t A, std::int64_t lo,
                          std::int64_t E, std::int64_t hi, float scale, float inv_scale, std::int64_t window,
                          bool align, std::intptr_t stream) {
  const std::int64_t total = B * A * lo * E;
  if (total == 0) return;
  resize_backward_axis_kernel<<<grid_for(total), kThreads, 0, as_stream(stream)>>>(
      reinterpret_cast<const float*>(src), src_strides[0], src_strides[1], src_strides[2], src_strides[3],
      reinterpret_cast<float*>(dst), dst_strides[0], dst_strides[1], dst_strides[2], dst_strides[3], B, A, lo, E,
      hi, scale, inv_scale, window, align);
  check_cuda(cudaGetLastError(), "resize_backward_axis launch");
}

}  // namespace mcc
