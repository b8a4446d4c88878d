// Shared libtorch helpers (see libtorch_backend.hpp).
#include "libtorch_backend.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <mutex>
#include <random>
#include <stdexcept>

namespace gail_robot::detail {

void single_threaded_libtorch() {
  static std::once_flag once;
  std::call_once(once, [] {
    at::set_num_threads(1);
    // Setting the inter-op pool size after libtorch started it throws: keep whatever it has then.
    try {
      at::set_num_interop_threads(1);
    } catch (const std::exception&) {
    }
  });
}

void check_module_widths(const PolicyMeta& meta, const std::function<at::Tensor(const at::Tensor&)>& forward) {
  c10::InferenceMode guard;
  at::Tensor out;
  try {
    out = forward(at::zeros({1, meta.obs_dim}, at::kFloat));
  } catch (const std::exception&) {
    throw std::runtime_error(meta.path + ": the module does not accept (1, " + std::to_string(meta.obs_dim) +
                             ") observations, meta.json's obs_dim (mismatched file)");
  }
  if (out.scalar_type() != at::kFloat || out.dim() != 2 || out.size(0) != 1 || out.size(1) != meta.act_dim) {
    std::string shape;
    for (int64_t s : out.sizes()) shape += (shape.empty() ? "" : ", ") + std::to_string(s);
    throw std::runtime_error(meta.path + ": the module returns a (" + shape + ") " +
                             std::string(c10::toString(out.scalar_type())) + " tensor, meta.json says (1, " +
                             std::to_string(meta.act_dim) + ") float32 (mismatched file)");
  }
}

at::Tensor probe_batch(const PolicyMeta& meta) {
  constexpr int kRows = 64;
  std::mt19937 rng(12345);
  std::uniform_real_distribution<double> u(-4.0, 4.0);
  std::vector<double> mean(static_cast<std::size_t>(meta.obs_dim), 0.0), std(mean.size(), 1.0);
  if (meta.raw.has("obs_mean") && meta.raw.has("obs_var")) {
    for (std::size_t i = 0; i < mean.size(); ++i) {
      mean[i] = meta.raw.at("obs_mean").array.at(i).number_or(0.0);
      std[i] = std::sqrt(meta.raw.at("obs_var").array.at(i).number_or(1.0) + 1e-8);
    }
  }
  at::Tensor batch = at::empty({kRows, meta.obs_dim}, at::kFloat);
  float* p = batch.data_ptr<float>();
  for (int r = 0; r < kRows; ++r) {
    const double scale = r < kRows - 8 ? 1.0 : 10.0;  // the last rows reach past the normalisation clip
    for (std::size_t i = 0; i < mean.size(); ++i)
      *p++ = static_cast<float>(mean[i] + scale * u(rng) * std[i]);
  }
  return batch;
}

}  // namespace gail_robot::detail

namespace gail_robot::detail {

double max_probe_difference(NativeMlp& mlp, const std::function<at::Tensor(const at::Tensor&)>& forward,
                            const PolicyMeta& meta, double* scale) {
  c10::InferenceMode guard;
  const at::Tensor batch = probe_batch(meta);
  const at::Tensor expected = forward(batch).to(at::kFloat).contiguous();
  std::vector<float> action(static_cast<std::size_t>(meta.act_dim));
  double worst = 0.0;
  *scale = 1.0;
  for (int64_t r = 0; r < batch.size(0); ++r) {
    mlp.run(batch.data_ptr<float>() + r * meta.obs_dim, action.data());
    const float* e = expected.data_ptr<float>() + r * meta.act_dim;
    for (int j = 0; j < meta.act_dim; ++j) {
      const double d = std::fabs(static_cast<double>(action[j]) - e[j]);
      worst = std::isnan(d) ? INFINITY : std::max(worst, d);
      *scale = std::max(*scale, std::fabs(static_cast<double>(e[j])));
    }
  }
  return worst;
}

}  // namespace gail_robot::detail
