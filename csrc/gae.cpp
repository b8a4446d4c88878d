// Generalised advantage estimation over time-major (T, N) buffers (docs/DESIGN.md §2).
//
//   delta[t] = r[t] + gamma * (1 - term[t]) * next_v[t] - v[t]
//   adv[t]   = delta[t] + gamma * lam * (1 - (term[t] | trunc[t])) * adv[t+1],   adv[T] = 0
//   ret[t]   = adv[t] + v[t]
//
// The recurrence runs backwards over t; the N envs of one step are independent and contiguous, so
// the inner loop over envs vectorises and the previous row of `adv` is the carry (no scratch buffer).
// Large N is split into column blocks across threads.
#include <cstdint>

#include "common.h"

namespace gail_robot {
namespace {

// One time step for envs [n0, n1). `next_adv` is adv[t+1] (nullptr at the last step). Flags are
// NumPy bools (one byte, 0 or 1). A terminated step ignores next_values entirely (select, not a
// multiply), so garbage such as NaN there cannot leak into the result.
template <typename T>
inline void gae_step(const T* __restrict r, const T* __restrict v, const T* __restrict nv,
                     const std::uint8_t* __restrict term, const std::uint8_t* __restrict trunc,
                     const T* __restrict next_adv, T* __restrict adv, T* __restrict ret, std::size_t n0,
                     std::size_t n1, T gamma, T gamma_lam) {
  if (next_adv == nullptr) {
    for (std::size_t n = n0; n < n1; ++n) {
      const T next_value = nv[n];  // loaded unconditionally so the select if-converts and vectorises
      const T boot = (term[n] != 0) ? T(0) : next_value;
      const T a = r[n] + gamma * boot - v[n];
      adv[n] = a;
      ret[n] = a + v[n];
    }
    return;
  }
  for (std::size_t n = n0; n < n1; ++n) {
    const T next_value = nv[n];
    // Bool conditions and a select of constants only: GCC if-converts this (a select around the
    // multiply would not be speculated under -ftrapping-math, and the loop would stay scalar).
    const bool terminal = term[n] != 0;
    const bool cut = (term[n] | trunc[n]) != 0;
    const T boot = terminal ? T(0) : next_value;
    const T trace = cut ? T(0) : gamma_lam;
    const T a = r[n] + gamma * boot - v[n] + trace * next_adv[n];
    adv[n] = a;
    ret[n] = a + v[n];
  }
}

// The backward pass of G adjacent envs [n, n + G) with the carries in registers. For narrow blocks
// the row loop below would run its scalar epilogue and round-trip every carry through adv[t+1] on
// each step; G independent chains with a compile-time width unroll (and SLP-vectorise) instead.
template <typename T, std::size_t G>
inline void gae_group(const T* r, const T* v, const T* nv, const std::uint8_t* term, const std::uint8_t* trunc,
                      T* adv, T* ret, std::size_t steps, std::size_t envs, std::size_t n, T gamma, T gamma_lam) {
  T carry[G] = {};
  // The last step has no successor: its trace is 0 (peeled so the loop below carries no extra select).
  T trace_of_last = T(0);
  for (std::size_t t = steps; t-- > 0;) {
    const std::size_t row = t * envs + n;
    for (std::size_t g = 0; g < G; ++g) {
      const std::size_t i = row + g;
      const T next_value = nv[i];
      const bool terminal = term[i] != 0;
      const bool cut = (term[i] | trunc[i]) != 0;
      const T boot = terminal ? T(0) : next_value;
      const T trace = cut ? T(0) : trace_of_last;
      // Same operations in the same order as gae_step (at the last step, 0 * 0 adds +0).
      const T a = r[i] + gamma * boot - v[i] + trace * carry[g];
      carry[g] = a;
      adv[i] = a;
      ret[i] = a + v[i];
    }
    trace_of_last = gamma_lam;
  }
}

// The whole backward pass for envs [n0, n1).
template <typename T>
inline void gae_columns(const T* r, const T* v, const T* nv, const std::uint8_t* term, const std::uint8_t* trunc,
                        T* adv, T* ret, std::size_t steps, std::size_t envs, std::size_t n0, std::size_t n1,
                        T gamma, T gamma_lam) {
  constexpr std::size_t kNarrow = 16;  // below this width, register-carried groups beat the row loop
  if (n1 - n0 < kNarrow) {
    std::size_t n = n0;
    for (; n + 8 <= n1; n += 8) gae_group<T, 8>(r, v, nv, term, trunc, adv, ret, steps, envs, n, gamma, gamma_lam);
    for (; n + 4 <= n1; n += 4) gae_group<T, 4>(r, v, nv, term, trunc, adv, ret, steps, envs, n, gamma, gamma_lam);
    for (; n < n1; ++n) gae_group<T, 1>(r, v, nv, term, trunc, adv, ret, steps, envs, n, gamma, gamma_lam);
    return;
  }
  for (std::size_t t = steps; t-- > 0;) {
    const std::size_t row = t * envs;
    const T* next_adv = (t + 1 == steps) ? nullptr : adv + row + envs;
    gae_step<T>(r + row, v + row, nv + row, term + row, trunc + row, next_adv, adv + row, ret + row, n0, n1, gamma,
                gamma_lam);
  }
}

GAIL_ROBOT_SIMD_CLONES
void gae_columns_f32(const float* r, const float* v, const float* nv, const std::uint8_t* term,
                     const std::uint8_t* trunc, float* adv, float* ret, std::size_t steps, std::size_t envs,
                     std::size_t n0, std::size_t n1, float gamma, float gamma_lam) {
  gae_columns<float>(r, v, nv, term, trunc, adv, ret, steps, envs, n0, n1, gamma, gamma_lam);
}

GAIL_ROBOT_SIMD_CLONES
void gae_columns_f64(const double* r, const double* v, const double* nv, const std::uint8_t* term,
                     const std::uint8_t* trunc, double* adv, double* ret, std::size_t steps, std::size_t envs,
                     std::size_t n0, std::size_t n1, double gamma, double gamma_lam) {
  gae_columns<double>(r, v, nv, term, trunc, adv, ret, steps, envs, n0, n1, gamma, gamma_lam);
}

template <typename T>
void gae_kernel(const T* r, const T* v, const T* nv, const std::uint8_t* term, const std::uint8_t* trunc,
                T* adv, T* ret, std::size_t steps, std::size_t envs, T gamma, T gamma_lam) {
  // Blocks of 16 envs keep each thread's slice of a row on its own cache lines.
  constexpr std::size_t kAlign = 16;
  // Below ~64k elements per thread the spawn cost is not repaid.
  constexpr std::size_t kMinElementsPerThread = std::size_t{1} << 16;
  const std::size_t min_envs = std::max<std::size_t>(1, kMinElementsPerThread / steps);
  parallel_for(envs, kAlign, min_envs, [&](std::size_t n0, std::size_t n1) {
    if constexpr (sizeof(T) == sizeof(float)) {
      gae_columns_f32(r, v, nv, term, trunc, adv, ret, steps, envs, n0, n1, gamma, gamma_lam);
    } else {
      gae_columns_f64(r, v, nv, term, trunc, adv, ret, steps, envs, n0, n1, gamma, gamma_lam);
    }
  });
}

template <typename T>
void gae_binding(const CArray<T>& rewards, const CArray<T>& values, const CArray<T>& next_values,
                 const CArray<bool>& terminated, const CArray<bool>& truncated, double gamma, double lam,
                 CArray<T>& advantages, CArray<T>& returns) {
  check_ndim("rewards", rewards.ndim(), 2);
  const py::ssize_t steps = rewards.shape(0);
  const py::ssize_t envs = rewards.shape(1);
  const py::ssize_t size = steps * envs;
  check_size("values", values.size(), size);
  check_size("next_values", next_values.size(), size);
  check_size("terminated", terminated.size(), size);
  check_size("truncated", truncated.size(), size);
  check_size("advantages", advantages.size(), size);
  check_size("returns", returns.size(), size);
  if (size == 0) return;
  const T* r = rewards.data();
  const T* v = values.data();
  const T* nv = next_values.data();
  const auto* term = reinterpret_cast<const std::uint8_t*>(terminated.data());
  const auto* trunc = reinterpret_cast<const std::uint8_t*>(truncated.data());
  T* adv = advantages.mutable_data();
  T* ret = returns.mutable_data();
  py::gil_scoped_release release;
  gae_kernel<T>(r, v, nv, term, trunc, adv, ret, static_cast<std::size_t>(steps), static_cast<std::size_t>(envs),
                static_cast<T>(gamma), static_cast<T>(gamma * lam));
}

template <typename T>
void def_gae(py::module_& m, const char* name) {
  // noconvert: pybind11 must never hand the kernel a converted temporary (a copied output
  // would silently lose the result); the Python wrapper converts inputs before the call.
  m.def(name, &gae_binding<T>, py::arg("rewards").noconvert(), py::arg("values").noconvert(),
        py::arg("next_values").noconvert(), py::arg("terminated").noconvert(), py::arg("truncated").noconvert(),
        py::arg("gamma"), py::arg("lam"), py::arg("advantages").noconvert(), py::arg("returns").noconvert(),
        "GAE on C-contiguous time-major (T, N) buffers; writes advantages and returns in place.");
}

}  // namespace

void register_gae(py::module_& m) {
  def_gae<float>(m, "gae_f32");
  def_gae<double>(m, "gae_f64");
}

}  // namespace gail_robot
