// Plain types shared by the host launchers and the kernels, in a form that both nvcc (host and
// device) and NVRTC accept: NVRTC, which compiles the kernels at run time when the compiled
// module is missing (mcc_fast/cuda/runtime/), has no C++ standard library headers.
#pragma once
#ifndef __CUDACC_RTC__
#include <array>
#endif

namespace mcc {

using I64 = long long;  // 64-bit on every platform CUDA supports
static_assert(sizeof(I64) == 8, "mcc_fast needs a 64-bit long long");

#ifdef __CUDACC_RTC__
// Same layout as std::array<T, N> (one T[N] member), for kernel argument structs.
template <typename T, int N>
struct Array {
  T v[N];
  __device__ __forceinline__ const T& operator[](int i) const { return v[i]; }
  __device__ __forceinline__ T& operator[](int i) { return v[i]; }
};
#else
template <typename T, int N>
using Array = std::array<T, N>;
#endif

}  // namespace mcc
