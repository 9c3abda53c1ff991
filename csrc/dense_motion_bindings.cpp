// Bindings for the fused dense-motion kernels (dense_motion.cu): pointer-level launchers.
#include <pybind11/pybind11.h>

#include "dense_motion.h"

namespace py = pybind11;

void register_dense_motion(py::module_& m) {
  using py::arg;
  m.attr("dense_motion_block_pixels") = mcc::dense_motion_block_pixels();
  m.def("keypoint_heatmaps_forward", &mcc::keypoint_heatmaps_forward, arg("kp"), arg("batch"), arg("num_kp"),
        arg("height"), arg("width"), arg("variance"), arg("out_dtype"), arg("out"), arg("stream"),
        py::call_guard<py::gil_scoped_release>());
  m.def("sparse_motions_forward", &mcc::sparse_motions_forward, arg("kp_source"), arg("kp_driving"),
        arg("jac_source"), arg("jac_driving"), arg("has_jac"), arg("batch"), arg("num_kp"), arg("height"),
        arg("width"), arg("out_dtype"), arg("out"), arg("stream"), py::call_guard<py::gil_scoped_release>());
  m.def("dense_motion_input_forward", &mcc::dense_motion_input_forward, arg("source"), arg("stride_b"),
        arg("stride_c"), arg("stride_h"), arg("stride_w"), arg("batch"), arg("channels"), arg("height"), arg("width"),
        arg("dtype"), arg("kp_source"), arg("kp_driving"), arg("jac_source"), arg("jac_driving"), arg("has_jac"),
        arg("num_kp"), arg("align_corners"), arg("variance"), arg("out"), arg("stream"),
        py::call_guard<py::gil_scoped_release>());
  m.def("dense_motion_input_backward", &mcc::dense_motion_input_backward, arg("grad"), arg("source"),
        arg("stride_b"), arg("stride_c"), arg("stride_h"), arg("stride_w"), arg("batch"), arg("channels"),
        arg("height"), arg("width"), arg("dtype"), arg("kp_source"), arg("kp_driving"), arg("jac_source"),
        arg("jac_driving"), arg("has_jac"), arg("num_kp"), arg("align_corners"), arg("variance"),
        arg("source_grad"), arg("partial"), arg("num_blocks"), arg("stream"),
        py::call_guard<py::gil_scoped_release>());
  m.def("compose_flow_forward", &mcc::compose_flow_forward, arg("logits"), arg("stride_b"), arg("stride_c"),
        arg("stride_h"), arg("stride_w"), arg("batch"), arg("groups"), arg("height"), arg("width"), arg("dtype"),
        arg("kp_source"), arg("kp_driving"), arg("jac_source"), arg("jac_driving"), arg("has_jac"), arg("flow"),
        arg("stats"), arg("stream"), py::call_guard<py::gil_scoped_release>());
  m.def("compose_flow_backward", &mcc::compose_flow_backward, arg("grad"), arg("logits"), arg("stride_b"),
        arg("stride_c"), arg("stride_h"), arg("stride_w"), arg("dlogits"), arg("dstride_b"), arg("dstride_c"),
        arg("dstride_h"), arg("dstride_w"), arg("batch"), arg("groups"), arg("height"), arg("width"), arg("dtype"),
        arg("flow"), arg("stats"), arg("kp_source"), arg("kp_driving"), arg("jac_source"), arg("jac_driving"),
        arg("has_jac"), arg("partial"), arg("num_blocks"), arg("stream"), py::call_guard<py::gil_scoped_release>());
}
