// Bindings for the fused dense-motion kernels (dense_motion.cu).
#include <pybind11/pybind11.h>

namespace py = pybind11;

void register_dense_motion(py::module_& m) { (void)m; }
