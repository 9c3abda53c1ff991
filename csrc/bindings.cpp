// pybind11 module `mcc_fast._cuda`: thin bindings over the kernel launchers in csrc/*.cu.
// Every function takes device pointers, sizes, strides and the CUDA stream as integers.
#include <pybind11/pybind11.h>
#include <cuda_runtime.h>

#include "common.h"
#include "warp.h"

namespace py = pybind11;

void register_vq(py::module_& m);            // vq_bindings.cpp
void register_warp(py::module_& m);          // warp_bindings.cpp
void register_dense_motion(py::module_& m);  // dense_motion_bindings.cpp

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "mcc_fast CUDA kernels (pointer-level API; use mcc_fast.ops instead)";
  m.attr("architectures") = MCC_FAST_CUDA_ARCHS;
  m.def("device_count", []() {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) { cudaGetLastError(); return 0; }
    return count;
  }, "Number of CUDA devices visible to the statically linked runtime (0 when none).");
  m.def("kernel_image_error", []() -> py::object {
    const std::string err = mcc::kernel_image_error();
    if (err.empty()) return py::none();
    return py::str(err);
  }, "None when the kernels can run on the current CUDA device, else the CUDA error launching them would give.");
  register_vq(m);
  register_warp(m);
  register_dense_motion(m);
}
