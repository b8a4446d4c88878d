// The pybind11 registry of gail_robot._core: it only registers; each kernel lives in its own file.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace gail_robot {
void register_gae(py::module_& m);
void register_rewards(py::module_& m);
void register_normalizer(py::module_& m);
void register_threads(py::module_& m);
void register_mlp(py::module_& m);
}  // namespace gail_robot

PYBIND11_MODULE(_core, m) {
  m.doc() = "gail_robot C++ kernels (private; use gail_robot.core)";
  gail_robot::register_gae(m);
  gail_robot::register_rewards(m);
  gail_robot::register_normalizer(m);
  gail_robot::register_threads(m);
  gail_robot::register_mlp(m);
}
