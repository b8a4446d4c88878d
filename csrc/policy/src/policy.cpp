// gail_robot::Policy: loading (format chosen by the file) and act(), the refusal rule for non-finite
// values and the FP mode of the call (docs/DESIGN.md §5).
#include <gail_robot/policy.hpp>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define GAIL_ROBOT_POLICY_MXCSR 1
#endif

#include "backend.hpp"

namespace gail_robot {

namespace {

// Sets flush-to-zero and denormals-are-zero for the scope of one act() and restores the caller's mode:
// a denormal operand costs ~100 cycles on x86 (microcode assist), and a long-running control thread
// should not depend on whether its weights or inputs happen to be tiny. Measured (docs/DESIGN.md §5.1): a
// 2x256 policy with denormal weights runs 19-72x slower unflushed; ordinary weights show no cost.
class DenormalScope {
 public:
  explicit DenormalScope(bool enable) noexcept {
#ifdef GAIL_ROBOT_POLICY_MXCSR
    if (enable) {
      saved_ = _mm_getcsr();
      _mm_setcsr(saved_ | 0x8040u);  // FTZ (bit 15) | DAZ (bit 6)
      active_ = true;
    }
#else
    (void)enable;
#endif
  }
  ~DenormalScope() {
#ifdef GAIL_ROBOT_POLICY_MXCSR
    if (active_) _mm_setcsr(saved_);
#endif
  }
  DenormalScope(const DenormalScope&) = delete;
  DenormalScope& operator=(const DenormalScope&) = delete;

 private:
  unsigned saved_ = 0;
  bool active_ = false;
};

bool all_finite(const float* x, int n) noexcept {
  bool ok = true;
  for (int i = 0; i < n; ++i) ok &= std::isfinite(x[i]);
  return ok;
}

}  // namespace

struct Policy::Impl {
  PolicyMeta meta;
  PolicyOptions options;
  std::unique_ptr<detail::Backend> backend;
  std::vector<float> out, held, rest;  // backend output, the action handed out last, the middle of the bounds
  std::uint64_t refused = 0;
};

Policy::Policy(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Policy::Policy(Policy&&) noexcept = default;
Policy& Policy::operator=(Policy&&) noexcept = default;
Policy::~Policy() = default;

Policy Policy::load(const std::string& path, const PolicyOptions& options) {
  if (options.backend != "auto" && options.backend != "native" && options.backend != "libtorch")
    throw std::runtime_error("unknown backend '" + options.backend + "' (auto, native or libtorch)");
  const detail::Archive archive = detail::read_archive(path);
  auto impl = std::make_unique<Impl>();
  impl->meta = detail::parse_meta(path, archive.meta_json, archive.format);
  impl->options = options;
  impl->backend = archive.format == "pt2" ? detail::load_pt2(impl->meta, archive, options)
                                          : detail::load_torchscript(impl->meta, options);
  const auto act_n = static_cast<std::size_t>(impl->meta.act_dim);
  impl->out.assign(act_n, 0.0f);
  impl->rest.assign(act_n, 0.0f);
  for (std::size_t j = 0; j < act_n; ++j) {
    const double lo = impl->meta.action_low[j], hi = impl->meta.action_high[j];
    // The middle of finite bounds; 0 clipped into them otherwise.
    const double mid = std::isfinite(lo) && std::isfinite(hi) ? 0.5 * (lo + hi) : std::min(std::max(0.0, lo), hi);
    impl->rest[j] = static_cast<float>(mid);
  }
  impl->held = impl->rest;
  Policy policy(std::move(impl));
  // Warm-up: libtorch's profiling executor specialises on the first calls, and every path touches all
  // pages of its weights once. The refusal state is reset afterwards.
  std::vector<float> obs(static_cast<std::size_t>(policy.obs_dim()), 0.0f);
  if (policy.impl_->meta.raw.has("obs_mean")) {
    const json::Value& mean = policy.impl_->meta.raw.at("obs_mean");
    for (std::size_t i = 0; i < obs.size() && i < mean.array.size(); ++i)
      obs[i] = static_cast<float>(mean.array[i].number_or(0.0));
  }
  std::vector<float> action(act_n);
  for (int i = 0; i < std::max(1, options.warmup_calls); ++i) {
    if (!policy.act(obs.data(), action.data()))
      throw std::runtime_error(path + ": the module fails on its own mean observation (corrupt weights?)");
  }
  policy.reset();
  return policy;
}

int Policy::obs_dim() const noexcept { return impl_->meta.obs_dim; }
int Policy::act_dim() const noexcept { return impl_->meta.act_dim; }
const PolicyMeta& Policy::meta() const noexcept { return impl_->meta; }
const std::string& Policy::backend() const noexcept { return impl_->backend->name(); }
bool Policy::allocation_free() const noexcept { return impl_->backend->allocation_free(); }
std::uint64_t Policy::refused() const noexcept { return impl_->refused; }

void Policy::reset() noexcept {
  std::copy(impl_->rest.begin(), impl_->rest.end(), impl_->held.begin());
  impl_->refused = 0;
}

bool Policy::act(const float* obs, float* action) noexcept {
  Impl& s = *impl_;
  const int act_dim = s.meta.act_dim;
  bool ok = all_finite(obs, s.meta.obs_dim);
  if (ok) {
    DenormalScope ftz(s.options.flush_denormals);
    ok = s.backend->run(obs, s.out.data()) && all_finite(s.out.data(), act_dim);
  }
  if (ok) std::copy(s.out.begin(), s.out.end(), s.held.begin());
  else ++s.refused;
  std::copy(s.held.begin(), s.held.end(), action);
  return ok;
}

bool Policy::act(const float* obs, std::size_t obs_size, float* action, std::size_t action_size) noexcept {
  if (obs_size != static_cast<std::size_t>(impl_->meta.obs_dim) ||
      action_size != static_cast<std::size_t>(impl_->meta.act_dim)) {
    ++impl_->refused;
    if (action_size == static_cast<std::size_t>(impl_->meta.act_dim))
      std::copy(impl_->held.begin(), impl_->held.end(), action);
    return false;
  }
  return act(obs, action);
}

}  // namespace gail_robot
