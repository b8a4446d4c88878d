// The pybind11 registry of gail_robot._core: it only registers; each kernel lives in its own file.
#include <pybind11/pybind11.h>

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "gail_robot C++ kernels (private; use gail_robot.core)";
}
