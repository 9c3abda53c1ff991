// Bindings for the fused grid-sample / warp kernels (warp.cu). Pointer-level API; use
// mcc_fast.ops.grid_sample / warp / warp_many instead.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "warp.h"

namespace py = pybind11;

void register_warp(py::module_& m) {
  using mcc::SampleGeometry;
  py::class_<SampleGeometry>(m, "SampleGeometry", "Shapes, strides (elements) and options of one warp problem")
      .def(py::init<>())
      .def_readwrite("B", &SampleGeometry::B)
      .def_readwrite("C", &SampleGeometry::C)
      .def_readwrite("H", &SampleGeometry::H)
      .def_readwrite("W", &SampleGeometry::W)
      .def_readwrite("x_strides", &SampleGeometry::x_strides)
      .def_readwrite("M", &SampleGeometry::M)
      .def_readwrite("fh", &SampleGeometry::fh)
      .def_readwrite("fw", &SampleGeometry::fw)
      .def_readwrite("flow_strides", &SampleGeometry::flow_strides)
      .def_readwrite("has_occ", &SampleGeometry::has_occ)
      .def_readwrite("oh", &SampleGeometry::oh)
      .def_readwrite("ow", &SampleGeometry::ow)
      .def_readwrite("occ_strides", &SampleGeometry::occ_strides)
      .def_readwrite("Ho", &SampleGeometry::Ho)
      .def_readwrite("Wo", &SampleGeometry::Wo)
      .def_readwrite("out_strides", &SampleGeometry::out_strides)
      .def_readwrite("mode", &SampleGeometry::mode)
      .def_readwrite("padding", &SampleGeometry::padding)
      .def_readwrite("align", &SampleGeometry::align)
      .def_readwrite("resize_flow", &SampleGeometry::resize_flow)
      .def_readwrite("resize_occ", &SampleGeometry::resize_occ)
      .def_readwrite("flow_scale_y", &SampleGeometry::flow_scale_y)
      .def_readwrite("flow_scale_x", &SampleGeometry::flow_scale_x)
      .def_readwrite("occ_scale_y", &SampleGeometry::occ_scale_y)
      .def_readwrite("occ_scale_x", &SampleGeometry::occ_scale_x);
  m.def("sample_forward", &mcc::sample_forward, py::arg("x"), py::arg("flow"), py::arg("occ"), py::arg("out"),
        py::arg("geometry"), py::arg("dtype"), py::arg("stream"), py::call_guard<py::gil_scoped_release>());
  m.def("sample_backward", &mcc::sample_backward, py::arg("grad_out"), py::arg("x"), py::arg("flow"),
        py::arg("occ"), py::arg("geometry"), py::arg("grad_x"), py::arg("gx_strides"), py::arg("grad_flow"),
        py::arg("grad_occ"), py::arg("keys"), py::arg("weights"), py::arg("dtype"), py::arg("stream"),
        py::call_guard<py::gil_scoped_release>());
  m.def("gather_input_grad", &mcc::gather_input_grad, py::arg("bounds"), py::arg("perm"), py::arg("weights"),
        py::arg("entries"), py::arg("grad_out"), py::arg("geometry"), py::arg("grad_x"), py::arg("gx_strides"),
        py::arg("dtype"), py::arg("stream"), py::call_guard<py::gil_scoped_release>());
  m.def("resize_backward_axis", &mcc::resize_backward_axis, py::arg("src"), py::arg("src_strides"),
        py::arg("dst"), py::arg("dst_strides"), py::arg("B"), py::arg("A"), py::arg("lo"), py::arg("E"),
        py::arg("hi"), py::arg("scale"), py::arg("inv_scale"), py::arg("window"), py::arg("align"),
        py::arg("stream"), py::call_guard<py::gil_scoped_release>());
}
