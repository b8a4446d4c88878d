// Batched discriminator rewards from logits (logit = log D - log(1 - D), D = P(expert)):
//   gail: softplus(x) = -log(1 - D) >= 0,   airl: x,   neg: -softplus(-x) = log D <= 0.
// softplus uses the stable form max(x, 0) + log1p(exp(-|x|)): exp never overflows and log1p keeps
// full relative precision of the tiny tail, so every finite logit (|x| up to 1e6 and beyond) gives a
// finite, accurate reward in float32 and float64 alike.
#include <cmath>
#include <cstring>
#include <string>

#include "common.h"

namespace gail_robot {
namespace {

enum class Kind { kGail, kAirl, kNeg };

Kind parse_kind(const std::string& kind) {
  if (kind == "gail") return Kind::kGail;
  if (kind == "airl") return Kind::kAirl;
  if (kind == "neg") return Kind::kNeg;
  throw py::value_error("kind should be one of 'gail', 'airl', 'neg', got '" + kind + "'");
}

template <typename T>
inline T log1p_exp_neg_abs(T x) {
  return std::log1p(std::exp(-std::fabs(x)));
}

template <typename T>
void rewards_kernel(const T* __restrict x, T* __restrict out, std::size_t begin, std::size_t end, Kind kind) {
  switch (kind) {
    case Kind::kGail:
      for (std::size_t i = begin; i < end; ++i) out[i] = std::fmax(x[i], T(0)) + log1p_exp_neg_abs(x[i]);
      break;
    case Kind::kNeg:
      for (std::size_t i = begin; i < end; ++i) out[i] = std::fmin(x[i], T(0)) - log1p_exp_neg_abs(x[i]);
      break;
    case Kind::kAirl:
      std::memcpy(out + begin, x + begin, (end - begin) * sizeof(T));
      break;
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
  // exp + log1p cost ~10 ns per element, so threads pay off from a few thousand elements per thread.
  constexpr std::size_t kMinElementsPerThread = std::size_t{1} << 14;
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
