// Device helpers shared by the kernels (*_kernels.cuh): element conversions, constants, min/max.
// Compiled by nvcc through the .cu launchers and at run time by NVRTC (mcc_fast/cuda/runtime/),
// so it uses no C++ standard library and no host-only macros (INFINITY, NAN, FLT_MAX).
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include "kernel_types.h"

#define MCC_INF __int_as_float(0x7f800000)  // +inf (INFINITY is a host macro)
#define MCC_NAN __int_as_float(0x7fc00000)  // the quiet NaN NAN expands to

namespace mcc {

template <typename T>
__device__ __forceinline__ T min_of(T a, T b) { return b < a ? b : a; }
template <typename T>
__device__ __forceinline__ T max_of(T a, T b) { return a < b ? b : a; }

template <typename T> __device__ __forceinline__ float to_float(T v);
template <> __device__ __forceinline__ float to_float<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}

}  // namespace mcc
