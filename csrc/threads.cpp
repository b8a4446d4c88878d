// Thread-count control of the kernels (_core.get_max_threads / _core.set_max_threads).
#include <atomic>

#include "common.h"

namespace gail_robot {
namespace {

int default_threads() {
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

std::atomic<int> g_max_threads{default_threads()};

}  // namespace

int max_threads() { return g_max_threads.load(std::memory_order_relaxed); }

void register_threads(py::module_& m) {
  m.def(
      "set_max_threads",
      [](int n) {
        if (n < 1) throw py::value_error("max_threads should be >= 1, got " + std::to_string(n));
        g_max_threads.store(n, std::memory_order_relaxed);
      },
      py::arg("n"),
      "Cap the worker threads one kernel call may use (default: hardware concurrency; 1 = never thread).");
  m.def("get_max_threads", &max_threads, "The current cap on worker threads per kernel call.");
}

}  // namespace gail_robot
