// Host-side helpers shared by the kernel launchers (*.cu): error checks, dtype codes, stream
// handles. The device helpers live in device_common.cuh (also compiled by NVRTC).
// No torch headers: the Python wrappers pass device pointers, sizes, strides and the stream
// as integers.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "device_common.cuh"

namespace mcc {

// Element type codes shared with mcc_fast/cuda/_common.py (DTYPE_CODES).
enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("mcc_fast CUDA error in ") + what + ": " +
                             cudaGetErrorString(err));
  }
}

inline cudaStream_t as_stream(std::intptr_t stream) {
  return reinterpret_cast<cudaStream_t>(stream);
}

// Calls fn with a null pointer of the element type named by `dtype` (a dispatch helper).
template <typename Fn>
void dispatch_float_types(int dtype, Fn&& fn) {
  switch (dtype) {
    case kFloat32: fn(static_cast<float*>(nullptr)); break;
    case kFloat16: fn(static_cast<__half*>(nullptr)); break;
    case kBFloat16: fn(static_cast<__nv_bfloat16*>(nullptr)); break;
    default: throw std::invalid_argument("mcc_fast: unsupported dtype code " + std::to_string(dtype));
  }
}

}  // namespace mcc
