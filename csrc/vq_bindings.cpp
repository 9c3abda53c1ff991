// Bindings for the nearest-code search / vector quantisation kernels (vq_search.cu).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "vq_search.h"

namespace py = pybind11;

void register_vq(py::module_& m) {
  using py::arg;
  m.attr("vq_max_segments") = mcc::kVqMaxSegments;
  m.def("vq_search_blocks", &mcc::vq_search_blocks, arg("n"));
  m.def("vq_segsum_chunk_rows", &mcc::vq_segsum_chunk_rows);
  m.def("vq_search_forward", &mcc::vq_search_forward, arg("z"), arg("z_stride_n"), arg("z_stride_d"), arg("n"),
        arg("start"), arg("num"), arg("codebook"), arg("cb_stride_k"), arg("cb_stride_d"), arg("codes"), arg("d"),
        arg("dtype"), arg("esq"), arg("indices_out"), arg("distances_out"), arg("fused"), arg("tensor_cores"),
        arg("beta"), arg("zq_out"), arg("counts32"), arg("counts64"), arg("parts"), arg("loss"), arg("perplexity"),
        arg("usage"), arg("stream"), py::call_guard<py::gil_scoped_release>());
  m.def("vq_backward_rows", &mcc::vq_backward_rows, arg("z"), arg("z_stride_n"), arg("z_stride_d"),
        arg("grad_zq"), arg("g_stride_n"), arg("g_stride_d"), arg("n"), arg("codebook"), arg("cb_stride_k"),
        arg("cb_stride_d"), arg("d"), arg("dtype"), arg("indices"), arg("grad_loss"), arg("beta"),
        arg("grad_z_out"), arg("atomic"), arg("grad_cb32"), arg("stream"), py::call_guard<py::gil_scoped_release>());
  m.def("vq_codebook_grad_sorted", &mcc::vq_codebook_grad_sorted, arg("z"), arg("z_stride_n"), arg("z_stride_d"),
        arg("n"), arg("codebook"), arg("cb_stride_k"), arg("cb_stride_d"), arg("codes"), arg("d"), arg("dtype"),
        arg("sorted_codes"), arg("order"), arg("bounds"), arg("grad_loss"), arg("head"), arg("tail"), arg("inner"),
        arg("grad_cb"), arg("stream"), py::call_guard<py::gil_scoped_release>());
}
