// Batched discriminator rewards from logits (logit = log D - log(1 - D), D = P(expert)):
//   gail: softplus(x) = -log(1 - D) >= 0,   airl: x,   neg: -softplus(-x) = log D <= 0.
// softplus uses the stable form max(x, 0) + log1p(exp(-|x|)): exp never overflows and log1p keeps
// full relative precision of the tiny tail, so every finite logit (|x| up to 1e6 and beyond) gives a
// finite, accurate reward in float32 and float64 alike. exp and log1p are the vectorisable versions of
// softplus.h rather than libm's scalar calls.
#include <cmath>
#include <cstring>
#include <string>

#include "common.h"
#include "softplus.h"

namespace gail_robot {
namespace {

enum class Kind { kGail, kAirl, kNeg };

Kind parse_kind(const std::string& kind) {
  if (kind == "gail") return Kind::kGail;
  if (kind == "airl") return Kind::kAirl;
  if (kind == "neg") return Kind::kNeg;
  throw py::value_error("kind should be one of 'gail', 'airl', 'neg', got '" + kind + "'");
}

// One kernel per dtype, not a template, so GAIL_ROBOT_SIMD_CLONES (common.h) can compile it per ISA.
template <typename T>
inline void rewards_loop(const T* __restrict x, T* __restrict out, std::size_t begin, std::size_t end, Kind kind) {
  // gail: max(x, 0) + log1p(exp(-|x|));  neg: min(x, 0) - log1p(exp(-|x|)).
  // Compares and selects only (std::fmax/fmin do not vectorise); a NaN logit gives a NaN reward.
  const T sign = kind == Kind::kNeg ? T(-1) : T(1);
  for (std::size_t i = begin; i < end; ++i) {
    const T xi = x[i];
    const T a = std::fabs(xi);
    const T linear = sign * xi > T(0) ? xi : T(0);
    out[i] = linear + sign * softplus_tail(a);
  }
}

GAIL_ROBOT_SIMD_CLONES
void rewards_kernel_f32(const float* x, float* out, std::size_t begin, std::size_t end, Kind kind) {
  rewards_loop<float>(x, out, begin, end, kind);
}

GAIL_ROBOT_SIMD_CLONES
void rewards_kernel_f64(const double* x, double* out, std::size_t begin, std::size_t end, Kind kind) {
  rewards_loop<double>(x, out, begin, end, kind);
}

template <typename T>
void rewards_kernel(const T* x, T* out, std::size_t begin, std::size_t end, Kind kind) {
  if (kind == Kind::kAirl) {
    std::memcpy(out + begin, x + begin, (end - begin) * sizeof(T));
  } else if constexpr (sizeof(T) == sizeof(float)) {
    rewards_kernel_f32(x, out, begin, end, kind);
  } else {
    rewards_kernel_f64(x, out, begin, end, kind);
  }
}

template <typename T>
void rewards_binding(const CArray<T>& logits, const std::string& kind, CArray<T>& out) {
  const Kind k = parse_kind(kind);
  check_size("out", out.size(), logits.size());
  const std::size_t n = static_cast<std::size_t>(logits.size());
  if (n == 0) return;
  const T* x = logits.data();
  T* y = out.mutable_data();
  py::gil_scoped_release release;
  // ~1 ns per element: threads pay off from some 10^5 elements per thread.
  constexpr std::size_t kMinElementsPerThread = std::size_t{1} << 17;
  parallel_for(n, 16, kMinElementsPerThread,
               [&](std::size_t begin, std::size_t end) { rewards_kernel<T>(x, y, begin, end, k); });
}

template <typename T>
void def_rewards(py::module_& m, const char* name) {
  m.def(name, &rewards_binding<T>, py::arg("logits").noconvert(), py::arg("kind"),
        py::arg("out").noconvert(),
        "Discriminator rewards of kind 'gail' | 'airl' | 'neg' from C-contiguous logits, written into out.");
}

}  // namespace

void register_rewards(py::module_& m) {
  def_rewards<float>(m, "disc_rewards_f32");
  def_rewards<double>(m, "disc_rewards_f64");
}

}  // namespace gail_robot
