// Thread-count control of the kernels (_core.get_max_threads / _core.set_max_threads).
#include <atomic>
#include <string>

#include "common.h"

namespace gail_robot {
namespace {

// Single-threaded by default: on the 2-core development machine (shared with other jobs) a second
// thread gave 0.74x-1.11x across runs (GAE is bound by cache/memory bandwidth, and the per-call
// work of typical rollouts is below the spawn threshold anyway), so threads are opt-in via
// set_max_threads for large arrays on bigger, idle machines. Results never depend on the count.
std::atomic<int> g_max_threads{1};

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
      "Cap the worker threads one kernel call may use (default 1: never spawn threads).");
  m.def("get_max_threads", &max_threads, "The current cap on worker threads per kernel call.");
}

}  // namespace gail_robot
