// pybind11 module `mcc_fast._cuda`: thin bindings over the kernel launchers in csrc/*.cu.
// Every function takes device pointers, sizes, strides and the CUDA stream as integers.
#include <pybind11/pybind11.h>
#include <cuda_runtime.h>

#include "common.h"
#include "vq_search.h"

namespace py = pybind11;

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
  m.def("nearest_code_forward", &mcc::nearest_code_forward, py::arg("z"), py::arg("z_stride_n"),
        py::arg("z_stride_d"), py::arg("codebook"), py::arg("cb_stride_k"), py::arg("cb_stride_d"),
        py::arg("n"), py::arg("d"), py::arg("start"), py::arg("num"), py::arg("dtype"),
        py::arg("indices_out"), py::arg("distances_out"), py::arg("stream"),
        py::call_guard<py::gil_scoped_release>());
  register_warp(m);
  register_dense_motion(m);
}
