// What the libtorch-based pieces share: the libtorch thread setup, the width check of a module and the
// probe batch on which a native copy is compared with the module.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>

#include "backend.hpp"
#include "native_mlp.hpp"

namespace gail_robot::detail {

// One intra-op and one inter-op thread (no pool wake-ups on the control thread), set once per process.
// Measured (docs/DESIGN.md §5.1): libtorch's default intra-op pool multiplied a call's p99 by 16-23x.
void single_threaded_libtorch();

// Runs `forward` on a (1, obs_dim) zero observation and checks it returns a (1, act_dim) float32
// tensor; otherwise one-line std::runtime_error naming the mismatch (meta vs module).
void check_module_widths(const PolicyMeta& meta, const std::function<at::Tensor(const at::Tensor&)>& forward);

// A fixed probe batch (64, obs_dim): observations around the normalisation's mean within a few of its
// standard deviations, and rows far outside (to exercise the clips). Deterministic.
at::Tensor probe_batch(const PolicyMeta& meta);

// Tolerance of the probe check on actions (relative beyond magnitude 1): float32 round-off of two
// summation orders is ~1e-7; anything structural (a missed op, a wrong activation) is far above this.
constexpr double kProbeTolerance = 1e-5;

// The largest |native - module| action difference on probe_batch(meta); *scale: the largest |action|
// of the module (at least 1). NaN counts as infinitely different.
double max_probe_difference(NativeMlp& mlp, const std::function<at::Tensor(const at::Tensor&)>& forward,
                            const PolicyMeta& meta, double* scale);

}  // namespace gail_robot::detail
