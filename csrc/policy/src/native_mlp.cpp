// Kernels of NativeMlp. Every Linear output is b[j] + x[0] W[0, j] + x[1] W[1, j] + ... in increasing k,
// float32, no FMA contraction (-ffp-contract=off): the order of gail_robot.core.mlp_forward (csrc/mlp.cpp),
// so a row's action never depends on the ISA the clones pick. libtorch's GEMM sums in another order: the
// two agree to float32 round-off (the load-time probe check and the tests bound it).
//
// Transcendentals use exp_neg from csrc/softplus.h (branch-free, vectorisable, < 2 ulp): libm's scalar
// tanhf at ~10 ns per element would cost more than the matrix products of a 2x256 MLP.
#include "native_mlp.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "../../softplus.h"

#if defined(__x86_64__) && defined(__linux__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define GAIL_ROBOT_POLICY_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef GAIL_ROBOT_POLICY_CLONES
#define GAIL_ROBOT_POLICY_CLONES
#endif

namespace gail_robot::detail {

namespace {

constexpr int kTile = 64;  // outputs kept in registers across the whole k loop (8 AVX2 / 4 AVX-512 vectors)

// out = b + x W for one row, W (n_in, n_out) row-major.
GAIL_ROBOT_POLICY_CLONES
void linear_row(const float* __restrict x, const float* __restrict w, const float* __restrict b, int n_in,
                int n_out, float* __restrict out) {
  int j0 = 0;
  for (; j0 + kTile <= n_out; j0 += kTile) {
    float acc[kTile];
    for (int t = 0; t < kTile; ++t) acc[t] = b[j0 + t];
    for (int k = 0; k < n_in; ++k) {
      const float xk = x[k];
      const float* __restrict wk = w + static_cast<std::size_t>(k) * n_out + j0;
      for (int t = 0; t < kTile; ++t) acc[t] += xk * wk[t];
    }
    for (int t = 0; t < kTile; ++t) out[j0 + t] = acc[t];
  }
  if (j0 == n_out) return;
  for (int j = j0; j < n_out; ++j) out[j] = b[j];
  for (int k = 0; k < n_in; ++k) {
    const float xk = x[k];
    const float* __restrict wk = w + static_cast<std::size_t>(k) * n_out;
    for (int j = j0; j < n_out; ++j) out[j] += xk * wk[j];
  }
}

inline float exp_neg_clamped(float a) {  // exp(-a) for a >= 0
  return exp_neg(a > SoftplusTraits<float>::kClamp ? SoftplusTraits<float>::kClamp : a);
}

GAIL_ROBOT_POLICY_CLONES
void tanh_inplace(float* h, int n) {
  for (int j = 0; j < n; ++j) {
    const float a = std::fabs(h[j]);
    const float e = exp_neg_clamped(2.0f * a);  // tanh|x| = (1 - e) / (1 + e), e = exp(-2|x|)
    const float t = (1.0f - e) / (1.0f + e);
    h[j] = h[j] < 0.0f ? -t : t;
  }
}

GAIL_ROBOT_POLICY_CLONES
void elu_inplace(float* h, int n) {
  for (int j = 0; j < n; ++j) {
    const float e = exp_neg_clamped(-std::min(h[j], 0.0f));
    h[j] = h[j] > 0.0f ? h[j] : e - 1.0f;
  }
}

GAIL_ROBOT_POLICY_CLONES
void silu_inplace(float* h, int n) {
  for (int j = 0; j < n; ++j) {
    const float e = exp_neg_clamped(std::fabs(h[j]));  // sigmoid(x) = 1/(1+e) (x >= 0), e/(1+e) (x < 0)
    const float s = (h[j] >= 0.0f ? 1.0f : e) / (1.0f + e);
    h[j] = h[j] * s;
  }
}

void activate(Activation act, float* h, int n) {
  switch (act) {
    case Activation::kTanh: tanh_inplace(h, n); break;
    case Activation::kRelu:
      for (int j = 0; j < n; ++j) h[j] = h[j] > 0.0f ? h[j] : 0.0f;
      break;
    case Activation::kElu: elu_inplace(h, n); break;
    case Activation::kSilu: silu_inplace(h, n); break;
  }
}

}  // namespace

NativeMlp::NativeMlp(NativeMlpSpec spec) : spec_(std::move(spec)) {
  const std::size_t obs_dim = spec_.obs_mean.size(), act_dim = spec_.action_low.size();
  if (obs_dim == 0 || spec_.obs_std.size() != obs_dim) throw std::runtime_error("native MLP: bad normalisation");
  if (act_dim == 0 || spec_.action_high.size() != act_dim || spec_.action_range.size() != act_dim)
    throw std::runtime_error("native MLP: bad action bounds");
  if (spec_.layers.empty() || spec_.activations.size() + 1 != spec_.layers.size())
    throw std::runtime_error("native MLP: needs Linear layers with one activation between each two");
  int width = static_cast<int>(obs_dim), widest = width;
  for (const NativeLayer& l : spec_.layers) {
    if (l.n_in != width || l.w.size() != static_cast<std::size_t>(l.n_in) * l.n_out ||
        l.b.size() != static_cast<std::size_t>(l.n_out))
      throw std::runtime_error("native MLP: layer shapes do not chain");
    width = l.n_out;
    widest = std::max(widest, width);
  }
  if (spec_.tanh_head ? width < static_cast<int>(act_dim) : width != static_cast<int>(act_dim))
    throw std::runtime_error("native MLP: the last layer does not give act_dim outputs");
  h0_.assign(static_cast<std::size_t>(widest), 0.0f);
  h1_.assign(static_cast<std::size_t>(widest), 0.0f);
}

void NativeMlp::run(const float* obs, float* action) noexcept {
  const int obs_dim = this->obs_dim(), act_dim = this->act_dim();
  float* x = h0_.data();
  for (int i = 0; i < obs_dim; ++i) {  // normalize_torch: float64, one rounding to float32 at the end
    const double z = (static_cast<double>(obs[i]) - spec_.obs_mean[i]) / spec_.obs_std[i];
    x[i] = static_cast<float>(std::min(std::max(z, -spec_.obs_clip), spec_.obs_clip));
  }
  float* y = h1_.data();
  const std::size_t n_layers = spec_.layers.size();
  for (std::size_t l = 0; l < n_layers; ++l) {
    const NativeLayer& layer = spec_.layers[l];
    linear_row(x, layer.w.data(), layer.b.data(), layer.n_in, layer.n_out, y);
    if (l + 1 < n_layers) activate(spec_.activations[l], y, layer.n_out);
    std::swap(x, y);
  }
  if (spec_.tanh_head) tanh_inplace(x, act_dim);
  for (int j = 0; j < act_dim; ++j) {
    const float a = std::min(std::max(x[j], -1.0f), 1.0f);
    const float v = spec_.action_low[j] + (a + 1.0f) * 0.5f * spec_.action_range[j];
    action[j] = std::min(std::max(v, spec_.action_low[j]), spec_.action_high[j]);
  }
}

}  // namespace gail_robot::detail
