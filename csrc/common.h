// Shared helpers of the gail_robot._core kernels: array aliases, size checks, the thread pool policy.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstddef>
#include <string>
#include <thread>
#include <vector>

namespace gail_robot {

namespace py = pybind11;

// C-contiguous arrays only, bound with .noconvert(): the Python wrapper (gail_robot/core.py) converts
// and allocates; a wrong dtype or layout reaching C++ is a programming error and pybind11 rejects the
// call with TypeError instead of passing a converted copy (which, for an output, would drop the result).
template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

// Raises ValueError("<name>.size should be <want>, got <got>").
inline void check_size(const char* name, py::ssize_t got, py::ssize_t want) {
  if (got != want) {
    throw py::value_error(std::string(name) + ".size should be " + std::to_string(want) + ", got " +
                          std::to_string(got));
  }
}

// Raises ValueError("<name>.ndim should be <want>, got <got>").
inline void check_ndim(const char* name, py::ssize_t got, py::ssize_t want) {
  if (got != want) {
    throw py::value_error(std::string(name) + ".ndim should be " + std::to_string(want) + ", got " +
                          std::to_string(got));
  }
}

// Compiles a (non-template) kernel three times, baseline x86-64, AVX2 and AVX-512F, and picks the clone
// once at load time from the CPU's features (an ifunc): the wheel stays portable (no -march) yet uses
// wide vectors where they exist. The clones give bit-identical results: no FMA contraction
// (-ffp-contract=off), no approximate instructions (checked against a -DGAIL_ROBOT_NO_CLONES build).
#if defined(__x86_64__) && defined(__linux__) && defined(__has_attribute) && !defined(GAIL_ROBOT_NO_CLONES)
#if __has_attribute(target_clones)
#define GAIL_ROBOT_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef GAIL_ROBOT_SIMD_CLONES
#define GAIL_ROBOT_SIMD_CLONES
#endif

// Upper bound on worker threads per kernel call (set from Python via _core.set_max_threads).
int max_threads();

// Runs fn(begin, end) over [0, n) in contiguous chunks. Chunk boundaries are multiples of `align`
// (so threads never share a cache line of output). Threads are used only when every thread gets at
// least `min_items_per_thread` items: spawning costs ~10-50 us, which must stay small against the work.
// Must be called with the GIL released; fn must not throw and must not touch Python objects.
template <typename Fn>
void parallel_for(std::size_t n, std::size_t align, std::size_t min_items_per_thread, const Fn& fn) {
  std::size_t workers = std::min<std::size_t>(static_cast<std::size_t>(max_threads()),
                                              n / std::max<std::size_t>(min_items_per_thread, 1));
  workers = std::min(workers, (n + align - 1) / align);
  if (workers <= 1) {
    fn(std::size_t{0}, n);
    return;
  }
  // Equal chunks rounded up to `align`; the last one takes the remainder.
  std::size_t chunk = (n + workers - 1) / workers;
  chunk = (chunk + align - 1) / align * align;
  std::vector<std::thread> pool;
  pool.reserve(workers);
  std::size_t begin = chunk;  // the calling thread does the first chunk itself
  while (begin < n) {
    const std::size_t end = std::min(n, begin + chunk);
    pool.emplace_back([&fn, begin, end] { fn(begin, end); });
    begin = end;
  }
  fn(std::size_t{0}, std::min(n, chunk));
  for (auto& th : pool) th.join();
}

}  // namespace gail_robot
